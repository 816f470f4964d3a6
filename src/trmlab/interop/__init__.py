"""trmlab.interop: official checkpoint layout (key map, safe loading), ``load_checkpoint``, inspect/convert.

Guards every loader calls: :func:`reconcile_architecture` (the checkpoint's architecture wins; conflicts
are errors with the diff table) and :func:`check_puzzle_table` / :func:`fit_puzzle_table` (table rows must
match the dataset's identifiers).

The names below are imported on first use: importing ``trmlab.interop.cli`` (which every ``trmlab`` command
does to build its parser) must not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_puzzle_table", "fit_puzzle_table", "load_checkpoint", "reconcile_architecture"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from trmlab.interop import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'trmlab.interop' has no attribute {name!r}")
