"""trmlab.interop: official checkpoint layout (key map, safe loading), ``load_checkpoint``, inspect/convert.

Guards every loader calls: :func:`reconcile_architecture` (the checkpoint's architecture wins; conflicts
are errors with the diff table) and :func:`check_puzzle_table` / :func:`fit_puzzle_table` (table rows must
match the dataset's identifiers).
"""

from trmlab.interop.loading import (
    check_puzzle_table,
    fit_puzzle_table,
    load_checkpoint,
    reconcile_architecture,
)

__all__ = ["check_puzzle_table", "fit_puzzle_table", "load_checkpoint", "reconcile_architecture"]
