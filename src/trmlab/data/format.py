"""The official on-disk dataset format (trm-reference §7.1), shared by every builder and the loader.

One directory per dataset: ``train/`` and ``test/`` each with ``dataset.json`` and the ``all__*.npy`` arrays,
plus ``identifiers.json`` (index = identifier, entry 0 = ``"<blank>"``) and, for ARC, ``test_puzzles.json``.
The encoder layout adds ``all__num_demos.npy`` per split and two extra ``dataset.json`` keys (``layout``,
``max_demos``; after the official ones, so official readers still parse it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from trmlab.errors import DataError, not_utf8, write_failure
from trmlab.staging import make_parents, process_alive, remove_created

SPLITS = ("train", "test")
SET_NAME = "all"
PAD_ID = 0
EOS_ID = 1
COLOR_OFFSET = 2  # colour c is token c + 2
VOCAB_SIZE = 12
IGNORE_LABEL = -100
BLANK_IDENTIFIER = "<blank>"

# name → dtype of every array file (``all__<name>.npy``).
ARRAY_DTYPES: dict[str, np.dtype] = {
    "inputs": np.dtype(np.uint8),
    "labels": np.dtype(np.uint8),
    "puzzle_identifiers": np.dtype(np.int32),
    "puzzle_indices": np.dtype(np.int32),
    "group_indices": np.dtype(np.int32),
}
ENCODER_ARRAY_DTYPES = {**ARRAY_DTYPES, "num_demos": np.dtype(np.int32)}


def canvas_side(seq_len: int, *, user: str = "scoring") -> int:
    """Side C of the square canvas a flattened sequence of ``seq_len`` = C·C tokens encodes (ARC: 900 → 30).

    ``user`` names what needs the canvas, for the error message.
    """
    side = math.isqrt(seq_len)
    if side * side != seq_len:
        raise DataError(f"{user}: sequence length {seq_len} is not a square canvas (ARC grids lie on a C×C "
                        f"canvas, seq_len = C·C); use an ARC dataset")
    return side


def array_path(split_dir: Path, name: str) -> Path:
    return Path(split_dir) / f"{SET_NAME}__{name}.npy"


def dataset_json(*, seq_len: int, num_puzzle_identifiers: int, total_groups: int, total_puzzles: int,
                 total_examples: int, vocab_size: int = VOCAB_SIZE, extra: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """``dataset.json`` content with the official key order (extra keys, e.g. the encoder layout's, last)."""
    meta: dict[str, Any] = {
        "pad_id": PAD_ID,
        "ignore_label_id": PAD_ID,
        "blank_identifier_id": 0,
        "vocab_size": vocab_size,
        "seq_len": seq_len,
        "num_puzzle_identifiers": num_puzzle_identifiers,
        "total_groups": total_groups,
        "mean_puzzle_examples": total_examples / total_puzzles if total_puzzles else 0,
        "total_puzzles": total_puzzles,
        "sets": [SET_NAME],
    }
    meta.update(extra or {})
    return meta


def write_json(path: Path, content: Any) -> None:
    """JSON with the official formatting (default separators, no trailing newline)."""
    with open(path, "w") as f:
        json.dump(content, f)


def read_json(path: Path) -> Any:
    """Parse a UTF-8 JSON file of a dataset; invalid JSON or text is a DataError naming the file."""
    try:
        return json.loads(Path(path).read_bytes())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    except UnicodeDecodeError as error:
        raise DataError(not_utf8(path, error)) from None


@contextlib.contextmanager
def staged_directory(output: Path, label: str) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``output`` to write into; on success rename it into place (replacing
    ``output``), on any failure or interrupt remove it. An OSError (read-only or full disk, a file in the
    way) becomes one :class:`OutputError` naming ``label`` (how the user spelled the output, e.g.
    ``--output-dir data/x``) and the cause."""
    staging: Path | None = None
    created = None
    done = False
    try:
        created = make_parents(output)
        remove_stale_partials(output)
        staging = output.parent / f".{output.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        yield staging
        _move_into_place(staging, output)
        done = True
    except OSError as error:
        raise write_failure(label, error) from error
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if not done:
            remove_created(created)  # not even an empty parent directory this build created


def remove_stale_partials(output: Path) -> list[Path]:
    """Remove the staging directories of ``output`` left by builds whose process is gone (killed with
    SIGKILL, or a machine crash), saying so on stderr; a live build's staging directory is left alone."""
    removed = []
    pattern = re.compile(rf"\.{re.escape(output.name)}\.partial-(\d+)-[0-9a-f]+")
    for child in output.parent.iterdir() if output.parent.is_dir() else []:
        match = pattern.fullmatch(child.name)
        if match and child.is_dir() and not process_alive(int(match.group(1))):
            shutil.rmtree(child, ignore_errors=True)
            print(f"trmlab: removed {child}, the partial output of an earlier build that did not finish "
                  f"(process {match.group(1)} is gone)", file=sys.stderr)
            removed.append(child)
    return removed


def _move_into_place(staging: Path, output: Path) -> None:
    # Checked here, not only before the build: another process may have filled the directory meanwhile.
    if output.exists():
        old = output.parent / f".{output.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(output, old)
        os.rename(staging, output)
        shutil.rmtree(old)
    else:
        os.rename(staging, output)


def read_dataset_json(split_dir: Path) -> dict[str, Any]:
    """Read and sanity-check one split's ``dataset.json``."""
    path = Path(split_dir) / "dataset.json"
    if not path.is_file():
        raise DataError(f"{path}: missing; a dataset split needs dataset.json (build one with "
                        f"`trmlab data build-arc`)")
    meta = read_json(path)
    for key in ("seq_len", "vocab_size", "num_puzzle_identifiers", "total_groups", "total_puzzles", "sets"):
        if key not in meta:
            raise DataError(f"{path}: key '{key}' is missing")
    return meta
