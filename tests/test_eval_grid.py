"""Exact / token accuracy for Sudoku and Maze datasets, symmetry voting, and the evaluator choice."""

from __future__ import annotations

import numpy as np
import pytest

from trmlab.data.build_sudoku import SUDOKU_BOXES
from trmlab.evaluation.grid import (
    accuracies,
    dihedral_symmetries,
    sudoku_symmetries,
    vote,
)


def test_accuracies_follow_the_official_definition():
    labels = np.array([[2, 3, 4, 5], [2, 3, 4, 5], [0, 0, 4, 5], [0, 0, 0, 0]])
    preds = np.array([[2, 3, 4, 5], [2, 3, 9, 5], [7, 7, 4, 5], [1, 1, 1, 1]])
    exact, token = accuracies(preds, labels, ignore=0)
    assert exact.tolist() == [True, False, True, True]  # PAD labels do not count; no labels = exact
    assert token.tolist() == [1.0, 0.75, 1.0, 0.0]


def valid_sudoku(tokens: np.ndarray, side: int) -> bool:
    box_rows, box_cols = SUDOKU_BOXES[side]
    g = tokens.reshape(side, side) - 1
    units = [*g, *g.T] + [g[r:r + box_rows, c:c + box_cols].reshape(-1)
                          for r in range(0, side, box_rows) for c in range(0, side, box_cols)]
    return all(sorted(u.tolist()) == list(range(1, side + 1)) for u in units)


SOLVED_6 = np.array([1, 2, 3, 4, 5, 6, 4, 5, 6, 1, 2, 3, 2, 3, 1, 5, 6, 4,
                     5, 6, 4, 2, 3, 1, 3, 1, 2, 6, 4, 5, 6, 4, 5, 3, 1, 2]) + 1


@pytest.mark.parametrize("side", [6, 9])
def test_sudoku_symmetries_keep_grids_valid_and_invert(side):
    if side == 6:
        grid = SOLVED_6
    else:
        base = np.array([[(3 * (r % 3) + r // 3 + c) % 9 + 1 for c in range(9)] for r in range(9)])
        grid = base.reshape(-1) + 1
    assert valid_sudoku(grid, side)
    symmetries = sudoku_symmetries(side, 6, vocab_size=side + 2)
    assert np.array_equal(symmetries[0].apply(grid[None])[0], grid)  # the identity comes first
    images = {s.apply(grid[None])[0].tobytes() for s in symmetries}
    assert len(images) == 6
    for s in symmetries:
        image = s.apply(grid[None])
        assert valid_sudoku(image[0], side)
        assert np.array_equal(s.invert(image)[0], grid)


def test_dihedral_symmetries_are_the_eight_transforms():
    maze = np.random.default_rng(0).integers(1, 6, (1, 25))
    symmetries = dihedral_symmetries(5, 8, vocab_size=6)
    images = {s.apply(maze)[0].tobytes() for s in symmetries}
    assert len(images) == 8
    square = maze.reshape(5, 5)
    assert np.array_equal(symmetries[1].apply(maze)[0].reshape(5, 5), np.rot90(square, 1))
    for s in symmetries:
        assert np.array_equal(s.invert(s.apply(maze)), maze)


def test_vote_takes_the_most_frequent_grid_then_the_larger_q():
    a, b, c = np.array([1, 1]), np.array([2, 2]), np.array([3, 3])
    candidates = np.array([[a, b, b], [a, b, c], [c, a, b]])
    q = np.array([[5.0, 0.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 0.0]])
    winners = vote(candidates, q)
    assert winners[0].tolist() == [2, 2]   # two votes beat one high-q vote
    assert winners[1].tolist() == [2, 2]   # a three-way tie: the largest q
    assert winners[2].tolist() == [3, 3]   # full tie at equal q: the first seen (the identity copy)
