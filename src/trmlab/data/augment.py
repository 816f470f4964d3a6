"""ARC augmentations and grid helpers (trm-reference §7.2, §7.3, §8 step 3).

An augmentation is a dihedral transform id ``t`` (0..7) and a colour map (10 digits, black fixed): the
colour map is applied first, then the transform. Augmented puzzles are named
``"<task id>|||t<t>|||<10 digits>"``; the original keeps the bare task id. The evaluator uses
:func:`parse_identifier`, :func:`inverse_augmentation`, :func:`crop_grid` and :func:`grid_hash` to map
predictions back to the original task.
"""

from __future__ import annotations

import hashlib

import numpy as np

from trmlab.data.format import COLOR_OFFSET, EOS_ID
from trmlab.errors import DataError

SEPARATOR = "|||"
NUM_DIHEDRAL = 8
# DIHEDRAL_INVERSE[t] undoes transform t (rotations by 90/270 swap, the rest are involutions).
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)
IDENTITY_COLOURS = np.arange(10, dtype=np.uint8)
MAX_GRID = 30


def dihedral(grid: np.ndarray, t: int) -> np.ndarray:
    """Dihedral transform ``t`` of a 2-D grid (numpy conventions; rot90 is counter-clockwise)."""
    if t == 0:
        return grid
    if t in (1, 2, 3):
        return np.rot90(grid, k=t)
    if t == 4:
        return np.fliplr(grid)
    if t == 5:
        return np.flipud(grid)
    if t == 6:
        return grid.T
    if t == 7:
        return np.fliplr(np.rot90(grid, k=1))
    raise ValueError(f"dihedral transform id must be 0..7, got {t}")


def inverse_dihedral(grid: np.ndarray, t: int) -> np.ndarray:
    """Undo :func:`dihedral` ``t``."""
    return dihedral(grid, DIHEDRAL_INVERSE[t])


def apply_augmentation(grid: np.ndarray, t: int, colour_map: np.ndarray) -> np.ndarray:
    """Colour map first, then the dihedral transform (the builder's order). Returns a C-ordered uint8 copy."""
    return np.ascontiguousarray(dihedral(np.asarray(colour_map, dtype=np.uint8)[grid], t))


def inverse_colour_map(colour_map: np.ndarray) -> np.ndarray:
    """The colour map that undoes ``colour_map`` (a permutation of 0..9)."""
    return np.argsort(np.asarray(colour_map)).astype(np.uint8)


def inverse_augmentation(grid: np.ndarray, t: int, colour_map: np.ndarray) -> np.ndarray:
    """Undo :func:`apply_augmentation`: inverse dihedral first, then the inverse colour map."""
    undone = inverse_dihedral(np.asarray(grid, dtype=np.uint8), t)
    return np.ascontiguousarray(inverse_colour_map(colour_map)[undone])


def grid_hash(grid: np.ndarray) -> str:
    """Official grid identity: sha256 of ``bytes([rows, cols])`` + the C-order uint8 cells, as hex."""
    cells = np.ascontiguousarray(grid, dtype=np.uint8)
    if cells.ndim != 2 or cells.shape[0] > 255 or cells.shape[1] > 255:
        raise DataError(f"grid_hash needs a 2-D grid of at most 255x255 cells, got shape {cells.shape}")
    return hashlib.sha256(bytes(cells.shape) + cells.tobytes()).hexdigest()


def puzzle_hash(pairs: list[tuple[np.ndarray, np.ndarray]]) -> str:
    """Official puzzle identity: sha256 of the sorted ``"<input hash>|<output hash>"`` strings joined by "|".

    The builder dedups with an equivalent exact key (``trmlab.data.build_arc`` documents why); this form
    is kept for tests and tools that need the literal official hash.
    """
    hashes = sorted(f"{grid_hash(i)}|{grid_hash(o)}" for i, o in pairs)
    return hashlib.sha256("|".join(hashes).encode()).hexdigest()


def augmentation_name(task_id: str, t: int, colour_map: np.ndarray) -> str:
    """``"<task id>|||t<t>|||<10 digits>"``, the official augmented puzzle name."""
    return f"{task_id}{SEPARATOR}t{t}{SEPARATOR}{''.join(str(int(c)) for c in colour_map)}"


def parse_identifier(name: str) -> tuple[str, int, np.ndarray]:
    """``(task id, dihedral id, colour map uint8[10])`` of a puzzle name; a bare task id is the identity."""
    if SEPARATOR not in name:
        return name, 0, IDENTITY_COLOURS.copy()
    parts = name.split(SEPARATOR)
    digits = parts[2] if len(parts) == 3 else ""
    valid = (len(parts) == 3 and len(parts[1]) == 2 and parts[1][0] == "t" and parts[1][1] in "01234567"
             and len(digits) == 10 and sorted(digits) == list("0123456789") and digits[0] == "0")
    if not valid:
        raise DataError(f"puzzle identifier {name!r} is malformed: expected '<task id>|||t<0-7>|||<a "
                        f"permutation of the 10 digits starting with 0>' (is identifiers.json from an ARC "
                        f"build?)")
    return parts[0], int(parts[1][1]), np.array([int(c) for c in digits], dtype=np.uint8)


def encode_grid(grid: np.ndarray, row: int, col: int, canvas: int = MAX_GRID) -> np.ndarray:
    """A grid laid out on the canvas (trm-reference §7.2): flat uint8 [canvas²], colour + 2, EOS right/below.

    Reference implementation for tests and tools; the builder uses a vectorised equivalent.
    """
    h, w = grid.shape
    if not (row >= 0 and col >= 0 and row + h <= canvas and col + w <= canvas):
        raise ValueError(f"grid {h}x{w} at ({row}, {col}) does not fit a {canvas}x{canvas} canvas")
    out = np.zeros((canvas, canvas), dtype=np.uint8)
    out[row:row + h, col:col + w] = grid.astype(np.uint8) + COLOR_OFFSET
    if row + h < canvas:
        out[row + h, col:col + w] = EOS_ID
    if col + w < canvas:
        out[row:row + h, col + w] = EOS_ID
    return out.reshape(-1)


def crop_grid(tokens: np.ndarray, canvas: int = MAX_GRID) -> np.ndarray:
    """The official crop of a predicted/input canvas (trm-reference §8 step 3) back to a colour grid.

    Rows are walked top-down keeping a running width (narrowed at the first non-colour cell of each row); the
    (rows, width) with the strictly largest area wins (first one on ties). Returns uint8 colours (token − 2).
    """
    grid = np.asarray(tokens).reshape(canvas, canvas)
    is_colour = (grid >= COLOR_OFFSET) & (grid <= COLOR_OFFSET + 9)
    # First non-colour column of each row (canvas when the whole row is colour).
    first_bad = np.where(is_colour.all(axis=1), canvas, np.argmin(is_colour, axis=1))
    width = np.minimum.accumulate(first_bad)
    area = np.arange(1, canvas + 1) * width
    best = int(np.argmax(area))
    rows, cols = (best + 1, int(width[best])) if area[best] > 0 else (0, 0)
    return (grid[:rows, :cols].astype(np.int64) - COLOR_OFFSET).astype(np.uint8)
