"""What the scorer and runner need from a built ARC dataset: test tasks, identifiers and the test-split index.

Reads only ``identifiers.json``, ``test_puzzles.json`` and ``test/`` (``dataset.json`` and the index arrays;
the inputs are memory-mapped on demand). Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trmlab.data.format import array_path, read_dataset_json, read_json
from trmlab.errors import DataError
from trmlab.evaluation.grids import AUGMENTATION_SEPARATOR


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: missing; an ARC dataset needs {what} "
                        f"(build it with `trmlab data build-arc`)")
    return read_json(path)


def _read_index(split_dir: Path, name: str) -> np.ndarray:
    path = array_path(split_dir, name)
    if not path.is_file():
        raise DataError(f"{path}: missing; the test split is incomplete (rebuild the dataset)")
    return np.load(path, allow_pickle=False)


@dataclass
class ArcTestSet:
    """An ARC dataset's test side, with the row selection used by ``max_tasks`` / ``num_augmentations``.

    ``task_ids`` are the test tasks in ``test_puzzles.json`` order. Per identifier (arrays of
    ``num_puzzle_identifiers`` entries, −1 where the identifier is no test puzzle): ``position_of`` = the
    puzzle's position inside its task group in the test split (0 = the un-augmented original) and
    ``task_index_of`` = its task's index in ``task_ids``.
    """

    path: Path
    seq_len: int
    num_puzzle_identifiers: int
    identifiers: list[str]
    test_puzzles: dict[str, Any]
    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray
    position_of: np.ndarray
    task_index_of: np.ndarray

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
        ids = np.asarray(identifiers, dtype=np.int64).reshape(-1)
        blank = ids == 0
        outside = (ids < 0) | (ids >= self.num_puzzle_identifiers)
        if outside.any():
            self.task_of(int(ids[outside][0]))  # raises, naming the identifier
        position = self.position_of[ids]
        stray = ~blank & (position < 0)
        if stray.any():
            identifier = int(ids[stray][0])
            raise DataError(f"puzzle identifier {identifier} ('{self.identifiers[identifier]}') is not a "
                            f"test puzzle of {self.path}; the predictions belong to another dataset")
        index = {task: i for i, task in enumerate(self.task_ids)}
        wanted = np.zeros(len(index) + 1, dtype=bool)  # the extra last slot is never wanted (blank rows)
        wanted[[index[t] for t in tasks]] = True
        keep = ~blank & wanted[self.task_index_of[ids]]
        if num_augmentations is not None:
            keep &= position < num_augmentations
        return keep

    def row_identifiers(self) -> np.ndarray:
        """Puzzle identifier of every test example row (int32 [N])."""
        counts = np.diff(self.puzzle_indices)
        return np.repeat(self.puzzle_identifiers, counts).astype(np.int32)


def _index_arrays(root: Path, identifiers: list[str], test_puzzles: dict[str, Any],
                  puzzle_identifiers: np.ndarray, group_indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """position_of and task_index_of (see :class:`ArcTestSet`) from the test split's index arrays."""
    sizes = np.diff(group_indices)
    positions = np.arange(len(puzzle_identifiers)) - np.repeat(group_indices[:-1], sizes)
    task_index = {task: i for i, task in enumerate(test_puzzles)}
    group_tasks = [identifiers[int(puzzle_identifiers[first])].split(AUGMENTATION_SEPARATOR, 1)[0]
                   for first in group_indices[:-1]]
    unknown = sorted({t for t in group_tasks if t not in task_index})
    if unknown:
        raise DataError(f"{root}: test split holds tasks missing from test_puzzles.json: {unknown[:5]}")
    position_of = np.full(len(identifiers), -1, dtype=np.int64)
    task_index_of = np.full(len(identifiers), -1, dtype=np.int64)
    position_of[puzzle_identifiers] = positions
    task_index_of[puzzle_identifiers] = np.repeat([task_index[t] for t in group_tasks], sizes)
    return position_of, task_index_of


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
    puzzle_identifiers = _read_index(root / "test", "puzzle_identifiers")
    group_indices = _read_index(root / "test", "group_indices")
    in_range = (puzzle_identifiers >= 1) & (puzzle_identifiers < len(identifiers))
    if not in_range.all():
        raise DataError(f"{root}/test/all__puzzle_identifiers.npy holds identifiers outside 1.."
                        f"{len(identifiers) - 1}; rebuild the dataset")
    position_of, task_index_of = _index_arrays(root, identifiers, test_puzzles, puzzle_identifiers,
                                               group_indices)
    return ArcTestSet(
        path=root, seq_len=int(meta["seq_len"]), num_puzzle_identifiers=int(meta["num_puzzle_identifiers"]),
        identifiers=identifiers, test_puzzles=test_puzzles, puzzle_identifiers=puzzle_identifiers,
        puzzle_indices=_read_index(root / "test", "puzzle_indices"), group_indices=group_indices,
        position_of=position_of, task_index_of=task_index_of)
