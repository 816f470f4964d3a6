"""build-sudoku / build-maze: byte identity with the official builders, other sizes, validation, sources."""

from __future__ import annotations

import csv
import filecmp
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from trmlab.cli import main as trmlab_main
from trmlab.data import puzzle_csv
from trmlab.data.augment import dihedral
from trmlab.data.build_maze import MazeBuildOptions, build_maze
from trmlab.data.build_sudoku import SUDOKU_BOXES, SudokuBuildOptions, build_sudoku
from trmlab.data.dataset import ArcDataset
from trmlab.errors import ConfigError, DataError

ARRAYS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")


def quiet(_message: str) -> None:
    pass


def fixture_spec(root: Path) -> dict:
    """The options recorded in a fixture's command.txt (its ``spec:`` line)."""
    for line in (root / "command.txt").read_text().splitlines():
        if line.startswith("spec: "):
            return json.loads(line.removeprefix("spec: "))
    raise AssertionError(f"{root}/command.txt has no spec line")


def assert_same_tree(ours: Path, official: Path) -> None:
    names = sorted(p.relative_to(official).as_posix() for p in official.rglob("*") if p.is_file())
    assert sorted(p.relative_to(ours).as_posix() for p in ours.rglob("*") if p.is_file()) == names
    for name in names:
        assert filecmp.cmp(ours / name, official / name, shallow=False), name


# ----------------------------------------------------------------------------------------------------------
# Byte identity with the official builders' fixtures


@pytest.mark.parametrize("small_blocks", [False, True])
def test_sudoku_byte_identical_to_the_official_builder(tmp_path, monkeypatch, small_blocks):
    root = shared_path("fixtures/official-sudoku-build/small")
    spec = fixture_spec(root)
    if small_blocks:  # chunk and block boundaries inside the data must not change a byte
        monkeypatch.setattr(puzzle_csv, "CHUNK_ROWS", 3)
        monkeypatch.setattr(puzzle_csv, "BLOCK_ROWS", 7)
    build_sudoku(SudokuBuildOptions(input_dir=str(root / "input"), output_dir=str(tmp_path / "out"),
                                    subsample_size=spec["subsample_size"], num_aug=spec["num_aug"],
                                    min_difficulty=spec["min_difficulty"], seed=spec["seed"]), log=quiet)
    assert_same_tree(tmp_path / "out", root / "output")


@pytest.mark.parametrize("small_blocks", [False, True])
def test_maze_byte_identical_to_the_official_builder(tmp_path, monkeypatch, small_blocks):
    root = shared_path("fixtures/official-maze-build/small")
    spec = fixture_spec(root)
    if small_blocks:
        monkeypatch.setattr(puzzle_csv, "CHUNK_ROWS", 5)
        monkeypatch.setattr(puzzle_csv, "BLOCK_ROWS", 3)
    build_maze(MazeBuildOptions(input_dir=str(root / "input"), output_dir=str(tmp_path / "out"),
                                subsample_size=spec["subsample_size"], aug=spec["aug"], seed=spec["seed"]),
               log=quiet)
    assert_same_tree(tmp_path / "out", root / "output")


def test_cli_builds_the_fixture(tmp_path, capsys):
    root = shared_path("fixtures/official-sudoku-build/small")
    out = tmp_path / "out"
    code = trmlab_main(["data", "build-sudoku", "--input-dir", str(root / "input"), "--output-dir", str(out),
                        "--subsample-size", "12", "--num-aug", "5", "--seed", "42"])
    assert code == 0
    assert "train: 12 puzzles x 6 copies = 72 examples (int64)" in capsys.readouterr().out
    assert_same_tree(out, root / "output")
    maze = shared_path("fixtures/official-maze-build/small")
    assert trmlab_main(["data", "build-maze", "--input-dir", str(maze / "input"), "--output-dir",
                        str(tmp_path / "maze"), "--aug", "--seed", "42", "--quiet"]) == 0
    assert_same_tree(tmp_path / "maze", maze / "output")


# ----------------------------------------------------------------------------------------------------------
# Generated inputs: other sizes, seeds and options against a plain per-copy reference


def solved_grid(side: int, rng: np.random.Generator) -> np.ndarray:
    """A valid n×n solution: the shifted-rows pattern, digits relabelled, rows shuffled inside bands."""
    h, w = SUDOKU_BOXES[side]
    r, c = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    grid = (w * (r % h) + r // h + c) % side + 1
    grid = np.concatenate([[0], rng.permutation(side) + 1])[grid]
    order = np.concatenate([b * h + rng.permutation(h) for b in range(side // h)])
    return grid[order]


def write_csv(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", "question", "answer", "rating"])
        writer.writerows(rows)


def sudoku_rows(side: int, count: int, seed: int) -> list[tuple[str, str, str, str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(count):
        answer = solved_grid(side, rng).ravel()
        question = np.where(rng.random(answer.size) < 0.5, 0, answer)
        rows.append((f"gen{k}", "".join("." if v == 0 else str(v) for v in question),
                     "".join(map(str, answer)), str(int(rng.integers(0, 40)))))
    return rows


def sudoku_input(tmp_path: Path, side: int, train: int = 9, test: int = 4, seed: int = 0) -> Path:
    folder = tmp_path / f"csv{side}"
    write_csv(folder / "train.csv", sudoku_rows(side, train, seed))
    write_csv(folder / "test.csv", sudoku_rows(side, test, seed + 1))
    return folder


def reference_sudoku(folder: Path, side: int, subsample: int | None, min_rating: int | None, num_aug: int,
                     seed: int) -> dict[str, dict[str, np.ndarray]]:
    """The official algorithm, copy by copy with RandomState calls (spec §9; 6×6 draws no transpose)."""
    state = np.random.RandomState(seed)
    h, w = SUDOKU_BOXES[side]
    result = {}
    for split in ("train", "test"):
        with open(folder / f"{split}.csv", newline="") as f:
            rows = [row for row in list(csv.reader(f))[1:] if min_rating is None or int(row[3]) >= min_rating]
        grids = [(np.array([0 if ch == "." else int(ch) for ch in q]).reshape(side, side),
                  np.array([int(ch) for ch in a]).reshape(side, side)) for _, q, a, _ in rows]
        if split == "train" and subsample is not None and subsample < len(grids):
            grids = [grids[i] for i in state.choice(len(grids), size=subsample, replace=False)]
        inputs, labels = [], []
        for board, solution in grids:
            inputs.append(board)
            labels.append(solution)
            for _ in range(num_aug if split == "train" else 0):
                digits = np.concatenate([[0], state.permutation(np.arange(1, side + 1))])
                transpose = h == w and state.rand() < 0.5
                bands = state.permutation(side // h)
                row_perm = np.concatenate([b * h + state.permutation(h) for b in bands])
                stacks = state.permutation(side // w)
                col_perm = np.concatenate([s * w + state.permutation(w) for s in stacks])
                for grid, out in ((board, inputs), (solution, labels)):
                    grid = grid.T if transpose else grid
                    out.append(digits[grid[row_perm][:, col_perm]])
        result[split] = {"inputs": np.stack(inputs).reshape(len(inputs), -1) + 1,
                         "labels": np.stack(labels).reshape(len(labels), -1) + 1}
    return result


@pytest.mark.parametrize("side, subsample, min_rating, num_aug, seed", [
    (4, None, None, 3, 0), (6, 5, None, 4, 7), (9, 6, 10, 2, 123), (6, None, 20, 0, 1), (9, 100, None, 1, 5),
])
def test_sudoku_sizes_and_options_match_the_reference(tmp_path, side, subsample, min_rating, num_aug, seed):
    folder = sudoku_input(tmp_path, side, seed=seed)
    out = tmp_path / "out"
    summary = build_sudoku(SudokuBuildOptions(input_dir=str(folder), output_dir=str(out), seed=seed,
                                              subsample_size=subsample, min_difficulty=min_rating,
                                              num_aug=num_aug), log=quiet)
    assert (summary.seq_len, summary.vocab_size) == (side * side, side + 2)
    expected = reference_sudoku(folder, side, subsample, min_rating, num_aug, seed)
    for split in ("train", "test"):
        copies = 1 + (num_aug if split == "train" else 0)
        groups = len(expected[split]["inputs"]) // copies
        for name in ("inputs", "labels"):
            array = np.load(out / split / f"all__{name}.npy")
            np.testing.assert_array_equal(array, expected[split][name])
            assert array.dtype == (np.int64 if split == "train" and num_aug else np.uint8)
        np.testing.assert_array_equal(np.load(out / split / "all__group_indices.npy"),
                                      np.arange(groups + 1) * copies)
        meta = json.loads((out / split / "dataset.json").read_text())
        assert (meta["seq_len"], meta["vocab_size"], meta["total_groups"]) == (side * side, side + 2, groups)
    dataset = ArcDataset(out, "train")  # the trainer's loader reads it
    assert (dataset.seq_len, dataset.vocab_size) == (side * side, side + 2)


def maze_row(side: int, start_row: int, source: str = "m") -> tuple[str, str, str, str]:
    """An open room with walls around: S at (start_row, 1), G at (start_row, side - 2), path between."""
    grid = np.full((side, side), " ")
    grid[0, :] = grid[-1, :] = grid[:, 0] = grid[:, -1] = "#"
    grid[start_row, 1], grid[start_row, side - 2] = "S", "G"
    question = "".join(grid.ravel())
    grid[start_row, 2:side - 2] = "o"
    return source, question, "".join(grid.ravel()), "10"


def maze_input(tmp_path: Path, side: int = 7, train: int = 5, test: int = 2) -> Path:
    folder = tmp_path / "maze"
    write_csv(folder / "train.csv", [maze_row(side, 1 + k % (side - 2), f"t{k}") for k in range(train)])
    write_csv(folder / "test.csv", [maze_row(side, 1 + k % (side - 2), f"e{k}") for k in range(test)])
    return folder


@pytest.mark.parametrize("side, subsample, aug", [(5, None, True), (9, 3, False), (12, 2, True)])
def test_maze_sides_and_options(tmp_path, side, subsample, aug):
    folder = maze_input(tmp_path, side)
    out = tmp_path / "out"
    build_maze(MazeBuildOptions(input_dir=str(folder), output_dir=str(out), seed=3, subsample_size=subsample,
                                aug=aug), log=quiet)
    with open(folder / "train.csv", newline="") as f:
        questions = [row[1] for row in list(csv.reader(f))[1:]]
    if subsample is not None:
        questions = [questions[i] for i in np.random.RandomState(3).choice(len(questions), subsample, False)]
    tokens = {ch: k + 1 for k, ch in enumerate("# SGo")}
    expected = [dihedral(np.array([tokens[ch] for ch in q]).reshape(side, side), t).ravel()
                for q in questions for t in range(8 if aug else 1)]
    np.testing.assert_array_equal(np.load(out / "train" / "all__inputs.npy"), expected)
    meta = json.loads((out / "test" / "dataset.json").read_text())
    assert (meta["seq_len"], meta["vocab_size"]) == (side * side, 6)


# ----------------------------------------------------------------------------------------------------------
# Validation: one error naming the file and line, nothing written


def _sudoku_case(rows, mutate):
    source, question, answer, rating = rows[2]
    rows[2] = mutate(source, question, answer, rating)
    return rows


def _swap(text: str, i: int, j: int) -> str:
    chars = list(text)
    chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


SUDOKU_CASES = {
    "short question": (lambda s, q, a, r: (s, q[:-1], a, r), "question has 80 characters; expected 81"),
    "long answer": (lambda s, q, a, r: (s, q, a + "1", r), "answer has 82 characters"),
    "bad question char": (lambda s, q, a, r: (s, "x" + q[1:], a, r), "question has 'x' at position 0"),
    "bad answer char": (lambda s, q, a, r: (s, q, a[:5] + "." + a[6:], r), "answer has '.' at position 5"),
    "row broken": (lambda s, q, a, r: (s, "." * 81, a[:3] + a[0] + a[4:], r),
                   "answer is not a solved Sudoku: row 1 has the digit"),
    "column broken": (lambda s, q, a, r: (s, "." * 81, _swap(a, 0, 1), r),
                      "answer is not a solved Sudoku: column 1 has the digit"),
    "box broken": (lambda s, q, a, r: (s, "." * 81, _band_swap(a), r),
                   "answer is not a solved Sudoku: box 1 has the digit"),
    "disagrees with givens": (lambda s, q, a, r: (s, _other_given(q, a), a, r),
                              "answer disagrees with the question at row 1, column 1"),
    "non-ascii": (lambda s, q, a, r: (s, "é" + q[1:], a, r), "question has the character 'é' at position 0"),
}


def _band_swap(answer: str) -> str:
    """Exchange rows 3 and 4 (different bands): rows and columns stay complete, boxes 1..6 break."""
    rows = [answer[9 * k:9 * k + 9] for k in range(9)]
    rows[2], rows[3] = rows[3], rows[2]
    return "".join(rows)


def _other_given(question: str, answer: str) -> str:
    wrong = str(int(answer[0]) % 9 + 1)
    return wrong + question[1:]


@pytest.mark.parametrize("case", sorted(SUDOKU_CASES))
def test_sudoku_validation_errors_name_file_and_line(tmp_path, case):
    mutate, message = SUDOKU_CASES[case]
    folder = tmp_path / "csv"
    write_csv(folder / "train.csv", sudoku_rows(9, 5, seed=1))
    write_csv(folder / "test.csv", _sudoku_case(sudoku_rows(9, 4, seed=2), mutate))
    out = tmp_path / "out"
    with pytest.raises(DataError) as error:
        build_sudoku(SudokuBuildOptions(input_dir=str(folder), output_dir=str(out), seed=0, num_aug=2),
                     log=quiet)
    assert f"{folder / 'test.csv'} line 4: " in str(error.value)
    assert message in str(error.value)
    assert not out.exists() and list(tmp_path.iterdir()) == [folder]  # nothing written, no partial dir


def _maze_replace(text: str, index: int, char: str) -> str:
    return text[:index] + char + text[index + 1:]


MAZE_CASES = {  # 7×7 room, S at (2, 1) → index 15, G at (2, 5) → 19, path 16..18
    "bad char": (lambda q, a: (_maze_replace(q, 8, "x"), a), "question has 'x' at row 2, column 2"),
    "two starts": (lambda q, a: (_maze_replace(q, 8, "S"), _maze_replace(a, 8, "S")),
                   "question has 2 'S', 1 'G' and 0 'o'"),
    "answer opens a wall": (lambda q, a: (q, _maze_replace(a, 0, "o")),
                            "answer has 'o' at row 1, column 1 where the question has '#'"),
    "path broken": (lambda q, a: (q, _maze_replace(a, 17, " ")), "does not connect S to G"),
    "stray path cell": (lambda q, a: (q, _maze_replace(a, 36, "o")),
                        "answer's path is not connected: row 6, column 2 is off the S→G path"),
    "wrong length": (lambda q, a: (q + " ", a), "question has 50 characters; expected 49"),
    "separate loop": (lambda q, a: (q, _mark(a, [29, 30, 36, 37])),  # a chain from S to G plus a 2x2 ring
                      "answer's path is not connected: row 5, column 2 is off the S→G path"),
}


def _mark(text: str, cells: list[int]) -> str:
    for cell in cells:
        text = _maze_replace(text, cell, "o")
    return text


def test_maze_path_need_not_be_a_chain(tmp_path):
    """A connected path that is not a simple chain (a 2x2 block of path cells) is accepted."""
    folder = maze_input(tmp_path, 7, train=4)
    rows = [maze_row(7, 1 + k) for k in range(4)]
    source, question, answer, rating = rows[1]
    rows[1] = (source, question, _mark(answer, [23, 24]), rating)  # row 3 under the path's (2, 2) and (2, 3)
    write_csv(folder / "train.csv", rows)
    build_maze(MazeBuildOptions(input_dir=str(folder), output_dir=str(tmp_path / "out"), seed=0), log=quiet)
    assert (tmp_path / "out" / "train" / "all__inputs.npy").is_file()


@pytest.mark.parametrize("case", sorted(MAZE_CASES))
def test_maze_validation_errors_name_file_and_line(tmp_path, case):
    mutate, message = MAZE_CASES[case]
    folder = maze_input(tmp_path, 7, train=4)
    rows = [maze_row(7, 1 + k) for k in range(4)]
    source, question, answer, rating = rows[1]
    rows[1] = (source, *mutate(question, answer), rating)
    write_csv(folder / "train.csv", rows)
    out = tmp_path / "out"
    with pytest.raises(DataError) as error:
        build_maze(MazeBuildOptions(input_dir=str(folder), output_dir=str(out), seed=0, aug=True), log=quiet)
    assert f"{folder / 'train.csv'} line 3: " in str(error.value)
    assert message in str(error.value)
    assert not out.exists()


def build_error(folder: Path, out: Path, **options) -> str:
    """The DataError message of a Sudoku build that must fail."""
    with pytest.raises(DataError) as error:
        build_sudoku(SudokuBuildOptions(input_dir=str(folder), output_dir=str(out), seed=0, **options),
                     log=quiet)
    return str(error.value)


def test_file_level_errors(tmp_path):
    folder = sudoku_input(tmp_path, 9)
    out = tmp_path / "out"
    (folder / "test.csv").write_text("source,question,answer\n")
    assert "test.csv: header 'source,question,answer'; expected" in build_error(folder, out)
    (folder / "test.csv").unlink()
    assert "test.csv: missing; --input-dir must hold train.csv and test.csv" in build_error(folder, out)
    write_csv(folder / "test.csv", [])
    assert "test.csv: no puzzles; the split would be empty" in build_error(folder, out)
    write_csv(folder / "test.csv", sudoku_rows(9, 2, seed=0))
    assert "no puzzles with rating >= 1000" in build_error(folder, out, min_difficulty=1000)
    write_csv(folder / "test.csv", sudoku_rows(4, 2, seed=0))
    assert "test.csv line 2: question has 16 characters; expected 81" in build_error(folder, out)
    write_csv(folder / "train.csv", [("a", "1" * 25, "1" * 25, "0")])
    assert "train.csv line 2: question has 25 characters; a Sudoku has 16, 36" in build_error(folder, out)
    write_csv(folder / "train.csv", [("a", *sudoku_rows(4, 1, 0)[0][1:3], "hard")])
    assert "train.csv line 2: rating 'hard' is not an integer" in build_error(folder, out, min_difficulty=1)
    assert not out.exists()


@pytest.mark.parametrize("overrides, message", [
    ({"input_dir": None}, "give exactly one of --input-dir DIR"),
    ({"source": "hf:a/b"}, "give exactly one of --input-dir DIR"),
    ({"subsample_size": 0}, "--subsample-size 0: must be >= 1"),
    ({"seed": 2**32}, "--seed 4294967296"),
    ({"num_aug": -1}, "--num-aug -1: must be >= 0"),
])
def test_option_errors(tmp_path, overrides, message):
    options = {"input_dir": str(sudoku_input(tmp_path, 4)), "output_dir": str(tmp_path / "out"), "seed": 0,
               **overrides}
    with pytest.raises(ConfigError, match=message):
        build_sudoku(SudokuBuildOptions(**options), log=quiet)


def test_non_empty_output_dir_needs_overwrite(tmp_path):
    folder = sudoku_input(tmp_path, 4)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("x")
    assert "exists and is not empty; pass --overwrite" in build_error(folder, out)
    build_sudoku(SudokuBuildOptions(input_dir=str(folder), output_dir=str(out), seed=0, overwrite=True),
                 log=quiet)
    assert sorted(p.name for p in out.iterdir()) == ["identifiers.json", "test", "train"]


# ----------------------------------------------------------------------------------------------------------
# --source hf:REPO


def test_hub_source_without_the_extra_names_input_dir(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    with pytest.raises(ConfigError) as error:
        build_maze(MazeBuildOptions(source="hf:sapientinc/maze-30x30-hard-1k", output_dir=str(tmp_path / "o"),
                                    seed=0), log=quiet)
    assert "pip install 'trmlab[hub]'" in str(error.value) and "--input-dir DIR" in str(error.value)
    assert trmlab_main(["data", "build-maze", "--source", "hf:x/y", "--output-dir", str(tmp_path / "o"),
                        "--seed", "0"]) == 2
    assert not (tmp_path / "o").exists()


def test_hub_source_downloads_both_files(tmp_path, monkeypatch):
    folder = maze_input(tmp_path)
    calls = []

    def fake_download(repo, filename, repo_type):
        calls.append((repo, filename, repo_type))
        return str(folder / filename)

    monkeypatch.setattr(puzzle_csv, "hub_download_function", lambda: fake_download)
    build_maze(MazeBuildOptions(source="hf:owner/mazes", output_dir=str(tmp_path / "hub"), seed=0), log=quiet)
    build_maze(MazeBuildOptions(input_dir=str(folder), output_dir=str(tmp_path / "dir"), seed=0), log=quiet)
    assert calls == [("owner/mazes", "train.csv", "dataset"), ("owner/mazes", "test.csv", "dataset")]
    assert_same_tree(tmp_path / "hub", tmp_path / "dir")

    def offline(repo, filename, repo_type):
        raise OSError("no network")

    monkeypatch.setattr(puzzle_csv, "hub_download_function", lambda: offline)
    with pytest.raises(DataError) as error:
        build_maze(MazeBuildOptions(source="hf:owner/mazes", output_dir=str(tmp_path / "x"), seed=0),
                   log=quiet)
    assert ("could not download train.csv (OSError: no network); download train.csv and test.csv yourself "
            "and pass --input-dir DIR") in str(error.value)


def test_copies_are_streamed_in_blocks(tmp_path, monkeypatch):
    """Memory flat in --num-aug: no block of rows written exceeds BLOCK_ROWS (or one puzzle's copies)."""
    monkeypatch.setattr(puzzle_csv, "BLOCK_ROWS", 64)
    blocks = []
    write = puzzle_csv.NpyStreamWriter.write

    def recording_write(self, block):
        if self.path.name == "all__inputs.npy":
            blocks.append(len(block))
        write(self, block)

    monkeypatch.setattr(puzzle_csv.NpyStreamWriter, "write", recording_write)
    folder = sudoku_input(tmp_path, 4, train=9)
    build_sudoku(SudokuBuildOptions(input_dir=str(folder), output_dir=str(tmp_path / "a"), seed=0,
                                    num_aug=20), log=quiet)
    assert sum(blocks) == 9 * 21 + 4 and max(blocks) == 63  # 3 puzzles x 21 copies per block
    blocks.clear()
    build_sudoku(SudokuBuildOptions(input_dir=str(folder), output_dir=str(tmp_path / "b"), seed=0,
                                    num_aug=99), log=quiet)
    assert max(blocks) == 100  # one puzzle's 100 copies when they exceed a block


def test_utf8_bom_is_accepted(tmp_path):
    """Spreadsheet exports often start with a byte-order mark; it is not part of the header."""
    folder = sudoku_input(tmp_path, 4)
    plain = build_sudoku(SudokuBuildOptions(input_dir=str(folder), output_dir=str(tmp_path / "a"), seed=0),
                         log=quiet)
    train = folder / "train.csv"
    train.write_bytes(b"\xef\xbb\xbf" + train.read_bytes())
    with_bom = build_sudoku(SudokuBuildOptions(input_dir=str(folder), output_dir=str(tmp_path / "b"), seed=0),
                            log=quiet)
    assert with_bom.splits == plain.splits
    assert_same_tree(tmp_path / "b", tmp_path / "a")
