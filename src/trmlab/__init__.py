"""trmlab: train, evaluate and transfer Tiny Recursive Models on ARC-AGI.

Public API (stable; tests and users rely on it):

- :func:`load_checkpoint` — an official ``step_N`` file or a trmlab checkpoint → a ready ``torch.nn.Module``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_checkpoint"]


def load_checkpoint(path: Any, *, seq_len: int | None = None, device: Any = None, dtype: Any = None) -> Any:
    """Load an official or trmlab checkpoint as a model (see :mod:`trmlab.interop.loading`)."""
    from trmlab.interop.loading import load_checkpoint as _load

    return _load(path, seq_len=seq_len, device=device, dtype=dtype)
