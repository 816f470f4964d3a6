"""Sudoku puzzles with a unique solution, written in the Hub format (``trmlab data generate-sudoku``).

Sizes: 9×9 (3×3 boxes, the Sudoku-Extreme format), 6×6 (boxes of 2 rows × 3 columns) and 4×4 (2×2 boxes), the
last two for CPU experiments. Characters as in ``sapientinc/sudoku-extreme``: the question has ``.`` for a
blank and the digits ``1``..``size``; the answer is the full grid of digits. Built into the official layout
(tokens = value + 1: PAD 0, blank 1, digits 2..size+1) a size-N set has ``seq_len = N²`` (16 / 36 / 81) and
``vocab_size = N + 2`` (6 / 8 / 11).

How a puzzle is made: a random complete grid (backtracking with shuffled candidates), then givens are removed
in random order, each removal kept only if the puzzle still has exactly one solution (checked with the exact
solver below: a removed digit d at cell c keeps uniqueness iff no solution has a digit other than d at c),
until the difficulty's number of givens is reached (``hard``: until no given can be removed, a minimal
puzzle). ``rating`` = search effort: the number of branching nodes (cells tried with two or more candidates)
the solver visits to find every solution (0 = solved by forced moves alone), the quantity ``--min-rating``
filters on.

Symmetry (for train/test disjointness): two puzzles are the same up to digit relabelling and the cell
permutations that keep every Sudoku valid. For 4×4 and 6×6 that is the whole group (band/row-in-band and
stack/column-in-stack permutations, and the transpose for square boxes: 128 and 3,456 cell maps); for 9×9 the
8 dihedral transforms (its whole group has 3.4 million cell maps).
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterator
from functools import cache

import numpy as np

from trmlab.data.build_sudoku import SUDOKU_BOXES
from trmlab.data.generate_csv import (
    Log,
    PuzzleRow,
    add_common_arguments,
    check_counts,
    draw_and_write,
    prepare_output,
)
from trmlab.errors import ConfigError

# Givens kept per difficulty, as a fraction of the cells; "hard" removes every removable given (minimal).
DIFFICULTY_GIVENS = {"easy": 0.5, "medium": 0.4, "hard": 0.0}
MAX_ATTEMPTS_PER_PUZZLE = 200


class Geometry:
    """Rows, columns and boxes of a size-N Sudoku as bitmask indices per cell."""

    def __init__(self, size: int) -> None:
        if size not in SUDOKU_BOXES:
            raise ConfigError(f"--size must be one of {sorted(SUDOKU_BOXES)}, got {size}")
        self.size = size
        self.box_rows, self.box_cols = SUDOKU_BOXES[size]
        self.cells = size * size
        self.row = [i // size for i in range(self.cells)]
        self.col = [i % size for i in range(self.cells)]
        self.box = [(r // self.box_rows) * (size // self.box_cols) + c // self.box_cols
                    for r, c in zip(self.row, self.col, strict=True)]
        self.full = (1 << size) - 1


def _candidate_digits(mask: int) -> list[int]:
    return [d + 1 for d in range(mask.bit_length()) if mask >> d & 1]


class Solver:
    """Exact backtracking search (most-constrained cell first) over a grid of 0 (blank) and digits."""

    def __init__(self, geometry: Geometry, grid: list[int], rng: np.random.Generator | None = None) -> None:
        g = self.geometry = geometry
        self.grid = list(grid)
        self.rows, self.cols, self.boxes = [0] * g.size, [0] * g.size, [0] * g.size
        self.consistent = True
        for i, value in enumerate(self.grid):
            if value:
                bit = 1 << (value - 1)
                if (self.rows[g.row[i]] | self.cols[g.col[i]] | self.boxes[g.box[i]]) & bit:
                    self.consistent = False
                self._set(i, value)
        self.empty = [i for i, value in enumerate(self.grid) if not value]
        self.rng = rng
        self.branch_nodes = 0
        self.solutions: list[list[int]] = []
        self.excluded: dict[int, int] = {}  # cell → bitmask of digits it may not take

    def _set(self, i: int, value: int) -> None:
        g, bit = self.geometry, 1 << (value - 1)
        self.grid[i] = value
        self.rows[g.row[i]] |= bit
        self.cols[g.col[i]] |= bit
        self.boxes[g.box[i]] |= bit

    def _clear(self, i: int, value: int) -> None:
        g, bit = self.geometry, ~(1 << (value - 1))
        self.grid[i] = 0
        self.rows[g.row[i]] &= bit
        self.cols[g.col[i]] &= bit
        self.boxes[g.box[i]] &= bit

    def _free(self, i: int) -> int:
        g = self.geometry
        used = self.rows[g.row[i]] | self.cols[g.col[i]] | self.boxes[g.box[i]] | self.excluded.get(i, 0)
        return g.full & ~used

    def solve(self, limit: int) -> int:
        """Search until ``limit`` solutions are found (or none remain); returns how many were found."""
        if self.consistent:
            self._search(len(self.empty), limit)
        return len(self.solutions)

    def _search(self, remaining: int, limit: int) -> None:
        if remaining == 0:
            self.solutions.append(list(self.grid))
            return
        empty = self.empty
        best, best_mask, best_count = -1, 0, 99
        for k in range(remaining):  # the most constrained empty cell
            mask = self._free(empty[k])
            count = mask.bit_count()
            if count < best_count:
                best, best_mask, best_count = k, mask, count
                if count <= 1:
                    break
        if best_count == 0:
            return
        if best_count > 1:
            self.branch_nodes += 1
        cell = empty[best]
        empty[best], empty[remaining - 1] = empty[remaining - 1], empty[best]
        digits = _candidate_digits(best_mask)
        if self.rng is not None:
            self.rng.shuffle(digits)
        for value in digits:
            self._set(cell, value)
            self._search(remaining - 1, limit)
            self._clear(cell, value)
            if len(self.solutions) >= limit:
                break
        empty[best], empty[remaining - 1] = empty[remaining - 1], empty[best]


def count_solutions(size: int, grid: list[int], limit: int = 2) -> int:
    """Number of solutions of ``grid`` (0 = blank), counting stops at ``limit``."""
    return Solver(Geometry(size), grid).solve(limit)


def random_solution(geometry: Geometry, rng: np.random.Generator) -> list[int]:
    solver = Solver(geometry, [0] * geometry.cells, rng)
    solver.solve(limit=1)
    return solver.solutions[0]


def _removal_keeps_unique(geometry: Geometry, grid: list[int], cell: int, value: int) -> bool:
    """True when blanking ``cell`` (holding ``value``) leaves exactly one solution: no solution may put any
    other digit there."""
    trial = list(grid)
    trial[cell] = 0
    solver = Solver(geometry, trial)
    solver.excluded[cell] = 1 << (value - 1)
    return solver.solve(limit=1) == 0


def make_puzzle(geometry: Geometry, rng: np.random.Generator, target_givens: int) -> list[int] | None:
    """A puzzle with a unique solution and ``target_givens`` givens (0: minimal), or None if the removal order
    drawn got stuck above the target."""
    solution = random_solution(geometry, rng)
    grid = list(solution)
    givens = geometry.cells
    for cell in rng.permutation(geometry.cells).tolist():
        if givens <= target_givens:
            break
        if _removal_keeps_unique(geometry, grid, cell, grid[cell]):
            grid[cell] = 0
            givens -= 1
    return grid if givens <= target_givens or target_givens == 0 else None


# -- symmetry -----------------------------------------------------------------------------------------------
def _line_permutations(blocks: int, per_block: int) -> list[tuple[int, ...]]:
    """Every order of the lines (rows or columns) that permutes whole blocks and lines within each block."""
    orders = []
    for block_order in itertools.permutations(range(blocks)):
        for inner in itertools.product(itertools.permutations(range(per_block)), repeat=blocks):
            orders.append(tuple(b * per_block + inner[k][j] for k, b in enumerate(block_order)
                                for j in range(per_block)))
    return orders


@cache
def symmetry_maps(size: int) -> np.ndarray:
    """Cell maps [G, size²] (new cell i takes old cell map[i]) of the group the canonical form uses."""
    g = Geometry(size)
    index = np.arange(g.cells).reshape(size, size)
    if size == 9:  # the dihedral subgroup: the whole group is too large to enumerate per puzzle
        images = []
        for k in range(4):
            rotated = np.rot90(index, k)
            images += [rotated, rotated.T]
        return np.stack([m.reshape(-1) for m in images])
    rows = _line_permutations(size // g.box_rows, g.box_rows)
    cols = _line_permutations(size // g.box_cols, g.box_cols)
    maps = [index[np.ix_(r, c)] for r in rows for c in cols]
    if g.box_rows == g.box_cols:
        maps += [m.T for m in maps]
    return np.stack([m.reshape(-1) for m in maps])


def canonical_key(size: int, question: list[int], answer: list[int]) -> bytes:
    """The same bytes for every copy of (question, answer) under the symmetry group and digit relabelling."""
    maps = symmetry_maps(size)
    a = np.asarray(answer, dtype=np.int64)[maps]  # [G, cells]
    q = np.asarray(question, dtype=np.int64)[maps]
    # Relabel digits by order of first appearance in the mapped answer (reading order).
    first = np.stack([(a == d).argmax(axis=1) for d in range(1, size + 1)], axis=1)  # [G, size]
    rank = np.argsort(np.argsort(first, axis=1), axis=1) + 1  # digit d → rank[d - 1]
    relabel = np.concatenate([np.zeros((len(maps), 1), np.int64), rank], axis=1)  # blank stays 0
    both = np.concatenate([np.take_along_axis(relabel, a, axis=1), np.take_along_axis(relabel, q, axis=1)],
                          axis=1).astype(np.uint8)
    return min(row.tobytes() for row in both)


# -- generation ---------------------------------------------------------------------------------------------
def target_givens(size: int, difficulty: str, givens: int | None) -> int:
    cells = size * size
    if givens is not None:
        if not 0 < givens <= cells:
            raise ConfigError(f"--givens must be between 1 and {cells} for size {size}, got {givens}")
        return givens
    if difficulty not in DIFFICULTY_GIVENS:
        raise ConfigError(f"--difficulty must be one of {sorted(DIFFICULTY_GIVENS)}, got {difficulty!r}")
    return round(DIFFICULTY_GIVENS[difficulty] * cells)


def _candidates(size: int, seed: int, givens: int, min_rating: int, label: str
                ) -> Iterator[tuple[PuzzleRow, bytes]]:
    geometry = Geometry(size)
    rng = np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, size, givens, min_rating])))
    attempts = 0
    while True:
        attempts += 1
        grid = make_puzzle(geometry, rng, givens)
        solver = Solver(geometry, grid) if grid is not None else None
        if solver is None or solver.solve(limit=2) != 1 or solver.branch_nodes < min_rating:
            if attempts > MAX_ATTEMPTS_PER_PUZZLE:
                raise ConfigError(f"{MAX_ATTEMPTS_PER_PUZZLE} generated {size}×{size} puzzles in a row "
                                  f"missed the target ({givens} givens, rating ≥ {min_rating}); ask for more "
                                  f"givens or a lower --min-rating")
            continue
        attempts = 0
        answer = solver.solutions[0]
        row = PuzzleRow(label, "".join(str(v) if v else "." for v in grid), "".join(map(str, answer)),
                        solver.branch_nodes)
        yield row, canonical_key(size, grid, answer)


def generate_sudoku(output_dir: str, *, train: int, test: int, seed: int, size: int = 9,
                    difficulty: str = "hard", givens: int | None = None, min_rating: int = 0,
                    overwrite: bool = False, log: Log = print) -> dict[str, int]:
    """Generate ``train`` + ``test`` distinct puzzles (up to symmetry); write ``train.csv`` / ``test.csv``."""
    check_counts(train, test, seed)
    Geometry(size)  # validates the size
    target = target_givens(size, difficulty, givens)
    if min_rating < 0:
        raise ConfigError(f"--min-rating must be ≥ 0, got {min_rating}")
    output = prepare_output(output_dir, overwrite)
    label = f"trmlab-sudoku{size}-" + (f"givens{givens}" if givens is not None else difficulty)

    def describe(rows: list[PuzzleRow]) -> str:
        mean_givens = np.mean([sum(ch != "." for ch in r.question) for r in rows])
        return f"{size}×{size} Sudoku, mean {mean_givens:.1f} givens"

    candidates = _candidates(size, seed, target, min_rating, label)
    return draw_and_write(output, candidates, train, test, describe, log)


# -- CLI ----------------------------------------------------------------------------------------------------
def register_data_command(data_subparsers: argparse._SubParsersAction) -> None:
    """Add ``trmlab data generate-sudoku``."""
    parser = data_subparsers.add_parser(
        "generate-sudoku", help="generate Sudoku puzzles with unique solutions (Hub CSV format, no download)",
        description="Generate Sudoku puzzles, each with exactly one solution, and write train.csv / test.csv "
        "in the format of the Hub dataset sapientinc/sudoku-extreme (source,question,answer,rating; '.' = "
        "blank). No puzzle, nor a digit-relabelled or symmetric copy of one, is in both splits. Build the "
        "official layout from them with `trmlab data build-sudoku --input-dir DIR`. --size 4/6 (boxes 2×2 / "
        "2×3) gives seq_len 16/36 and vocab_size 6/8 instead of 81 and 11.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_arguments(parser, "puzzles")
    parser.add_argument("--size", type=int, default=9, choices=sorted(SUDOKU_BOXES), help="grid side")
    parser.add_argument("--difficulty", default="hard", choices=sorted(DIFFICULTY_GIVENS),
                        help="easy: 50%% of the cells given, medium: 40%%, hard: minimal puzzles (no given "
                        "can be removed)")
    parser.add_argument("--givens", type=int, default=None, help="exact number of givens (overrides "
                        "--difficulty)")
    parser.add_argument("--min-rating", type=int, default=0,
                        help="keep only puzzles whose search effort (rating) is at least this")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    generate_sudoku(args.output_dir, train=args.train, test=args.test, seed=args.seed, size=args.size,
                    difficulty=args.difficulty, givens=args.givens, min_rating=args.min_rating,
                    overwrite=args.overwrite)
    return 0
