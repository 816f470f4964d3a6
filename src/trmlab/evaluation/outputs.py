"""Evaluation files on disk: ``raw_predictions.npz`` and the atomically written output directory.

``raw_predictions.npz`` (the official-eval fixture's format, any seq_len): ``inputs`` uint8 [N, S],
``puzzle_identifiers`` int32 [N], ``preds`` uint8 [N, S] (token ids 0..11), ``q_halt_logits`` float32 [N];
one row per evaluated test example in dataset file order, blank padding rows removed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trmlab.errors import DataError, write_failure

RAW_KEYS = ("inputs", "puzzle_identifiers", "preds", "q_halt_logits")


@dataclass
class RawPredictions:
    """Final-step outputs of an evaluation, one row per test example."""

    inputs: np.ndarray
    puzzle_identifiers: np.ndarray
    preds: np.ndarray
    q_halt_logits: np.ndarray

    def __len__(self) -> int:
        return len(self.puzzle_identifiers)

    def select(self, mask: np.ndarray) -> RawPredictions:
        return RawPredictions(self.inputs[mask], self.puzzle_identifiers[mask], self.preds[mask],
                              self.q_halt_logits[mask])

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, inputs=self.inputs.astype(np.uint8),
                            puzzle_identifiers=self.puzzle_identifiers.astype(np.int32),
                            preds=self.preds.astype(np.uint8),
                            q_halt_logits=self.q_halt_logits.astype(np.float32))
        return buffer.getvalue()


def load_raw_predictions(path: str | Path) -> RawPredictions:
    """Read and check a ``raw_predictions.npz`` (no pickles)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: raw predictions file not found (written by `trmlab eval`)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in RAW_KEYS if k not in data.files]
            if missing:
                raise DataError(f"{path}: missing arrays {missing}; expected {list(RAW_KEYS)}")
            arrays = {k: data[k] for k in RAW_KEYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:  # truncated or not a zip at all
        raise DataError(f"{path}: not a readable .npz ({error or type(error).__name__}); write it again "
                        f"with `trmlab eval`") from None
    raw = RawPredictions(**arrays)
    n = len(raw.puzzle_identifiers)
    if raw.inputs.ndim != 2 or raw.preds.shape != raw.inputs.shape or len(raw.inputs) != n:
        raise DataError(f"{path}: inputs {raw.inputs.shape} and preds {raw.preds.shape} must both be "
                        f"[N, seq_len] with N = len(puzzle_identifiers) = {n}")
    if raw.q_halt_logits.shape != (n,) or raw.puzzle_identifiers.ndim != 1:
        raise DataError(f"{path}: q_halt_logits {raw.q_halt_logits.shape} and puzzle_identifiers "
                        f"{raw.puzzle_identifiers.shape} must be [N] with N = {n}")
    for key in ("inputs", "preds", "puzzle_identifiers"):
        if not np.issubdtype(getattr(raw, key).dtype, np.integer):
            raise DataError(f"{path}: '{key}' must hold integers, got {getattr(raw, key).dtype}")
    if n and (raw.preds.min() < 0 or raw.preds.max() > 255 or raw.inputs.min() < 0 or raw.inputs.max() > 255):
        raise DataError(f"{path}: 'inputs'/'preds' hold values outside 0..255 (token ids are 0..11)")
    if not np.isfinite(raw.q_halt_logits).all():
        raise DataError(f"{path}: 'q_halt_logits' holds NaN or inf")
    return raw


def json_bytes(content: Any, indent: int | None = None) -> bytes:
    """JSON with the official formatting (default separators); ``indent=1`` as the official metrics.json."""
    return json.dumps(content, indent=indent).encode()


def write_output_dir(out_dir: str | Path, files: dict[str, bytes], *, replace: bool = False) -> Path:
    """Write ``files`` into a temporary sibling of ``out_dir``, then rename it into place.

    ``out_dir`` must not exist yet (or be an empty directory): results are never mixed with older ones.
    With ``replace`` an existing directory is swapped out whole once the new one is complete (training
    re-evaluates a step whose earlier evaluation a kill left behind).
    """
    out = Path(out_dir)
    if out.exists() and not replace and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists and is not empty; pass another out=DIR or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; give the result normal permissions
    try:
        for name, content in files.items():
            (staging / name).write_bytes(content)
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        elif out.exists():  # replace: move the old one aside, put the new one in place, then delete
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
        os.replace(staging, out)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):  # a full or read-only disk: one line naming the output directory
            raise write_failure(str(out), error) from error
        raise
    return out


def default_out_dir(beside: Path, stem: str) -> Path:
    """``beside/<stem>``, or ``<stem>-2``, ``-3`` ... when taken, so defaults never overwrite."""
    candidate, n = beside / stem, 1
    while candidate.exists():
        n += 1
        candidate = beside / f"{stem}-{n}"
    return candidate
