"""trmlab.checkpoints."""
