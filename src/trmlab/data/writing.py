"""Writing a dataset directory: streamed ``.npy`` files and an all-or-nothing output directory.

Shared by every builder (ARC, Sudoku, Maze): arrays are streamed block by block into files whose bytes equal
``np.save`` of the whole array, and a build writes into a temporary sibling directory that is renamed into
place only when everything succeeded, so a failed build leaves nothing half-written.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from trmlab.errors import DataError


class NpyStreamWriter:
    """Write a ``.npy`` file row block by row block; bytes equal ``np.save`` of the whole array."""

    def __init__(self, path: Path, dtype: np.dtype, shape: tuple[int, ...]):
        self.path, self.dtype, self.shape = path, np.dtype(dtype), shape
        self.rows = 0
        self.file = open(path, "wb")  # noqa: SIM115 (closed by close(), streamed across calls)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self.file, header)

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:]:
            raise RuntimeError(f"{self.path}: block shape {block.shape} does not match {self.shape}")
        self.rows += block.shape[0]
        if block.size:
            self.file.write(memoryview(block).cast("B"))  # no intermediate bytes copy

    def close(self) -> None:
        self.file.close()
        if self.rows != self.shape[0]:
            raise RuntimeError(f"{self.path}: wrote {self.rows} rows, header says {self.shape[0]}")


def check_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse a non-empty existing output directory unless ``overwrite``."""
    if path.exists():
        if not path.is_dir():
            raise DataError(f"--output-dir {path}: exists and is not a directory")
        if any(path.iterdir()) and not overwrite:
            raise DataError(f"--output-dir {path}: exists and is not empty; pass --overwrite to replace it")


@contextmanager
def staged_output(output: Path) -> Iterator[Path]:
    """Yield a new temporary sibling of ``output``: it replaces ``output`` on success, is removed on error."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.parent / f".{output.name}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        yield partial
        move_into_place(partial, output)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def move_into_place(partial: Path, output: Path) -> None:
    """Rename ``partial`` to ``output``, replacing an existing ``output`` directory."""
    # Checked again here: another process may have filled the directory meanwhile.
    if output.exists():
        old = output.parent / f".{output.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(output, old)
        os.rename(partial, output)
        shutil.rmtree(old)
    else:
        os.rename(partial, output)
