"""Mazes with one shortest start→goal path, written in the Hub format (``trmlab data generate-maze``).

Characters as in ``sapientinc/maze-30x30-hard-1k``: ``#`` wall, space open, ``S`` start, ``G`` goal; the
answer is the question with the cells of the shortest path strictly between S and G written ``o``. Built into
the official layout (tokens 1..5 for ``# SGo``) a side-N set has ``seq_len = N²`` and ``vocab_size = 6``.

How a maze is made: a random spanning tree over the cells at odd coordinates (randomised depth-first search:
long corridors), then ``--loops`` (a fraction of the remaining inner walls between two cells) is opened so
that there are alternative routes. S is an open square drawn at random; G is drawn among the open squares at
least ``--min-path`` steps from S (breadth-first distances) whose shortest path from S is unique (paths
counted by breadth-first search); a draw with no such square starts over. ``rating`` = the shortest path's
length in steps, the maze's hardness.

Symmetry (for train/test disjointness): the 8 dihedral transforms of the question grid.
"""

from __future__ import annotations

import argparse
from collections import deque
from collections.abc import Iterator

import numpy as np

from trmlab.data.build_maze import MAZE_CHARSET
from trmlab.data.generate_csv import (
    Log,
    PuzzleRow,
    add_common_arguments,
    check_counts,
    draw_and_write,
    prepare_output,
)
from trmlab.errors import ConfigError

WALL, OPEN, START, GOAL, PATH = MAZE_CHARSET  # "# SGo", the builder's charset (tokens 1..5)
MAX_ATTEMPTS_PER_MAZE = 200


def carve(side: int, loops: float, rng: np.random.Generator) -> np.ndarray:
    """bool [side, side], True = open: a random spanning tree over the odd cells, then extra openings."""
    open_ = np.zeros((side, side), dtype=bool)
    cells = [(r, c) for r in range(1, side - 1, 2) for c in range(1, side - 1, 2)]
    start = cells[int(rng.integers(len(cells)))]
    open_[start] = True
    stack = [start]
    while stack:
        r, c = stack[-1]
        nexts = [(r + dr, c + dc) for dr, dc in ((-2, 0), (2, 0), (0, -2), (0, 2))
                 if 0 < r + dr < side - 1 and 0 < c + dc < side - 1 and not open_[r + dr, c + dc]]
        if not nexts:
            stack.pop()
            continue
        nr, nc = nexts[int(rng.integers(len(nexts)))]
        open_[(r + nr) // 2, (c + nc) // 2] = True
        open_[nr, nc] = True
        stack.append((nr, nc))
    # Walls between two open cells (odd row, even column or the reverse) that could open a loop.
    walls = [(r, c) for r in range(1, side - 1) for c in range(1, side - 1)
             if not open_[r, c] and (r % 2) != (c % 2)
             and ((r % 2 and open_[r, c - 1] and c + 1 < side - 1 and open_[r, c + 1])
                  or (c % 2 and open_[r - 1, c] and r + 1 < side - 1 and open_[r + 1, c]))]
    for k in rng.permutation(len(walls))[: round(loops * len(walls))].tolist():
        open_[walls[k]] = True
    return open_


def shortest_paths(open_: np.ndarray, source: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Breadth-first distances from ``source`` (−1 = unreachable) and the number of shortest paths (capped
    at 2: only "one" or "more" matters)."""
    side = open_.shape[0]
    dist = np.full(open_.shape, -1, dtype=np.int64)
    ways = np.zeros(open_.shape, dtype=np.int64)
    dist[source], ways[source] = 0, 1
    queue = deque([source])
    while queue:
        r, c = queue.popleft()
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if not (0 <= nr < side and 0 <= nc < side and open_[nr, nc]):
                continue
            if dist[nr, nc] < 0:
                dist[nr, nc] = dist[r, c] + 1
                queue.append((nr, nc))
            if dist[nr, nc] == dist[r, c] + 1:
                ways[nr, nc] = min(2, ways[nr, nc] + ways[r, c])
    return dist, ways


def trace_path(dist: np.ndarray, goal: tuple[int, int]) -> list[tuple[int, int]]:
    """The squares strictly between the source and ``goal`` on the (unique) shortest path."""
    side = dist.shape[0]
    path, (r, c) = [], goal
    while dist[r, c] > 1:
        r, c = next((nr, nc) for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1))
                    if 0 <= nr < side and 0 <= nc < side and dist[nr, nc] == dist[r, c] - 1)
        path.append((r, c))
    return path


def make_maze(side: int, min_path: int, loops: float, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(question, answer) character grids and the path length, or None when this draw has no goal square far
    enough away with a unique shortest path."""
    open_ = carve(side, loops, rng)
    squares = np.argwhere(open_)
    start = tuple(squares[int(rng.integers(len(squares)))].tolist())
    dist, ways = shortest_paths(open_, start)
    goals = np.argwhere((dist >= min_path) & (ways == 1))
    if len(goals) == 0:
        return None
    goal = tuple(goals[int(rng.integers(len(goals)))].tolist())
    question = np.where(open_, OPEN, WALL).astype("<U1")
    question[start], question[goal] = START, GOAL
    answer = question.copy()
    for square in trace_path(dist, goal):
        answer[square] = PATH
    return question, answer, int(dist[goal])


def canonical_key(question: np.ndarray) -> bytes:
    """The same bytes for a maze and each of its 8 dihedral images."""
    images = []
    for k in range(4):
        rotated = np.rot90(question, k)
        images += [rotated, rotated.T]
    return min("".join(image.reshape(-1)).encode() for image in images)


def _candidates(side: int, seed: int, min_path: int, loops: float) -> Iterator[tuple[PuzzleRow, bytes]]:
    rng = np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, side, min_path])))
    label = f"trmlab-maze{side}-minpath{min_path}"
    attempts = 0
    while True:
        attempts += 1
        made = make_maze(side, min_path, loops, rng)
        if made is None:
            if attempts > MAX_ATTEMPTS_PER_MAZE:
                raise ConfigError(f"{MAX_ATTEMPTS_PER_MAZE} generated {side}×{side} mazes in a row had no "
                                  f"goal {min_path} or more steps from the start on a unique shortest path; "
                                  f"lower --min-path or --loops")
            continue
        attempts = 0
        question, answer, length = made
        yield (PuzzleRow(label, "".join(question.reshape(-1)), "".join(answer.reshape(-1)), length),
               canonical_key(question))


def default_min_path(side: int) -> int:
    """``side² / 8`` rounded up: 113 steps for 30×30 (a long route through most of the maze)."""
    return -(-side * side // 8)


def generate_maze(output_dir: str, *, train: int, test: int, seed: int, side: int = 30,
                  min_path: int | None = None, loops: float = 0.03, overwrite: bool = False,
                  log: Log = print) -> dict[str, int]:
    """Generate ``train`` + ``test`` distinct mazes (up to dihedral symmetry); write train.csv / test.csv."""
    check_counts(train, test, seed)
    if not 5 <= side <= 64:
        raise ConfigError(f"--side must be between 5 and 64, got {side}")
    if not 0.0 <= loops <= 1.0:
        raise ConfigError(f"--loops must be between 0 and 1, got {loops}")
    min_path = default_min_path(side) if min_path is None else min_path
    if min_path < 2:
        raise ConfigError(f"--min-path must be at least 2 (S and G apart with a path square), got {min_path}")
    output = prepare_output(output_dir, overwrite)
    return draw_and_write(output, _candidates(side, seed, min_path, loops), train, test,
                          lambda _rows: f"{side}×{side} mazes, path length ≥ {min_path}", log)


# -- CLI ----------------------------------------------------------------------------------------------------
def register_data_command(data_subparsers: argparse._SubParsersAction) -> None:
    """Add ``trmlab data generate-maze``."""
    parser = data_subparsers.add_parser(
        "generate-maze", help="generate mazes with a unique shortest path (Hub CSV format, no download)",
        description="Generate mazes whose start→goal shortest path is unique and write train.csv / test.csv "
        "in the format of the Hub dataset sapientinc/maze-30x30-hard-1k (source,question,answer,rating; "
        "'# SGo' = wall, open, start, goal, path; rating = path length). No maze, nor a rotated or mirrored "
        "copy of one, is in both splits. Build the official layout from them with `trmlab data build-maze "
        "--input-dir DIR` (seq_len = side², vocab_size 6).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_arguments(parser, "mazes")
    parser.add_argument("--side", type=int, default=30, help="grid side (the Hub set: 30)")
    parser.add_argument("--min-path", type=int, default=None,
                        help="shortest S→G path length in steps, at least (default: side²/8 rounded up, 113 "
                        "for side 30)")
    parser.add_argument("--loops", type=float, default=0.03,
                        help="fraction of the inner walls between two corridors opened after carving (0: a "
                        "perfect maze, one path between any two squares)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    generate_maze(args.output_dir, train=args.train, test=args.test, seed=args.seed, side=args.side,
                  min_path=args.min_path, loops=args.loops, overwrite=args.overwrite)
    return 0
