"""Helpers for the evaluation tests (no tests here): a hand-made ARC dataset and hand-made raw predictions.

The dataset follows the official layout (trm-reference §7.1/§7.2) on a small canvas: identifiers.json,
test_puzzles.json, test/ and train/ with dataset.json and the index arrays.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from trmlab.evaluation.grids import dihedral

PAD, EOS = 0, 1


def encode(grid: np.ndarray | list, side: int) -> np.ndarray:
    """A grid at (0, 0) of a side×side canvas with its EOS row/column, flattened (uint8)."""
    grid = np.asarray(grid, dtype=np.uint8)
    canvas = np.zeros((side, side), dtype=np.uint8)
    h, w = grid.shape
    canvas[:h, :w] = grid + 2
    if h < side:
        canvas[h, :w] = EOS
    if w < side:
        canvas[:h, w] = EOS
    return canvas.reshape(-1)


def augment(grid: np.ndarray | list, transform: int, digits: str) -> np.ndarray:
    """Forward augmentation: colour map first, then the dihedral transform."""
    mapping = np.array([int(c) for c in digits], dtype=np.uint8)
    return np.ascontiguousarray(dihedral(mapping[np.asarray(grid, dtype=np.uint8)], transform))


IDENTITY = (0, "0123456789")


def aug_name(task: str, aug: tuple[int, str]) -> str:
    return task if aug == IDENTITY else f"{task}|||t{aug[0]}|||{aug[1]}"


def build_dataset(root: Path, tasks: dict[str, dict], augs: dict[str, list[tuple[int, str]]],
                  side: int = 6, extra_identifiers: int = 0) -> Path:
    """Write a test-split ARC dataset: one group per task (in ``tasks`` order), one puzzle per augmentation
    (the first must be IDENTITY), one example per test pair. ``extra_identifiers`` pads identifiers.json (e.g.
    to match a checkpoint's table) with train-only names."""
    root.mkdir(parents=True, exist_ok=True)
    names = ["<blank>"]
    inputs, labels, ids, puzzle_idx, group_idx = [], [], [], [0], [0]
    for task, content in tasks.items():
        assert augs[task][0] == IDENTITY
        for aug in augs[task]:
            names.append(aug_name(task, aug))
            for pair in content["test"]:
                inputs.append(encode(augment(pair["input"], *aug), side))
                labels.append(encode(augment(pair["output"], *aug), side))
            ids.append(len(names) - 1)
            puzzle_idx.append(len(inputs))
        group_idx.append(len(ids))
    names += [f"train{i:04d}" for i in range(extra_identifiers)]
    arrays = {"inputs": np.stack(inputs), "labels": np.stack(labels),
              "puzzle_identifiers": np.array(ids, np.int32), "puzzle_indices": np.array(puzzle_idx, np.int32),
              "group_indices": np.array(group_idx, np.int32)}
    for split in ("train", "test"):
        (root / split).mkdir(exist_ok=True)
        meta = {"pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, "vocab_size": 12,
                "seq_len": side * side, "num_puzzle_identifiers": len(names), "total_groups": len(tasks),
                "mean_puzzle_examples": len(inputs) / len(ids), "total_puzzles": len(ids), "sets": ["all"]}
        (root / split / "dataset.json").write_text(json.dumps(meta))
        for key, value in arrays.items():
            np.save(root / split / f"all__{key}.npy", value)
    (root / "identifiers.json").write_text(json.dumps(names))
    (root / "test_puzzles.json").write_text(json.dumps(tasks))
    return root


def simple_task(seed: int, n_test: int = 1, h: int = 2, w: int = 3) -> dict:
    """A task whose outputs are its inputs plus one (mod 10), with one demo pair and ``n_test`` test pairs."""
    rng = np.random.default_rng(seed)

    def pair() -> dict:
        grid = rng.integers(1, 9, size=(h, w))
        return {"input": grid.tolist(), "output": ((grid + 1) % 10).tolist()}

    return {"train": [pair()], "test": [pair() for _ in range(n_test)]}


def prediction_rows(root: Path, votes: list[tuple[str, int, tuple[int, str], list, float]], side: int = 6):
    """Raw prediction arrays from (task, test index, augmentation, predicted original-frame grid, q logit)."""
    tasks = json.loads((root / "test_puzzles.json").read_text())
    names = json.loads((root / "identifiers.json").read_text())
    inputs, preds, ids, qs = [], [], [], []
    for task, index, aug, grid, q in votes:
        inputs.append(encode(augment(tasks[task]["test"][index]["input"], *aug), side))
        preds.append(encode(augment(grid, *aug), side))
        ids.append(names.index(aug_name(task, aug)))
        qs.append(q)
    return (np.stack(inputs), np.array(ids, np.int32), np.stack(preds), np.array(qs, np.float32))
