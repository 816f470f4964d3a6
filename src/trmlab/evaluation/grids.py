"""Grid helpers the ARC scorer needs: crop a token canvas, undo an augmentation, hash a grid.

These follow trm-reference §7.2, §7.3 (hashes, dihedral ids, inverse order) and §8 step 3 (the crop rule).
They are pure numpy so ``trmlab score`` never imports torch.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from trmlab.errors import DataError

# Token t in 2..11 is colour t - 2; 0 is PAD and 1 is EOS (trm-reference §7.2).
FIRST_COLOUR_TOKEN = 2
LAST_COLOUR_TOKEN = 11
# Inverse of each dihedral id (0 identity, 1-3 rot90 k times, 4 lr, 5 ud, 6 transpose, 7 anti-transpose).
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)
AUGMENTATION_SEPARATOR = "|||"


def canvas_side(seq_len: int) -> int:
    """Side of the square canvas a flattened sequence of ``seq_len`` tokens encodes."""
    side = math.isqrt(seq_len)
    if side * side != seq_len:
        raise DataError(f"sequence length {seq_len} is not a square canvas (ARC grids are side × side); "
                        f"score only ARC datasets")
    return side


def grid_hash(grid: np.ndarray) -> str:
    """sha256 of ``bytes([rows, cols])`` + the C-order uint8 cells: the official grid identity."""
    cells = np.ascontiguousarray(grid, dtype=np.uint8)
    rows, cols = cells.shape
    return hashlib.sha256(bytes([rows, cols]) + cells.tobytes()).hexdigest()


def crop_grid(tokens: np.ndarray) -> np.ndarray:
    """The official crop: the largest top-left block of colour tokens, as colours 0..9.

    Walk rows keeping a running width (narrowed at the first non-colour cell of each row); keep the
    (rows, width) with the strictly largest area. Only correct for grids placed at (0, 0), which is how
    every test example is stored.
    """
    flat = np.asarray(tokens).reshape(-1)
    side = canvas_side(flat.shape[0])
    canvas = flat.reshape(side, side)
    is_colour = (canvas >= FIRST_COLOUR_TOKEN) & (canvas <= LAST_COLOUR_TOKEN)
    best_area, best = 0, (0, 0)
    width = side
    for rows in range(1, side + 1):
        row_ok = is_colour[rows - 1, :width]
        if not row_ok.all():
            width = int(np.argmin(row_ok))  # first non-colour column (0-based) = new width
        area = rows * width
        if area > best_area:
            best_area, best = area, (rows, width)
    return (canvas[: best[0], : best[1]].astype(np.int64) - FIRST_COLOUR_TOKEN).astype(np.uint8)


def dihedral(grid: np.ndarray, transform: int) -> np.ndarray:
    """Apply dihedral transform ``transform`` (0..7, official numbering) to a 2-D grid."""
    if transform == 0:
        return grid
    if transform in (1, 2, 3):
        return np.rot90(grid, k=transform)
    if transform == 4:
        return np.fliplr(grid)
    if transform == 5:
        return np.flipud(grid)
    if transform == 6:
        return grid.T
    if transform == 7:
        return np.fliplr(np.rot90(grid, k=1))
    raise ValueError(f"dihedral transform id must be 0..7, got {transform}")


def parse_identifier(name: str) -> tuple[str, int, np.ndarray]:
    """``"<task>|||t<k>|||<10 digits>"`` → (task id, transform, colour mapping); a bare name = identity."""
    if AUGMENTATION_SEPARATOR not in name:
        return name, 0, np.arange(10, dtype=np.uint8)
    parts = name.split(AUGMENTATION_SEPARATOR)
    if (len(parts) != 3 or not parts[1].startswith("t") or not parts[1][1:].isdigit()
            or len(parts[2]) != 10 or sorted(parts[2]) != list("0123456789")):
        raise DataError(f"puzzle identifier '{name}' is not '<task>|||t<k>|||<permutation of 0-9>'; "
                        f"the dataset's identifiers.json is corrupt or not an ARC dataset")
    transform = int(parts[1][1:])
    if not 0 <= transform <= 7:
        raise DataError(f"puzzle identifier '{name}': transform t{transform} is not in t0..t7")
    mapping = np.array([int(c) for c in parts[2]], dtype=np.uint8)
    return parts[0], transform, mapping


def inverse_augmentation(grid: np.ndarray, transform: int, mapping: np.ndarray) -> np.ndarray:
    """Undo ``dihedral(mapping[g], transform)``: inverse dihedral first, then the inverse colour map."""
    inverse_colours = np.argsort(mapping).astype(np.uint8)
    return np.ascontiguousarray(inverse_colours[dihedral(grid, DIHEDRAL_INVERSE[transform])])
