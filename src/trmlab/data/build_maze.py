"""The Maze dataset builder: the official ``build_maze_dataset.py`` output, byte for byte, any square side.

Input rows (the Hub's ``sapientinc/maze-30x30-hard-1k`` format): ``question`` and ``answer`` = side²
characters from ``# SGo`` (wall, open, start, goal, path), row-major; the side is inferred from the length
(900 → 30×30, the official data; any square works, e.g. 225 → 15×15). The question has one ``S``, one
``G`` and no ``o``; the answer is the question with open cells on the S→G path marked ``o``.

Tokens: charset position + 1 (PAD 0, ``#`` 1, space 2, ``S`` 3, ``G`` 4, ``o`` 5), so ``vocab_size`` is 6 at
every side and ``seq_len`` = side² (900 for 30×30). inputs/labels are uint8, as the official builder writes.

Augmentation (``aug``, train split only, as the official ``--aug``): the 8 dihedral transforms of every maze
(identity first, trmlab.data.augment.dihedral's ids), no random draws; only ``subsample_size`` draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trmlab.data.augment import NUM_DIHEDRAL, dihedral
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
from trmlab.errors import DataError

MAZE_CHARSET = "# SGo"
WALL, OPEN, START, GOAL, PATH = range(1, 6)
FLOOD_BATCH = 4096  # mazes flood-filled at a time (bounds the boolean work arrays)


@dataclass
class MazeBuildOptions(CsvBuildOptions):
    """Options of :func:`build_maze` (the official builder's names and defaults)."""

    aug: bool = False


class MazeFormat:
    """Validation and tokens of side×side maze rows."""

    def __init__(self, side: int):
        self.side = side
        self.seq_len = side * side
        self.vocab_size = len(MAZE_CHARSET) + 1
        self.lut = np.full(256, INVALID, dtype=np.uint8)
        self.lut[np.frombuffer(MAZE_CHARSET.encode(), dtype=np.uint8)] = np.arange(1, len(MAZE_CHARSET) + 1)

    @classmethod
    def from_length(cls, length: int, where: str) -> MazeFormat:
        """The format whose mazes have ``length`` cells (``where`` names the row, for the error)."""
        side = math.isqrt(length)
        if side < 2 or side * side != length:
            raise DataError(f"{where}: question has {length} characters; a maze is a square of side² cells "
                            f"(900 for 30×30)")
        return cls(side)

    def encode(self, questions: np.ndarray, answers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.lut[questions], self.lut[answers]

    def problem(self, questions: np.ndarray, answers: np.ndarray) -> tuple[int, str] | None:
        maze, solved = self.encode(questions, answers)
        bad_chars = [(maze == INVALID).any(axis=1), (solved == INVALID).any(axis=1)]
        starts, goals = (maze == START).sum(axis=1), (maze == GOAL).sum(axis=1)
        bad_ends = (starts != 1) | (goals != 1) | (maze == PATH).any(axis=1)
        # The answer may only mark open cells as path.
        changed = (solved != maze) & ~((maze == OPEN) & (solved == PATH))
        on_path = (solved == START) | (solved == GOAL) | (solved == PATH)
        checkable = ~(bad_chars[0] | bad_chars[1] | bad_ends | changed.any(axis=1))  # exactly one S and G
        connected = np.ones(len(maze), dtype=bool)
        connected[checkable] = self._connected(on_path[checkable], solved[checkable])
        return first_true([
            (bad_chars[0], lambda i: self._charset_reason("question", questions[i], maze[i])),
            (bad_chars[1], lambda i: self._charset_reason("answer", answers[i], solved[i])),
            (bad_ends, lambda i: f"question has {starts[i]} 'S', {goals[i]} 'G' and "
                                 f"{int((maze[i] == PATH).sum())} 'o'; a maze has one S, one G and no path"),
            (changed.any(axis=1), lambda i: self._changed_reason(maze[i], solved[i], changed[i])),
            (~connected, lambda i: self._unreached_reason(solved[i], self._unreached(
                on_path[i:i + 1], solved[i:i + 1] == START)[0])),
        ])

    def _cell(self, index: int) -> str:
        row, col = divmod(index, self.side)
        return f"row {row + 1}, column {col + 1}"

    def _charset_reason(self, column: str, chars: np.ndarray, tokens: np.ndarray) -> str:
        position = int(np.argmax(tokens == INVALID))
        return f"{column} has {chr(chars[position])!r} at {self._cell(position)}; allowed: {MAZE_CHARSET!r}"

    def _changed_reason(self, maze: np.ndarray, solved: np.ndarray, changed: np.ndarray) -> str:
        cell = int(np.argmax(changed))
        return (f"answer has {MAZE_CHARSET[solved[cell] - 1]!r} at {self._cell(cell)} where the question has "
                f"{MAZE_CHARSET[maze[cell] - 1]!r} (an answer only marks open cells 'o')")

    def _unreached_reason(self, solved: np.ndarray, unreached: np.ndarray) -> str:
        if unreached[solved == GOAL].any():
            return "answer's path does not connect S to G (no chain of adjacent 'o' cells)"
        return f"answer's path is not connected: {self._cell(int(np.argmax(unreached)))} is off the S→G path"

    def _connected(self, on_path: np.ndarray, solved: np.ndarray) -> np.ndarray:
        """Per maze [B]: do the path cells (S, G, o) form one 4-connected set (S and G included)?

        The usual answer is a simple chain (S and G touch one path cell, every 'o' two; true of any shortest
        path): such chains are walked from S, one step for all of them at once, and connected means the walk
        reached G through every path cell. Other mazes are flood-filled (slower: one step per path cell, over
        every cell).
        """
        side = self.side
        grid = on_path.reshape(-1, side, side).astype(np.int8)
        degree = np.zeros_like(grid)
        degree[:, 1:] += grid[:, :-1]
        degree[:, :-1] += grid[:, 1:]
        degree[:, :, 1:] += grid[:, :, :-1]
        degree[:, :, :-1] += grid[:, :, 1:]
        ends = (solved == START) | (solved == GOAL)
        chain = (~on_path | (degree.reshape(len(on_path), -1) == np.where(ends, 1, 2))).all(axis=1)
        connected = np.empty(len(on_path), dtype=bool)
        walked = np.flatnonzero(chain)
        connected[walked] = self._walk_length(on_path[walked], solved[walked]) == on_path[walked].sum(axis=1)
        rest = np.flatnonzero(~chain)
        connected[rest] = ~self._unreached(on_path[rest], solved[rest] == START).any(axis=1)
        return connected

    def _walk_length(self, on_path: np.ndarray, solved: np.ndarray) -> np.ndarray:
        """Cells walked from S to G along chains (each step goes to the path neighbour not just left)."""
        cells = self.seq_len
        if not hasattr(self, "_neighbours"):  # [cells + 1, 4]; index `cells` = outside the grid
            row, col = np.divmod(np.arange(cells), self.side)
            steps = [(row > 0, -self.side), (row < self.side - 1, self.side), (col > 0, -1),
                     (col < self.side - 1, 1)]
            table = np.stack([np.where(inside, np.arange(cells) + step, cells) for inside, step in steps], 1)
            self._neighbours = np.vstack([table, np.full((1, 4), cells)])
        padded = np.hstack([on_path, np.zeros((len(on_path), 1), dtype=bool)])
        current = np.argmax(solved == START, axis=1)
        goal = np.argmax(solved == GOAL, axis=1)
        previous = np.full(len(on_path), cells)
        length = np.ones(len(on_path), dtype=np.int64)
        active = np.flatnonzero(current != goal)
        for _ in range(cells):  # a chain has at most `cells` cells
            if not len(active):
                break
            around = self._neighbours[current[active]]
            onward = padded[active[:, None], around] & (around != previous[active, None])
            previous[active] = current[active]
            current[active] = around[np.arange(len(active)), np.argmax(onward, axis=1)]
            length[active] += 1
            active = active[current[active] != goal[active]]
        length[active] = 0  # never reached G (impossible for a chain; kept as "not connected")
        return length

    def _unreached(self, on_path: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Path cells (S, G, o) not 4-connected to S through path cells, per maze [B, L]."""
        side = self.side
        unreached = np.zeros_like(on_path)
        for begin in range(0, len(on_path), FLOOD_BATCH):
            path = on_path[begin:begin + FLOOD_BATCH].reshape(-1, side, side)
            reached = start[begin:begin + FLOOD_BATCH].reshape(-1, side, side) & path
            while True:  # grow the reached set by one step along the path until it stops growing
                grown = reached.copy()
                grown[:, 1:] |= reached[:, :-1]
                grown[:, :-1] |= reached[:, 1:]
                grown[:, :, 1:] |= reached[:, :, :-1]
                grown[:, :, :-1] |= reached[:, :, 1:]
                grown &= path
                if np.array_equal(grown, reached):
                    break
                reached = grown
            unreached[begin:begin + FLOOD_BATCH] = (path & ~reached).reshape(len(path), -1)
        return unreached


class DihedralCopies:
    """The 8 dihedral transforms of each maze (identity first), the official ``--aug``."""

    per_puzzle = NUM_DIHEDRAL
    dtype = np.dtype(np.uint8)

    def __init__(self, side: int):
        cells = np.arange(side * side).reshape(side, side)
        self.sources = np.stack([dihedral(cells, t).ravel() for t in range(NUM_DIHEDRAL)])  # [8, L]

    def __call__(self, inputs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (inputs[:, self.sources].reshape(-1, inputs.shape[1]),
                labels[:, self.sources].reshape(-1, labels.shape[1]))


def build_maze(options: MazeBuildOptions, log: Callable[[str], None] = print) -> CsvBuildSummary:
    """Build a Maze dataset from ``train.csv``/``test.csv`` (byte-identical to the official builder)."""

    def copies(split: str, puzzle: PuzzleFormat, _draws: LegacyDraws):
        return DihedralCopies(puzzle.side) if split == "train" and options.aug else Originals()

    return build_csv_dataset(options, MazeFormat.from_length, copies, log=log)
