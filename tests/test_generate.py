"""`trmlab data generate-sudoku` / `generate-maze`: unique solutions, the Hub CSV format, disjoint splits."""

from __future__ import annotations

import itertools
from collections import deque

import numpy as np
import pytest

from trmlab.cli import main
from trmlab.data.build_sudoku import SUDOKU_BOXES
from trmlab.data.generate_csv import read_csv_rows
from trmlab.data.generate_maze import generate_maze
from trmlab.data.generate_sudoku import (
    canonical_key,
    count_solutions,
    generate_sudoku,
    symmetry_maps,
)
from trmlab.data.puzzle_csv import HEADER
from trmlab.errors import ConfigError, DataError


def digits(text: str) -> list[int]:
    return [0 if ch == "." else int(ch) for ch in text]


def is_valid_solution(size: int, grid: list[int]) -> bool:
    box_rows, box_cols = SUDOKU_BOXES[size]
    g = np.asarray(grid).reshape(size, size)
    units = [g[r] for r in range(size)] + [g[:, c] for c in range(size)] + [
        g[r:r + box_rows, c:c + box_cols].reshape(-1)
        for r in range(0, size, box_rows) for c in range(0, size, box_cols)]
    return all(sorted(unit.tolist()) == list(range(1, size + 1)) for unit in units)


def naive_solutions(size: int, grid: list[int], limit: int = 2) -> int:
    """Plain backtracking in reading order (independent of the generator's search)."""
    grid = list(grid)
    box_rows, box_cols = SUDOKU_BOXES[size]

    def ok(i: int, v: int) -> bool:
        r, c = divmod(i, size)
        r0, c0 = r - r % box_rows, c - c % box_cols
        return all(grid[r * size + k] != v and grid[k * size + c] != v for k in range(size)) and all(
            grid[(r0 + a) * size + c0 + b] != v for a in range(box_rows) for b in range(box_cols))

    def search(i: int) -> int:
        while i < size * size and grid[i]:
            i += 1
        if i == size * size:
            return 1
        found = 0
        for v in range(1, size + 1):
            if ok(i, v):
                grid[i] = v
                found += search(i + 1)
                grid[i] = 0
                if found >= limit:
                    break
        return found

    return search(0)


@pytest.mark.parametrize("size", [4, 6, 9])
def test_sudoku_puzzles_have_one_solution_and_the_hub_format(tmp_path, size):
    out = tmp_path / "s"
    difficulty = "medium" if size == 9 else "hard"  # 9×9 minimal puzzles take the naive check seconds
    generate_sudoku(str(out), train=6, test=3, seed=1, size=size, difficulty=difficulty, log=lambda _m: None)
    raw = (out / "train.csv").read_bytes()
    assert raw.startswith(b"source,question,answer,rating\r\n") and raw.endswith(b"\r\n")
    for split in ("train", "test"):
        for row in read_csv_rows(out / f"{split}.csv"):
            assert len(row.question) == len(row.answer) == size * size
            assert set(row.question) <= set("." + "".join(str(d) for d in range(1, size + 1)))
            question, answer = digits(row.question), digits(row.answer)
            assert is_valid_solution(size, answer)
            assert all(q in (0, a) for q, a in zip(question, answer, strict=True))
            assert naive_solutions(size, question) == 1
            assert row.rating >= 0
    rows = read_csv_rows(out / "train.csv")
    target = round(0.4 * size * size)
    if size == 9:
        assert all(row.question.count(".") == size * size - target for row in rows)


def test_solver_counts_more_than_one_solution():
    assert count_solutions(4, [0] * 16) == 2
    assert count_solutions(4, [1, 1] + [0] * 14) == 0  # two 1s in a row: no solution
    solved = [1, 2, 3, 4, 3, 4, 1, 2, 2, 1, 4, 3, 4, 3, 2, 1]
    assert count_solutions(4, solved) == 1
    two_ways = list(solved)  # blanking a 2×2 rectangle of two digits leaves two fillings
    for i in (0, 1, 8, 9):
        two_ways[i] = 0
    assert naive_solutions(4, two_ways) == 2 and count_solutions(4, two_ways) == 2


def test_hard_puzzles_are_minimal_and_difficulty_changes_givens(tmp_path):
    for name, difficulty in (("h", "hard"), ("e", "easy")):
        generate_sudoku(str(tmp_path / name), train=5, test=1, seed=2, size=6, difficulty=difficulty,
                        log=lambda _m: None)
    for row in read_csv_rows(tmp_path / "h" / "train.csv"):
        question = digits(row.question)
        for i, v in enumerate(question):  # no given can go: each removal makes it ambiguous
            if v:
                assert naive_solutions(6, [*question[:i], 0, *question[i + 1:]]) >= 2
    assert {36 - r.question.count(".") for r in read_csv_rows(tmp_path / "e" / "train.csv")} == {18}


def group_closure(size: int) -> set[tuple[int, ...]]:
    """The validity-preserving cell maps of a small Sudoku, built by closing a few generators (independent of
    the generator's enumeration)."""
    box_rows, box_cols = SUDOKU_BOXES[size]
    index = np.arange(size * size).reshape(size, size)
    gens = []
    for start, width, axis in ((0, box_rows, 0), (0, box_cols, 1)):  # swap neighbouring lines in a block
        for first in range(start, size, width):
            for j in range(first, first + width - 1):
                perm = list(range(size))
                perm[j], perm[j + 1] = perm[j + 1], perm[j]
                gens.append(index[perm] if axis == 0 else index[:, perm])
    gens.append(index[list(range(box_rows, 2 * box_rows)) + list(range(box_rows)) +
                      list(range(2 * box_rows, size))])  # swap the first two bands
    gens.append(index[:, list(range(box_cols, 2 * box_cols)) + list(range(box_cols)) +
                      list(range(2 * box_cols, size))])
    if size == 6:  # 3 bands: a band rotation too
        gens.append(index[[2, 3, 4, 5, 0, 1]])
    if box_rows == box_cols:
        gens.append(index.T)
    gens = [g.reshape(-1) for g in gens]
    seen = {tuple(range(size * size))}
    frontier = deque(seen)
    while frontier:
        m = np.array(frontier.popleft())
        for g in gens:
            image = tuple(m[g].tolist())
            if image not in seen:
                seen.add(image)
                frontier.append(image)
    return seen


@pytest.mark.parametrize("size,order", [(4, 128), (6, 3456)])
def test_symmetry_group_is_the_whole_group(size, order):
    closure = group_closure(size)
    assert len(closure) == order
    assert {tuple(m) for m in symmetry_maps(size).tolist()} == closure


def random_copy(size: int, question: list[int], answer: list[int], rng: np.random.Generator):
    maps = symmetry_maps(size)
    m = maps[rng.integers(len(maps))]
    relabel = np.concatenate([[0], rng.permutation(size) + 1])
    return relabel[np.asarray(question)[m]].tolist(), relabel[np.asarray(answer)[m]].tolist()


def test_canonical_key_is_invariant_and_separates(tmp_path):
    generate_sudoku(str(tmp_path / "s"), train=4, test=1, seed=3, size=9, difficulty="medium",
                    log=lambda _m: None)
    rows = read_csv_rows(tmp_path / "s" / "train.csv")
    rng = np.random.default_rng(0)
    keys = set()
    for row in rows:
        q, a = digits(row.question), digits(row.answer)
        key = canonical_key(9, q, a)
        for _ in range(3):
            cq, ca = random_copy(9, q, a, rng)
            assert is_valid_solution(9, ca)
            assert canonical_key(9, cq, ca) == key
        keys.add(key)
    assert len(keys) == len(rows)


def test_sudoku_splits_are_disjoint_up_to_symmetry(tmp_path):
    # 4×4 minimal puzzles are few: duplicates are drawn and must be kept out of the other split.
    summary = generate_sudoku(str(tmp_path / "s"), train=40, test=20, seed=0, size=4, difficulty="medium",
                              log=lambda _m: None)
    assert summary["duplicates"] > 0
    train = read_csv_rows(tmp_path / "s" / "train.csv")
    test = read_csv_rows(tmp_path / "s" / "test.csv")
    maps = [np.array(m) for m in group_closure(4)]
    variants = set()
    for row in train:
        q = np.array(digits(row.question))
        for m in maps:
            for perm in itertools.permutations(range(1, 5)):
                relabel = np.array((0, *perm))
                variants.add(tuple(relabel[q[m]]))
    assert len({r.question for r in train}) == len(train)
    assert not any(tuple(digits(row.question)) in variants for row in test)


def test_sudoku_generation_is_deterministic_and_errors(tmp_path):
    for name in ("a", "b"):
        generate_sudoku(str(tmp_path / name), train=3, test=2, seed=5, size=6, log=lambda _m: None)
    assert (tmp_path / "a" / "train.csv").read_bytes() == (tmp_path / "b" / "train.csv").read_bytes()
    with pytest.raises(DataError, match="not empty"):
        generate_sudoku(str(tmp_path / "a"), train=3, test=2, seed=5, size=6, log=lambda _m: None)
    with pytest.raises(ConfigError, match="--size"):
        generate_sudoku(str(tmp_path / "c"), train=3, test=2, seed=5, size=5, log=lambda _m: None)
    with pytest.raises(ConfigError, match="copies of earlier ones"):  # 4×4 has too few distinct puzzles
        generate_sudoku(str(tmp_path / "d"), train=2000, test=10, seed=5, size=4, log=lambda _m: None)
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def bfs(grid: np.ndarray, start: tuple[int, int]) -> tuple[dict, dict]:
    """Distances and shortest-path counts over non-wall squares (independent of the generator)."""
    dist, ways, queue = {start: 0}, {start: 1}, deque([start])
    while queue:
        r, c = queue.popleft()
        for nxt in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if not (0 <= nxt[0] < grid.shape[0] and 0 <= nxt[1] < grid.shape[1]) or grid[nxt] == "#":
                continue
            if nxt not in dist:
                dist[nxt] = dist[(r, c)] + 1
                ways[nxt] = 0
                queue.append(nxt)
            if dist[nxt] == dist[(r, c)] + 1:
                ways[nxt] += ways[(r, c)]
    return dist, ways


def test_mazes_have_one_shortest_path_marked_in_the_answer(tmp_path):
    generate_maze(str(tmp_path / "m"), train=6, test=3, seed=0, side=15, min_path=20, loops=0.1,
                  log=lambda _m: None)
    raw = (tmp_path / "m" / "test.csv").read_bytes()
    assert raw.startswith(b"source,question,answer,rating\r\n")
    for split in ("train", "test"):
        for row in read_csv_rows(tmp_path / "m" / f"{split}.csv"):
            q = np.array(list(row.question)).reshape(15, 15)
            a = np.array(list(row.answer)).reshape(15, 15)
            assert set(row.question) <= set("# SG") and set(row.answer) <= set("# SGo")
            assert (q == "S").sum() == 1 and (q == "G").sum() == 1
            assert np.array_equal(np.where(a == "o", " ", a), q)
            start, goal = tuple(np.argwhere(q == "S")[0]), tuple(np.argwhere(q == "G")[0])
            dist, ways = bfs(q, start)
            assert dist[goal] == row.rating >= 20 and ways[goal] == 1
            # The 'o' squares are exactly the shortest path: a chain S → o … o → G of length rating.
            path = {tuple(p) for p in np.argwhere(a == "o")}
            assert len(path) == row.rating - 1
            to_goal, _ = bfs(q, goal)
            assert all(dist[p] + to_goal[p] == row.rating for p in path)


def test_maze_splits_are_disjoint_up_to_dihedral_copies(tmp_path):
    # 5×5 mazes (four cells) repeat often: copies must stay out of the test split.
    summary = generate_maze(str(tmp_path / "m"), train=8, test=4, seed=0, side=5, min_path=2, loops=0.0,
                            log=lambda _m: None)
    assert summary["duplicates"] > 0
    train = read_csv_rows(tmp_path / "m" / "train.csv")
    images = set()
    for row in train:
        grid = np.array(list(row.question)).reshape(5, 5)
        for k in range(4):
            images |= {"".join(np.rot90(grid, k).reshape(-1)), "".join(np.rot90(grid, k).T.reshape(-1))}
    assert not any(row.question in images for row in read_csv_rows(tmp_path / "m" / "test.csv"))


def test_generate_commands(tmp_path, capsys):
    assert main(["data", "generate-sudoku", "--output-dir", str(tmp_path / "s"), "--train", "3", "--test",
                 "2", "--seed", "0", "--size", "6", "--difficulty", "medium"]) == 0
    assert "6×6 Sudoku" in capsys.readouterr().out
    assert read_csv_rows(tmp_path / "s" / "test.csv")[0].source == "trmlab-sudoku6-medium"
    assert main(["data", "generate-maze", "--output-dir", str(tmp_path / "m"), "--train", "2", "--test", "1",
                 "--seed", "0", "--side", "11", "--min-path", "8"]) == 0
    assert tuple((tmp_path / "m" / "train.csv").read_text().splitlines()[0].split(",")) == tuple(HEADER)
    assert main(["data", "generate-maze", "--output-dir", str(tmp_path / "x"), "--train", "2", "--test", "1",
                 "--seed", "0", "--side", "9", "--min-path", "500"]) == 2
    assert "lower --min-path" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
