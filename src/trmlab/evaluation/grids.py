"""Grid helpers the ARC scorer needs: crop a token canvas, undo an augmentation, hash a grid.

The definitions live in :mod:`trmlab.data.augment` (one implementation shared by the builder and the scorer,
trm-reference §7.2, §7.3, §8 step 3); this module adds what scoring any square ``seq_len`` needs. Pure
numpy, so ``trmlab score`` never imports torch.
"""

from __future__ import annotations

import numpy as np

from trmlab.data import augment
from trmlab.data.augment import DIHEDRAL_INVERSE, SEPARATOR, dihedral, grid_hash, parse_identifier
from trmlab.data.format import canvas_side

AUGMENTATION_SEPARATOR = SEPARATOR

__all__ = ["AUGMENTATION_SEPARATOR", "DIHEDRAL_INVERSE", "canvas_side", "crop_grid", "dihedral", "grid_hash",
           "inverse_augmentation", "parse_identifier"]


def crop_grid(tokens: np.ndarray) -> np.ndarray:
    """The official crop (largest top-left block of colour tokens, as colours 0..9) on any square canvas."""
    flat = np.asarray(tokens).reshape(-1)
    return augment.crop_grid(flat, canvas=canvas_side(flat.shape[0]))


def inverse_augmentation(grid: np.ndarray, transform: int, mapping: np.ndarray) -> np.ndarray:
    """Undo ``dihedral(mapping[g], transform)``: inverse dihedral first, then the inverse colour map."""
    return augment.inverse_augmentation(grid, transform, mapping)
