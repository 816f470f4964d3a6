"""Synthetic few-shot tasks: rules hold, demos determine them, held-out instances are new, both layouts load.

Run: .venv/bin/python -m pytest -q tests/test_synthetic.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trmlab.cli import main
from trmlab.data.dataset import ArcDataset, TrainSampler, iter_test_batches
from trmlab.data.synthetic import (
    FAMILIES,
    SPLITS,
    Augmentation,
    apply_rule,
    behaviour,
    build_synthetic,
    dihedral,
    encode_grid,
    enumerable_instances,
    gravity,
    is_determined,
    recolour_by_size,
    rules_shown,
)
from trmlab.errors import DataError

INVERSE_DIHEDRAL = [0, 3, 2, 1, 4, 5, 6, 7]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "set"
    build_synthetic(root, seed=3, families=list(FAMILIES), train_tasks=6, eval_tasks=3, num_aug=2,
                    log=lambda _m: None)
    return root


def _tasks(root: Path) -> list[dict]:
    return json.loads((root / "tasks.json").read_text())["tasks"]


def test_rule_functions_on_hand_made_grids():
    grid = np.array([[1, 0, 0], [0, 2, 0], [0, 0, 0]], dtype=np.uint8)
    # Colour 1 falls down; it stops at the edge. Colour 2 is an obstacle and stays.
    assert gravity(grid, "down", 1).tolist() == [[0, 0, 0], [0, 2, 0], [1, 0, 0]]
    stacked = np.array([[3, 0], [0, 0], [5, 0]], dtype=np.uint8)
    assert gravity(stacked, "down", 3).tolist() == [[0, 0], [3, 0], [5, 0]]  # lands on the obstacle
    assert gravity(grid, "right", 1).tolist() == [[0, 0, 1], [0, 2, 0], [0, 0, 0]]
    assert gravity(grid, "up", 2).tolist() == [[1, 2, 0], [0, 0, 0], [0, 0, 0]]
    assert gravity(grid, "left", 2).tolist() == [[1, 0, 0], [2, 0, 0], [0, 0, 0]]
    # Wrap-around translation: content shifted down 1 and right 1 on a torus.
    assert apply_rule("translation", {"dr": 1, "dc": 1}, grid).tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 2]]
    objects = np.array([[4, 4, 0, 4], [0, 0, 0, 0], [4, 0, 4, 4], [0, 0, 4, 0]], dtype=np.uint8)
    sizes = {"1": 7, "2": 8, "3": 9, "4": 6}
    expected = [[8, 8, 0, 7], [0, 0, 0, 0], [7, 0, 9, 9], [0, 0, 9, 0]]
    assert recolour_by_size(objects, sizes).tolist() == expected
    mapping = [0, 2, 3, 1, 4, 5, 6, 7, 8, 9]
    assert apply_rule("colour_permutation", {"mapping": mapping}, grid).tolist() == [[2, 0, 0], [0, 3, 0],
                                                                                      [0, 0, 0]]
    for t in range(8):
        assert np.array_equal(dihedral(dihedral(grid, t), INVERSE_DIHEDRAL[t]), grid)


def test_encode_grid_places_eos_like_the_official_layout():
    grid = np.array([[1, 2]], dtype=np.uint8)
    board = encode_grid(grid, 4, 1, 1).reshape(4, 4)
    assert board.tolist() == [[0, 0, 0, 0], [0, 3, 4, 1], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert encode_grid(np.ones((4, 4), np.uint8), 4).tolist() == [3] * 16  # touches both edges: no EOS


def test_every_pair_obeys_its_rule_and_grids_are_valid(built: Path):
    tasks = _tasks(built)
    assert {t["family"] for t in tasks} == set(FAMILIES)
    for task in tasks:
        assert 3 <= len(task["train"]) <= 4 and 1 <= len(task["test"]) <= 2
        for pair in task["train"] + task["test"]:
            grid_in = np.array(pair["input"], dtype=np.uint8)
            grid_out = np.array(pair["output"], dtype=np.uint8)
            for grid in (grid_in, grid_out):
                assert grid.ndim == 2 and max(grid.shape) <= 10 and grid.max() <= 9
            assert np.array_equal(apply_rule(task["family"], task["params"], grid_in), grid_out), task["name"]
            assert not np.array_equal(grid_in, grid_out) or grid_in.shape != grid_out.shape


def test_demos_determine_the_test_outputs(built: Path):
    for task in _tasks(built):
        demos = [(np.array(p["input"], np.uint8), np.array(p["output"], np.uint8)) for p in task["train"]]
        tests = [np.array(p["input"], np.uint8) for p in task["test"]]
        assert is_determined(task["family"], task["params"], demos, tests), task["name"]


def test_determinacy_check_rejects_ambiguous_demos():
    demo = (np.array([[1, 0]], np.uint8), np.array([[2, 0]], np.uint8))
    mapping = {"mapping": [0, 2, 3, 1, 4, 5, 6, 7, 8, 9]}
    assert not is_determined("colour_permutation", mapping, [demo], [np.array([[3, 1]], np.uint8)])
    symmetric = np.array([[1, 1], [1, 1]], np.uint8)  # every dihedral transform fits this demo
    assert not is_determined("dihedral", {"transform": 1}, [(symmetric, symmetric)],
                             [np.array([[1, 2], [0, 0]], np.uint8)])


def _closures(root: Path) -> tuple[dict[str, dict], dict[str, dict[str, str]]]:
    """Tasks by name, and per split the behaviour of every rule the built dataset shows: for training tasks
    each augmented copy's conjugated rule and, for compositions, each part's (read back from the puzzle
    names in train/); for evaluation tasks the conjugated rule of each augmented copy in test/."""
    tasks = {t["name"]: t for t in _tasks(root)}
    names = json.loads((root / "encoder" / "identifiers.json").read_text())
    closure: dict[str, dict[str, str]] = {split: {} for split in SPLITS}
    for split in ("train", "test"):
        for identifier in set(ArcDataset([root / "encoder"], split).puzzle_identifiers.tolist()):
            name, augmentation = Augmentation.from_puzzle_name(names[identifier])
            task = tasks[name]
            if split == "test" and task["split"] == "train":
                continue  # the same copies as in train/
            shown = rules_shown(task["family"], task["params"]) if task["split"] == "train" else [
                (task["family"], task["params"])]
            for family, params in shown:
                closure[task["split"]][behaviour(family, params, augmentation)] = names[identifier]
    return tasks, closure


def leaks(root: Path) -> dict[str, int]:
    """Per family: evaluation tasks whose rule is in the training closure or in the other evaluation
    split's closure, and the pairwise overlaps of the three closures."""
    tasks, closure = _closures(root)
    found: dict[str, int] = {}
    for task in tasks.values():
        if task["split"] != "train":
            other = "held_out" if task["split"] == "validation" else "validation"
            rule = behaviour(task["family"], task["params"])
            leaked = rule in closure["train"] or rule in closure[other]
            found[task["family"]] = found.get(task["family"], 0) + leaked
    for a, b in (("train", "validation"), ("train", "held_out"), ("validation", "held_out")):
        found[f"{a}&{b}"] = len(closure[a].keys() & closure[b].keys())
    return found


def test_probes_tell_every_enumerable_instance_apart_and_conjugate_rules():
    for family, space in (("dihedral", 8), ("translation", 49), ("gravity", 36)):
        instances = enumerable_instances(family)
        assert len({behaviour(family, p) for p in instances}) == len(instances) == space, family
    transpose = Augmentation(6)  # a translation by (1, 2) seen transposed is one by (2, 1)
    shifted = behaviour("translation", {"dr": 1, "dc": 2}, transpose)
    assert shifted == behaviour("translation", {"dr": 2, "dc": 1})
    recolour = Augmentation(0, (0, 2, 1, 3, 4, 5, 6, 7, 8, 9))  # gravity of colour 1, colours 1 and 2 swapped
    assert behaviour("gravity", {"direction": "up", "colour": 1}, recolour) == behaviour(
        "gravity", {"direction": "up", "colour": 2})
    assert Augmentation.from_puzzle_name(transpose.puzzle_name("x")) == ("x", transpose)
    grid = np.arange(12, dtype=np.uint8).reshape(3, 4) % 10
    assert np.array_equal(recolour.inverse(recolour(grid)), grid)


def test_evaluation_rules_never_occur_in_training_not_even_augmented_or_as_composition_parts(
        tmp_path: Path):
    # Every family (dihedral too), enough tasks and augmentations that the old generator leaked in every
    # geometric family (its held-out dihedral transforms were composition steps, conjugated translations,
    # gravity and recolour instances were training copies).
    root = tmp_path / "closure"
    build_synthetic(root, seed=0, families=list(FAMILIES), train_tasks=24, eval_tasks=4, num_aug=8,
                    log=lambda _m: None)
    found = leaks(root)
    assert set(found) >= set(FAMILIES) and not any(found.values()), found
    splits = [t["split"] for t in _tasks(root)]
    assert {s: splits.count(s) for s in SPLITS} == {"train": 144, "validation": 24, "held_out": 24}


def test_deterministic_given_the_seed(tmp_path: Path):
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        build_synthetic(tmp_path / name, seed=seed, train_tasks=3, eval_tasks=2, num_aug=1,
                        log=lambda _m: None)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert files(tmp_path / "a")["tasks.json"] != files(tmp_path / "c")["tasks.json"]


def test_trm_layout_holds_out_identifiers(built: Path):
    tasks = _tasks(built)
    held = {t["name"] for t in tasks if t["split"] != "train"}  # validation and held out
    names = json.loads((built / "trm" / "identifiers.json").read_text())
    train, test = ArcDataset([built / "trm"], "train"), ArcDataset([built / "trm"], "test")
    train_tasks = {names[i].split("|||")[0] for i in train.puzzle_identifiers}
    test_tasks = {names[i].split("|||")[0] for i in test.puzzle_identifiers}
    assert not train_tasks & held and held <= test_tasks
    assert set(train.puzzle_identifiers.tolist()).isdisjoint(
        {i for i in test.puzzle_identifiers.tolist() if names[i].split("|||")[0] in held})
    puzzles = json.loads((built / "trm" / "test_puzzles.json").read_text())
    assert set(puzzles) == {t["name"] for t in tasks} and set(list(puzzles)[: len(held)]) == held
    validation = [t["name"] for t in tasks if t["split"] == "validation"]
    assert list(puzzles)[: len(validation)] == validation  # first: eval.max_tasks scores validation alone
    assert train.layout == "official" and train.seq_len == 100
    sampler = TrainSampler(train, 8, seed=0)
    assert sampler.batches_per_iteration(0) == len(list(sampler.iter_iteration(0)))


def test_encoder_layout_demos_first_and_evaluation_tasks_only_in_test(built: Path):
    tasks = {t["name"]: t for t in _tasks(built)}
    names = json.loads((built / "encoder" / "identifiers.json").read_text())
    train, test = ArcDataset([built / "encoder"], "train"), ArcDataset([built / "encoder"], "test")
    assert train.layout == test.layout == "encoder"
    assert all(tasks[names[i].split("|||")[0]]["split"] == "train" for i in train.puzzle_identifiers)
    for dataset in (train, test):
        for puzzle, identifier in enumerate(dataset.puzzle_identifiers):
            task = tasks[names[identifier].split("|||")[0]]
            size = dataset.puzzle_indices[puzzle + 1] - dataset.puzzle_indices[puzzle]
            assert dataset.num_demos[puzzle] == len(task["train"])
            assert size == len(task["train"]) + len(task["test"])
    # Test split: items are the queries (untranslated, so the original test input sits at (0, 0)).
    batch, n_real = next(iter_test_batches(test, 4, max_demos=4))
    first = tasks[names[int(batch["puzzle_identifiers"][0])]]
    expected = encode_grid(np.array(first["test"][0]["input"], np.uint8), 10)
    assert n_real == 4 and np.array_equal(batch["inputs"][0].numpy(), expected)
    assert batch["demo_mask"][0].sum() == len(first["train"])


def _crop(tokens: np.ndarray, canvas: int) -> np.ndarray:
    """The grid at (0, 0): every grid cell is a colour token (≥ 2), the EOS/PAD around it is not."""
    board = tokens.reshape(canvas, canvas)
    rows, cols = int((board[:, 0] >= 2).sum()), int((board[0] >= 2).sum())
    return (board[:rows, :cols] - 2).astype(np.uint8)


def test_augmented_test_puzzles_invert_to_the_original(built: Path):
    names = json.loads((built / "trm" / "identifiers.json").read_text())
    test = ArcDataset([built / "trm"], "test")
    puzzles = json.loads((built / "trm" / "test_puzzles.json").read_text())
    augmented = 0
    for puzzle, identifier in enumerate(test.puzzle_identifiers):
        name = names[identifier]
        task, _, rest = name.partition("|||")
        grid = _crop(test.gather("inputs", [test.puzzle_indices[puzzle]])[0], 10)
        if rest:
            t, digits = rest.split("|||")
            inverse = np.argsort(np.array([int(d) for d in digits])).astype(np.uint8)
            grid = inverse[dihedral(grid, INVERSE_DIHEDRAL[int(t[1:])])]
            augmented += 1
        assert np.array_equal(grid, np.array(puzzles[task]["test"][0]["input"], np.uint8)), name
    assert augmented > 0


def test_refuses_existing_output_and_leaves_nothing_behind(tmp_path: Path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match=r"not empty"):
        build_synthetic(target, train_tasks=1, eval_tasks=1, log=lambda _m: None)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging directory left


def test_cli_build_synthetic(tmp_path: Path, capsys: pytest.CaptureFixture):
    code = main(["data", "build-synthetic", "--output-dir", str(tmp_path / "s"), "--families", "gravity",
                 "dihedral", "--train-tasks", "3", "--eval-tasks", "1", "--canvas", "8"])
    assert code == 0 and "10 tasks (2 validation, 2 held out)" in capsys.readouterr().out
    assert ArcDataset([tmp_path / "s" / "encoder"], "train").seq_len == 64
    code = main(["data", "build-synthetic", "--output-dir", str(tmp_path / "s")])
    assert code == 2 and "not empty" in capsys.readouterr().err
