"""``trmlab data inspect``: counts, the grid-size histogram from the EOS layout, examples as text and PNG.

Run: .venv/bin/python -m pytest -q tests/test_data_inspect.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from trmlab.cli import main
from trmlab.data.inspect import crop, draw_png, format_report, grid_sizes, inspect_dataset
from trmlab.data.synthetic import build_synthetic, encode_grid
from trmlab.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inspect") / "set"
    build_synthetic(root, seed=1, families=["colour_permutation", "gravity"], train_tasks=4, eval_tasks=2,
                    log=lambda _m: None)
    return root


def test_grid_sizes_and_crop_follow_the_token_layout():
    grid = np.arange(6, dtype=np.uint8).reshape(2, 3) % 10
    tokens = np.stack([encode_grid(grid, 6, 0, 0), encode_grid(grid, 6, 3, 2), encode_grid(grid.T, 6, 3, 4)])
    heights, widths = grid_sizes(tokens, 6)
    assert heights.tolist() == [2, 2, 3] and widths.tolist() == [3, 3, 2]
    assert np.array_equal(crop(tokens[1], 6), grid) and np.array_equal(crop(tokens[2], 6), grid.T)


def test_counts_histogram_and_examples(synthetic: Path):
    report = inspect_dataset(synthetic / "encoder", examples=2)
    tasks = {t["name"]: t for t in json.loads((synthetic / "tasks.json").read_text())["tasks"]}
    train = report["splits"]["train"]
    meta = json.loads((synthetic / "encoder" / "train" / "dataset.json").read_text())
    assert train["layout"] == "encoder" and train["canvas"] == 10
    assert train["groups"] == meta["total_groups"] == 8 and train["puzzles"] == meta["total_puzzles"]
    assert train["demos"] + train["queries"] == train["examples"]
    assert sum(train["sizes"]["max_side"].values()) == train["examples"] == train["sizes"]["scanned"]
    assert report["test_puzzles"] == 16  # 2 families × (4 training + 2 validation + 2 held out)
    for item in train["drawn"]:
        task = tasks[item["puzzle"]]  # the first example of a puzzle is its first demo (encoder layout)
        assert item["demo"] and np.array_equal(item["input"], np.array(task["train"][0]["input"]))
        assert np.array_equal(item["output"], np.array(task["train"][0]["output"]))
    text = format_report(report)
    assert "groups 8  puzzles 8" in text and "queries (targets)" in text and "->" in text


def test_sampled_histogram_says_so(synthetic: Path):
    report = inspect_dataset(synthetic / "trm", examples=0, max_scan=5)
    sizes = report["splits"]["train"]["sizes"]
    assert sizes["scanned"] == 5 < sizes["of"] and sum(sizes["max_side"].values()) == 5
    assert "evenly spaced sample of 5" in format_report(report)


def test_png(synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("matplotlib")
    report = inspect_dataset(synthetic / "trm", examples=1)
    out = draw_png(report, tmp_path / "examples.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["examples.png"]
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the [viz] extra were missing
    with pytest.raises(ConfigError, match=r"trmlab\[viz\]"):
        draw_png(report, tmp_path / "again.png")


def test_not_a_dataset(tmp_path: Path):
    with pytest.raises(DataError, match=r"no train/dataset\.json"):
        inspect_dataset(tmp_path)


def test_cli(synthetic: Path, capsys: pytest.CaptureFixture):
    assert main(["data", "inspect", str(synthetic / "trm"), "--examples", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"dataset {synthetic / 'trm'}") and "test: layout official" in out
    assert main(["data", "inspect", str(synthetic)]) == 2
    assert "no train/dataset.json" in capsys.readouterr().err


def test_sudoku_and_maze_datasets_are_drawn_as_boards_in_their_own_characters(tmp_path: Path):
    from conftest import shared_path

    sudoku = inspect_dataset(shared_path("fixtures/official-sudoku-build/small/output"), examples=2)
    maze = inspect_dataset(shared_path("fixtures/official-maze-build/small/output"), examples=2)
    for report, kind, alphabet in ((sudoku, "sudoku", set(".123456789")), (maze, "maze", set("# SGo"))):
        for split in report["splits"].values():
            assert split["kind"] == kind and split["sizes"] is None  # whole boards: no size histogram
            side = split["canvas"]
            for item in split["drawn"]:
                for key in ("input", "output"):
                    assert item[key].shape == (side, side)  # the whole board, never cropped
                    assert set(item[key].ravel()) <= alphabet, (kind, key)
                given = item["input"] != ("." if kind == "sudoku" else "o")
                if kind == "sudoku":  # a solution keeps every given digit and fills every blank
                    assert (item["output"][given] == item["input"][given]).all()
                    assert "." not in set(item["output"].ravel())
                else:  # a solved maze marks the path 'o' on open cells and keeps walls, start and goal
                    assert "o" in set(item["output"].ravel())
                    walls = item["input"] == "#"
                    assert (item["output"][walls] == "#").all()
        text = format_report(report)
        assert f"{kind} boards" in text and "input grid size" not in text
        first = next(iter(report["splits"].values()))["drawn"][0]
        assert "".join(first["input"][0]) in text  # the board's first row, as the puzzle file wrote it
    with pytest.raises(ConfigError, match="Sudoku / Maze boards are shown as text"):
        draw_png(sudoku, tmp_path / "boards.png")
    assert not (tmp_path / "boards.png").exists()
