"""What the scorer and runner need from a built ARC dataset: test tasks, identifiers and the test-split index.

Reads only ``identifiers.json``, ``test_puzzles.json`` and ``test/`` (``dataset.json`` and the index arrays;
the inputs are memory-mapped on demand). Pure numpy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trmlab.data.format import array_path, read_dataset_json
from trmlab.errors import DataError
from trmlab.evaluation.grids import AUGMENTATION_SEPARATOR


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: missing; an ARC dataset needs {what} "
                        f"(build it with `trmlab data build-arc`)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None


def _read_index(split_dir: Path, name: str) -> np.ndarray:
    path = array_path(split_dir, name)
    if not path.is_file():
        raise DataError(f"{path}: missing; the test split is incomplete (rebuild the dataset)")
    return np.load(path, allow_pickle=False)


@dataclass
class ArcTestSet:
    """An ARC dataset's test side, with the row selection used by ``max_tasks`` / ``num_augmentations``.

    ``task_ids`` are the test tasks in ``test_puzzles.json`` order; ``augmentation_index[identifier]`` is the
    puzzle's position inside its task group in the test split (0 = the un-augmented original).
    """

    path: Path
    seq_len: int
    num_puzzle_identifiers: int
    identifiers: list[str]
    test_puzzles: dict[str, Any]
    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray
    augmentation_index: dict[int, int] = field(default_factory=dict)
    layout: str = "trm"

    @property
    def task_ids(self) -> list[str]:
        return list(self.test_puzzles)

    @property
    def num_rows(self) -> int:
        return int(self.puzzle_indices[-1])

    def inputs(self) -> np.ndarray:
        """The test inputs, memory-mapped (uint8 [N, seq_len])."""
        return np.load(array_path(self.path / "test", "inputs"), mmap_mode="r", allow_pickle=False)

    def task_of(self, identifier: int) -> str:
        """Original task id of a puzzle identifier (text before the first ``|||``)."""
        if not 0 < identifier < len(self.identifiers):
            raise DataError(f"puzzle identifier {identifier} is outside {self.path}/identifiers.json "
                            f"(1..{len(self.identifiers) - 1}); the predictions belong to another dataset")
        return self.identifiers[identifier].split(AUGMENTATION_SEPARATOR, 1)[0]

    def selected_tasks(self, max_tasks: int | None) -> list[str]:
        """The first ``max_tasks`` test tasks (all when None)."""
        if max_tasks is not None and max_tasks < 1:
            raise DataError(f"max_tasks must be at least 1, got {max_tasks}")
        return self.task_ids if max_tasks is None else self.task_ids[:max_tasks]

    def row_mask(self, identifiers: np.ndarray, tasks: list[str],
                 num_augmentations: int | None) -> np.ndarray:
        """True for rows (given by identifier) of a selected task within its first ``num_augmentations``.

        Blank rows (identifier 0) are False. An identifier that is not a test puzzle of this dataset is an
        error.
        """
        wanted = set(tasks)
        keep = np.zeros(len(identifiers), dtype=bool)
        for row, identifier in enumerate(np.asarray(identifiers).tolist()):
            if identifier == 0:
                continue
            position = self.augmentation_index.get(identifier)
            if position is None:
                task = self.task_of(identifier)  # raises for an identifier outside identifiers.json
                raise DataError(f"puzzle identifier {identifier} ('{self.identifiers[identifier]}', task "
                                f"{task}) is not a test puzzle of {self.path}; the predictions belong to "
                                f"another dataset")
            keep[row] = self.task_of(identifier) in wanted and (
                num_augmentations is None or position < num_augmentations)
        return keep

    def selected_rows(self, tasks: list[str], num_augmentations: int | None) -> np.ndarray:
        """Test-split example rows (file order) of the selected tasks' first ``num_augmentations`` puzzles."""
        wanted = set(tasks)
        rows: list[np.ndarray] = []
        for group in range(len(self.group_indices) - 1):
            first, end = int(self.group_indices[group]), int(self.group_indices[group + 1])
            if self.task_of(int(self.puzzle_identifiers[first])) not in wanted:
                continue
            if num_augmentations is not None:
                end = min(end, first + num_augmentations)
            rows.append(np.arange(self.puzzle_indices[first], self.puzzle_indices[end], dtype=np.int64))
        return np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)

    def row_identifiers(self) -> np.ndarray:
        """Puzzle identifier of every test example row (int32 [N])."""
        counts = np.diff(self.puzzle_indices)
        return np.repeat(self.puzzle_identifiers, counts).astype(np.int32)


def load_test_set(path: str | Path) -> ArcTestSet:
    """Open the test side of the ARC dataset at ``path`` (official layout), checking it is consistent."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: dataset directory not found (build one with `trmlab data build-arc`)")
    meta = read_dataset_json(root / "test")
    identifiers = _read_json(root / "identifiers.json", "identifiers.json")
    test_puzzles = _read_json(root / "test_puzzles.json", "test_puzzles.json (ARC test tasks with solutions)")
    if not isinstance(identifiers, list) or not isinstance(test_puzzles, dict):
        raise DataError(f"{root}: identifiers.json must be a list and test_puzzles.json an object")
    if len(identifiers) != meta["num_puzzle_identifiers"]:
        raise DataError(f"{root}/identifiers.json has {len(identifiers)} entries but test/dataset.json says "
                        f"num_puzzle_identifiers={meta['num_puzzle_identifiers']}; rebuild the dataset")
    test_set = ArcTestSet(
        path=root, seq_len=int(meta["seq_len"]), num_puzzle_identifiers=int(meta["num_puzzle_identifiers"]),
        identifiers=identifiers, test_puzzles=test_puzzles,
        puzzle_identifiers=_read_index(root / "test", "puzzle_identifiers"),
        puzzle_indices=_read_index(root / "test", "puzzle_indices"),
        group_indices=_read_index(root / "test", "group_indices"),
        layout=str(meta.get("layout", "trm")))
    for group in range(len(test_set.group_indices) - 1):
        first, end = int(test_set.group_indices[group]), int(test_set.group_indices[group + 1])
        for position, puzzle in enumerate(range(first, end)):
            test_set.augmentation_index[int(test_set.puzzle_identifiers[puzzle])] = position
    unknown = {test_set.task_of(i) for i in test_set.augmentation_index} - set(test_puzzles)
    if unknown:
        raise DataError(f"{root}: test split holds tasks missing from test_puzzles.json: "
                        f"{sorted(unknown)[:5]}")
    return test_set
