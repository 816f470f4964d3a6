"""The Sudoku dataset builder: the official ``build_sudoku_dataset.py`` output byte for byte, other sizes.

Input rows (the Hub's ``sapientinc/sudoku-extreme`` format): ``question`` = n² characters, ``.`` (or ``0``)
for a blank and ``1``..``n`` for a given; ``answer`` = the n² digits of the solution; ``rating`` = an integer
(used by ``min_difficulty``). The side n is inferred from the length: 81 → 9×9 (the official data, 3×3
boxes), 36 → 6×6 (boxes of 2 rows × 3 columns), 16 → 4×4 (2×2 boxes); every row of both files has one size.

Tokens: value + 1 (PAD 0 unused, blank 1, digit d → d + 1), so ``vocab_size`` = n + 2 (11 for 9×9, 8 for
6×6, 6 for 4×4) and ``seq_len`` = n² (81, 36, 16).

Augmentation (train split, ``num_aug`` copies per puzzle after the original), the official draws in order
per copy: ``permutation(arange(1, n + 1))`` for the digits; ``rand() < 0.5`` for a transpose (only when the
boxes are square: a transpose would turn 6×6's 2×3 boxes into 3×2, so 6×6 draws no transpose);
``permutation`` of the bands, then one of the rows inside each band in band order; the same for stacks and
columns. Cell (r, c) of the copy comes from (row_perm[r], col_perm[c]) of the (transposed) original.

dtypes as the official builder writes them: inputs/labels are int64 in a split with augmented copies (the
digit map is int64) and uint8 otherwise (the test split, or ``num_aug`` 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trmlab.data.legacy_rng import LegacyDraws
from trmlab.data.puzzle_csv import (
    INVALID,
    CsvBuildOptions,
    CsvBuildSummary,
    Originals,
    PuzzleFormat,
    build_csv_dataset,
    first_true,
)
from trmlab.errors import ConfigError, DataError

SUDOKU_BOXES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}  # side → (rows, columns) of a box
BLANK_TOKEN = 1


@dataclass
class SudokuBuildOptions(CsvBuildOptions):
    """Options of :func:`build_sudoku` (the official builder's names and defaults)."""

    min_difficulty: int | None = None
    num_aug: int = 0


class SudokuFormat:
    """Validation and tokens of n×n Sudoku rows (n = 4, 6 or 9)."""

    def __init__(self, side: int):
        self.side = side
        self.box_rows, self.box_cols = SUDOKU_BOXES[side]
        self.seq_len = side * side
        self.vocab_size = side + 2
        digits = np.frombuffer("".join(str(d) for d in range(1, side + 1)).encode(), dtype=np.uint8)
        self.answer_lut = np.full(256, INVALID, dtype=np.uint8)
        self.answer_lut[digits] = np.arange(2, side + 2)
        self.question_lut = self.answer_lut.copy()
        self.question_lut[[ord("."), ord("0")]] = BLANK_TOKEN

    @classmethod
    def from_length(cls, length: int, where: str) -> SudokuFormat:
        """The format whose puzzles have ``length`` cells (``where`` names the row, for the error)."""
        sides = {side * side: side for side in SUDOKU_BOXES}
        if length not in sides:
            raise DataError(f"{where}: question has {length} characters; a Sudoku has 16, 36 or 81 cells "
                            f"(4×4, 6×6, 9×9)")
        return cls(sides[length])

    def encode(self, questions: np.ndarray, answers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.question_lut[questions], self.answer_lut[answers]

    def units(self, grids: np.ndarray) -> dict[str, np.ndarray]:
        """Rows, columns and boxes of grids [B, n, n] as [B, n units, n cells] each."""
        n, h, w = self.side, self.box_rows, self.box_cols
        boxes = grids.reshape(-1, n // h, h, n // w, w).transpose(0, 1, 3, 2, 4).reshape(-1, n, n)
        return {"row": grids, "column": grids.transpose(0, 2, 1), "box": boxes}

    def problem(self, questions: np.ndarray, answers: np.ndarray) -> tuple[int, str] | None:
        n = self.side
        given, solved = self.encode(questions, answers)
        bad_question = (given == INVALID).any(axis=1)
        bad_answer = (solved == INVALID).any(axis=1)
        # A unit is complete when the OR of its cells' digit bits has all n bits (n cells: each digit once).
        bits = np.left_shift(np.int32(1), np.where(solved == INVALID, 0, solved.astype(np.int32) - 2))
        full = (1 << n) - 1
        units = self.units(bits.reshape(-1, n, n))
        broken = {kind: np.bitwise_or.reduce(cells, axis=2) != full for kind, cells in units.items()}
        contradicts = ((given != BLANK_TOKEN) & (given != solved)).any(axis=1)
        allowed = f"'.' (or '0') for a blank or a digit 1..{n}"
        return first_true([
            (bad_question, lambda i: self._charset_reason("question", questions[i], given[i], allowed)),
            (bad_answer, lambda i: self._charset_reason("answer", answers[i], solved[i], f"digits 1..{n} "
                                                        f"(an answer fills every cell)")),
            (broken["row"].any(axis=1) | broken["column"].any(axis=1) | broken["box"].any(axis=1),
             lambda i: self._broken_reason(solved[i], broken, i)),
            (contradicts, lambda i: self._contradiction_reason(given[i], solved[i])),
        ])

    @staticmethod
    def _charset_reason(column: str, chars: np.ndarray, tokens: np.ndarray, allowed: str) -> str:
        position = int(np.argmax(tokens == INVALID))
        return f"{column} has {chr(chars[position])!r} at position {position}; allowed: {allowed}"

    def _broken_reason(self, solved: np.ndarray, broken: dict[str, np.ndarray], index: int) -> str:
        kind = next(k for k in ("row", "column", "box") if broken[k][index].any())
        unit = int(np.argmax(broken[kind][index]))
        cells = self.units((solved - 1).reshape(1, self.side, self.side))[kind][0, unit]
        counts = np.bincount(cells, minlength=self.side + 1)
        digit = int(np.argmax(counts[1:] > 1)) + 1
        return (f"answer is not a solved Sudoku: {kind} {unit + 1} has the digit {digit} {counts[digit]} "
                f"times")

    def _contradiction_reason(self, given: np.ndarray, solved: np.ndarray) -> str:
        cell = int(np.argmax((given != BLANK_TOKEN) & (given != solved)))
        row, col = divmod(cell, self.side)
        return (f"answer disagrees with the question at row {row + 1}, column {col + 1} (given "
                f"{given[cell] - 1}, answer {solved[cell] - 1})")


class SudokuShuffles:
    """The official Sudoku augmentation, copy by copy from the legacy stream (see the module docstring)."""

    def __init__(self, puzzle: SudokuFormat, num_aug: int, draws: LegacyDraws):
        self.puzzle, self.draws = puzzle, draws
        self.per_puzzle = 1 + num_aug
        self.dtype = np.dtype(np.int64 if num_aug else np.uint8)
        n, h, w = puzzle.side, puzzle.box_rows, puzzle.box_cols
        self.transposes = h == w
        # One copy's calls: digits, [rand], bands, rows per band, stacks, columns per stack.
        self.program = ((n,) + ((0,) if self.transposes else ()) + (n // h,) + (h,) * (n // h) + (n // w,)
                        + (w,) * (n // w))

    def draw(self, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``count`` copies' draws: digit permutations of 0..n-1 [count, n], transpose flags [count], row and
        column permutations [count, n]."""
        n, h, w = self.puzzle.side, self.puzzle.box_rows, self.puzzle.box_cols
        results = self.draws.sequences(self.program, count)
        digits = results.pop(0)
        transposed = results.pop(0) < 0.5 if self.transposes else np.zeros(count, dtype=bool)
        bands, stacks = results[0], results[1 + n // h]
        # Row r of band k (k-th drawn) is bands[k] * h + (k-th in-band permutation)[r]; columns alike.
        rows = np.concatenate([bands[:, k:k + 1] * h + perm for k, perm in enumerate(results[1:1 + n // h])],
                              axis=1)
        cols = np.concatenate([stacks[:, k:k + 1] * w + perm for k, perm in enumerate(results[2 + n // h:])],
                              axis=1)
        return digits, transposed, rows, cols

    def __call__(self, inputs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = self.puzzle.side
        copies = len(inputs) * self.per_puzzle
        digit_perms = np.tile(np.arange(n), (copies, 1))
        row_perms = digit_perms.copy()
        col_perms = digit_perms.copy()
        transposed = np.zeros(copies, dtype=bool)
        augmented = np.arange(copies) % self.per_puzzle != 0  # copy 0 of each puzzle is the original
        drawn = self.draw(int(augmented.sum()))  # in stream order: puzzle by puzzle, copy by copy
        digit_perms[augmented], transposed[augmented], row_perms[augmented], col_perms[augmented] = drawn
        token_maps = np.empty((copies, n + 2), dtype=np.int64)
        token_maps[:, :2] = [0, BLANK_TOKEN]
        token_maps[:, 2:] = digit_perms + 2  # digit d (token d + 1) → digits[d - 1] + 1
        rows, cols = row_perms[:, :, None], col_perms[:, None, :]
        sources = np.where(transposed[:, None, None], cols * n + rows, rows * n + cols).reshape(copies, -1)

        def apply(tokens: np.ndarray) -> np.ndarray:
            moved = np.take_along_axis(np.repeat(tokens, self.per_puzzle, axis=0), sources, axis=1)
            return np.take_along_axis(token_maps, moved.astype(np.int64), axis=1).astype(self.dtype)

        return apply(inputs), apply(labels)


def build_sudoku(options: SudokuBuildOptions, log: Callable[[str], None] = print) -> CsvBuildSummary:
    """Build a Sudoku dataset from ``train.csv``/``test.csv`` (byte-identical to the official builder)."""
    if options.num_aug < 0:
        raise ConfigError(f"--num-aug {options.num_aug}: must be >= 0")

    def copies(split: str, puzzle: PuzzleFormat, draws: LegacyDraws):
        if split == "train" and options.num_aug > 0:
            return SudokuShuffles(puzzle, options.num_aug, draws)
        return Originals()

    return build_csv_dataset(options, SudokuFormat.from_length, copies, min_rating=options.min_difficulty,
                             log=log)
