"""trmlab.checkpoints: the trmlab checkpoint bundle (atomic directory, manifest with checksums, verify)."""

from trmlab.checkpoints.bundle import (
    CheckpointBundle,
    is_trmlab_checkpoint,
    read_checkpoint,
    save_model_checkpoint,
    write_checkpoint,
)

__all__ = ["CheckpointBundle", "is_trmlab_checkpoint", "read_checkpoint", "save_model_checkpoint",
           "write_checkpoint"]
