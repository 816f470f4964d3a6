"""Synthetic few-shot ARC-style tasks from parameterised rule families (``trmlab data build-synthetic``).

A *rule instance* is a family plus its parameters; a *task* is an instance with 3-4 demonstration pairs and
1-2 test pairs on random small grids (≤ 10×10), all sharing the instance's parameters. Families
(``apply_rule`` defines each exactly):

- ``colour_permutation`` — ``mapping`` (10 colours, 0 = background fixed): every cell c becomes mapping[c].
- ``dihedral`` — ``transform`` 1..7 (trm-reference §7.3 ids; identity excluded): the whole grid is
  transformed.
- ``translation`` — ``dr``, ``dc`` in −3..3 (not both 0): the grid content is shifted down by dr and right by
  dc with wrap-around (a torus: cells leaving one edge re-enter at the opposite edge; the shape is unchanged).
- ``gravity`` — ``direction`` (down/up/left/right) and ``colour``: cells of that colour move as far as
  possible in the direction, stopping at the grid edge or any non-background cell; other colours are fixed
  obstacles.
- ``recolour_by_size`` — ``size_colours`` (object size 1..4 → colour): each 4-connected component of
  non-background cells is painted with the colour of its size.
- ``composition`` — ``first`` then ``second`` (each a family name with its parameters).

Splits: training, validation (for choosing settings) and held-out (for reporting only) tasks; the default
families leave ``dihedral`` out (7 instances: a held-out one is a transform training never shows, i.e.
extrapolation; ``--families dihedral ...`` builds it anyway).

Guarantees: the demos determine the test outputs (colours / object sizes of a test input occur in the demos,
and for the small enumerable families every parameter value consistent with the demos gives the same test
output). The splits are disjoint by behaviour (:func:`behaviour`: a rule's outputs on fixed probe grids):
no validation or held-out instance equals anything training shows — a training instance, a part of a
training composition, or the conjugated rule x ↦ a(rule(a⁻¹(x))) of any augmented training copy (a
translation by (1, 2) transposed is one by (2, 1); a gravity rule recoloured moves another colour) — and
validation and held-out instances differ. Training copies that would show an evaluation instance are not
drawn; evaluation tasks are augmented only by transforms that leave their rule unchanged (dihedral
transforms that commute with it, relabellings of colours it does not name), so their copies show no other
instance. Small families (translation, gravity, dihedral) reserve a sixth of their instances for each
evaluation split; the larger ones draw evaluation instances afresh.

Output (``--output-dir DIR``): ``DIR/trm`` (official TRM layout: training tasks' demos and tests in train/;
the test split holds the test pairs of validation tasks first, then of held-out tasks, then of training
tasks; evaluation identifiers never occur in train/, so TRM has no trained embedding for them),
``DIR/encoder`` (encoder layout: evaluation tasks are only in test/, demos first then queries),
``DIR/tasks.json`` (every task with family, parameters, pairs and its split) — each layout with
``identifiers.json``, ``test_puzzles.json`` and ``synthetic.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trmlab.data.build_arc import check_output_dir
from trmlab.data.format import (
    BLANK_IDENTIFIER,
    COLOR_OFFSET,
    ENCODER_ARRAY_DTYPES,
    EOS_ID,
    array_path,
    dataset_json,
    staged_directory,
    write_json,
)
from trmlab.errors import ConfigError, DataError
from trmlab.progress import add_no_progress_flag

Grid = np.ndarray
FAMILIES = ("colour_permutation", "dihedral", "translation", "gravity", "recolour_by_size", "composition")
# dihedral has 7 instances: whichever is held out is a transform training never shows (extrapolation, not
# reading a rule from demos), so it is not built unless asked for; its transforms remain composition steps.
DEFAULT_FAMILIES = tuple(f for f in FAMILIES if f != "dihedral")
DIRECTIONS = ("down", "up", "left", "right")
MAX_SHIFT = 3
MAX_OBJECT_SIZE = 4
MIN_SIDE, MAX_SIDE = 3, 10
# Compositions: first ∘ then second. Chosen so the second rule is well defined on the first's outputs.
COMPOSITION_PAIRS = (
    ("dihedral", "colour_permutation"), ("translation", "colour_permutation"),
    ("gravity", "colour_permutation"), ("gravity", "dihedral"), ("dihedral", "translation"),
    ("recolour_by_size", "dihedral"), ("recolour_by_size", "translation"),
)


# -- rule functions ------------------------------------------------------------------------------------------
def dihedral(grid: Grid, transform: int) -> Grid:
    """The 8 dihedral transforms with the official ids (trm-reference §7.3)."""
    ops: dict[int, Callable[[Grid], Grid]] = {
        0: lambda g: g, 1: np.rot90, 2: lambda g: np.rot90(g, 2), 3: lambda g: np.rot90(g, 3),
        4: np.fliplr, 5: np.flipud, 6: lambda g: g.T, 7: lambda g: np.fliplr(np.rot90(g)),
    }
    return np.ascontiguousarray(ops[transform](grid))


def _gravity_down(grid: Grid, colour: int) -> Grid:
    out = grid.copy()
    rows, cols = grid.shape
    for c in range(cols):
        floor = rows - 1  # lowest free row a falling cell can reach
        for r in range(rows - 1, -1, -1):
            value = grid[r, c]
            if value == colour:
                out[r, c] = 0
                out[floor, c] = colour
                floor -= 1
            elif value != 0:
                floor = r - 1  # an obstacle: cells above it land on top of it
    return out


# Rotate the grid so the direction points down, let cells fall, rotate back.
_TO_DOWN = {"down": 0, "up": 2, "left": 1, "right": 3}  # np.rot90 (counter-clockwise) quarter turns


def gravity(grid: Grid, direction: str, colour: int) -> Grid:
    turns = _TO_DOWN[direction]
    return np.ascontiguousarray(np.rot90(_gravity_down(np.rot90(grid, turns), colour), -turns))


def components(grid: Grid) -> list[list[tuple[int, int]]]:
    """4-connected components of non-background cells (any colours), in row-major order of first cells."""
    seen = np.zeros(grid.shape, dtype=bool)
    found = []
    for start in zip(*np.nonzero(grid)):
        if seen[start]:
            continue
        seen[start] = True
        stack, cells = [start], []
        while stack:
            r, c = stack.pop()
            cells.append((int(r), int(c)))
            for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if 0 <= nr < grid.shape[0] and 0 <= nc < grid.shape[1] and grid[nr, nc] and not seen[nr, nc]:
                    seen[nr, nc] = True
                    stack.append((nr, nc))
        found.append(cells)
    return found


def recolour_by_size(grid: Grid, size_colours: dict[str, int]) -> Grid:
    out = grid.copy()
    for cells in components(grid):
        key = str(len(cells))
        if key not in size_colours:
            raise DataError(f"recolour_by_size: an object of size {len(cells)} has no colour in "
                            f"{size_colours}")
        rows, cols = zip(*cells)
        out[list(rows), list(cols)] = size_colours[key]
    return out


def apply_rule(family: str, params: dict[str, Any], grid: Grid) -> Grid:
    """The output grid of ``family`` with ``params`` for an input grid (uint8, values 0..9)."""
    if family == "colour_permutation":
        return np.asarray(params["mapping"], dtype=np.uint8)[grid]
    if family == "dihedral":
        return dihedral(grid, params["transform"])
    if family == "translation":
        return np.roll(grid, (params["dr"], params["dc"]), axis=(0, 1))
    if family == "gravity":
        return gravity(grid, params["direction"], params["colour"])
    if family == "recolour_by_size":
        return recolour_by_size(grid, params["size_colours"])
    if family == "composition":
        middle = apply_rule(params["first"]["family"], params["first"]["params"], grid)
        return apply_rule(params["second"]["family"], params["second"]["params"], middle)
    raise ConfigError(f"unknown synthetic family '{family}' (choose from {', '.join(FAMILIES)})")


# -- random parameters ---------------------------------------------------------------------------------------
def _colours(rng: np.random.Generator, count: int) -> list[int]:
    return [int(c) for c in rng.choice(np.arange(1, 10), count, replace=False)]


def sample_params(family: str, rng: np.random.Generator) -> dict[str, Any]:
    """A random instance of ``family``."""
    if family == "colour_permutation":
        while True:
            mapping = [0, *(int(c) + 1 for c in rng.permutation(9))]
            if mapping != list(range(10)):
                return {"mapping": mapping}
    if family == "dihedral":
        return {"transform": int(rng.integers(1, 8))}
    if family == "translation":
        while True:
            dr, dc = (int(v) for v in rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=2))
            if (dr, dc) != (0, 0):
                return {"dr": dr, "dc": dc}
    if family == "gravity":
        return {"direction": DIRECTIONS[int(rng.integers(4))], "colour": int(rng.integers(1, 10))}
    if family == "recolour_by_size":
        colours = _colours(rng, MAX_OBJECT_SIZE)
        return {"size_colours": {str(size): colours[size - 1] for size in range(1, MAX_OBJECT_SIZE + 1)}}
    if family == "composition":
        first, second = COMPOSITION_PAIRS[int(rng.integers(len(COMPOSITION_PAIRS)))]
        return {"first": {"family": first, "params": sample_params(first, rng)},
                "second": {"family": second, "params": sample_params(second, rng)}}
    raise ConfigError(f"unknown synthetic family '{family}' (choose from {', '.join(FAMILIES)})")


# -- behaviour of a rule instance (what disjointness compares) ---------------------------------------------
INVERSE_DIHEDRAL = (0, 3, 2, 1, 4, 5, 6, 7)
IDENTITY_MAPPING = tuple(range(10))


@dataclass(frozen=True)
class Augmentation:
    """A dihedral transform after a colour relabelling (0 = background fixed), as the ARC builder augments."""

    transform: int = 0
    mapping: tuple[int, ...] = IDENTITY_MAPPING

    def __call__(self, grid: Grid) -> Grid:
        return dihedral(np.asarray(self.mapping, dtype=np.uint8)[grid], self.transform)

    def inverse(self, grid: Grid) -> Grid:
        return np.argsort(self.mapping).astype(np.uint8)[dihedral(grid, INVERSE_DIHEDRAL[self.transform])]

    @property
    def is_identity(self) -> bool:
        return self.transform == 0 and self.mapping == IDENTITY_MAPPING

    def puzzle_name(self, task_name: str) -> str:
        """The augmented puzzle's name, as the ARC builder writes it (the task name for the identity)."""
        if self.is_identity:
            return task_name
        return f"{task_name}|||t{self.transform}|||{''.join(str(d) for d in self.mapping)}"

    @classmethod
    def from_puzzle_name(cls, name: str) -> tuple[str, Augmentation]:
        """(task name, augmentation) of a puzzle name written by :meth:`puzzle_name`."""
        task, _, rest = name.partition("|||")
        if not rest:
            return task, cls()
        transform, digits = rest.split("|||")
        return task, cls(int(transform[1:]), tuple(int(d) for d in digits))


def _probe_grids() -> list[Grid]:
    """Fixed grids on which two rules with the same outputs count as the same instance: 7-10 cells a side
    (so every shift in -3..3 differs on the torus), separated single-colour objects of every size 1..4 in
    every colour 1..9 (so recolour_by_size applies and every gravity colour and size colour shows)."""
    rng = np.random.Generator(np.random.Philox(np.random.SeedSequence([20261128, 7])))
    shapes = ((7, 9), (9, 7), (8, 8), (10, 7), (7, 10), (9, 10), (10, 9), (8, 10))
    grids = []
    for index, shape in enumerate(shapes):
        colours = [int(c) + 1 for c in rng.permutation(9)]
        sizes = [1 + (index + k) % MAX_OBJECT_SIZE for k in range(12)]
        grids.append(_objects_grid(rng, shape, sizes, colours))
    return grids


_PROBES: list[Grid] = []


def behaviour(family: str, params: dict[str, Any], augmentation: Augmentation = Augmentation()) -> str:
    """Digest of the rule x ↦ a(rule(a⁻¹(x))) on the probe grids: the rule an augmented copy of a task shows
    (a = ``augmentation``; the identity gives the rule itself). Equal digests = the same instance."""
    if not _PROBES:
        _PROBES.extend(_probe_grids())
    digest = hashlib.sha256()
    for probe in _PROBES:
        output = augmentation(apply_rule(family, params, augmentation.inverse(probe)))
        digest.update(bytes(output.shape) + np.ascontiguousarray(output).tobytes())
    return digest.hexdigest()


def rules_shown(family: str, params: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The rules a task of this instance shows: the instance and, for a composition, each of its two parts."""
    if family != "composition":
        return [(family, params)]
    return [(family, params), *((p["family"], p["params"]) for p in (params["first"], params["second"]))]


# -- random input grids --------------------------------------------------------------------------------------
def _sparse_grid(rng: np.random.Generator, shape: tuple[int, int], palette: list[int]) -> Grid:
    grid = np.zeros(shape, dtype=np.uint8)
    density = rng.uniform(0.15, 0.4)
    filled = rng.random(shape) < density
    grid[filled] = rng.choice(palette, size=int(filled.sum()))
    return grid


def _polyomino(rng: np.random.Generator, size: int) -> list[tuple[int, int]]:
    cells = {(0, 0)}
    while len(cells) < size:
        r, c = list(cells)[int(rng.integers(len(cells)))]
        dr, dc = ((1, 0), (-1, 0), (0, 1), (0, -1))[int(rng.integers(4))]
        cells.add((r + dr, c + dc))
    min_r, min_c = min(r for r, _ in cells), min(c for _, c in cells)
    return sorted((r - min_r, c - min_c) for r, c in cells)


def _objects_grid(rng: np.random.Generator, shape: tuple[int, int], sizes: list[int],
                  colours: list[int] | None = None) -> Grid:
    """Objects of the given sizes, never 4-adjacent to each other (so components = objects); one random colour
    for all, or ``colours`` (object k gets colours[k % len(colours)])."""
    grid = np.zeros(shape, dtype=np.uint8)
    colour = int(rng.integers(1, 10))
    for k, size in enumerate(sizes):
        if colours:
            colour = colours[k % len(colours)]
        cells = _polyomino(rng, size)
        height, width = max(r for r, _ in cells) + 1, max(c for _, c in cells) + 1
        if height > shape[0] or width > shape[1]:
            continue  # a straight piece longer than the grid side
        for _ in range(30):
            r0, c0 = int(rng.integers(0, shape[0] - height + 1)), int(rng.integers(0, shape[1] - width + 1))
            placed = [(r0 + r, c0 + c) for r, c in cells]
            halo = {(r + dr, c + dc) for r, c in placed
                    for dr, dc in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))}
            if all(not (0 <= r < shape[0] and 0 <= c < shape[1]) or grid[r, c] == 0 for r, c in halo):
                for r, c in placed:
                    grid[r, c] = colour
                break
    return grid


def _random_shape(rng: np.random.Generator, max_side: int) -> tuple[int, int]:
    return int(rng.integers(MIN_SIDE, max_side + 1)), int(rng.integers(MIN_SIDE, max_side + 1))


def _input_grid(family: str, params: dict[str, Any], rng: np.random.Generator, palette: list[int],
                max_side: int) -> Grid:
    """A random input suited to the family (the first rule of a composition decides)."""
    if family == "composition":
        return _input_grid(params["first"]["family"], params["first"]["params"], rng, palette, max_side)
    shape = _random_shape(rng, max_side)
    if family == "recolour_by_size":
        area = shape[0] * shape[1]
        count = int(rng.integers(2, max(3, area // 10) + 1))
        return _objects_grid(rng, shape, [int(s) for s in rng.integers(1, MAX_OBJECT_SIZE + 1, size=count)])
    if family == "gravity":
        return _sparse_grid(rng, shape, sorted({*palette, params["colour"]}))
    return _sparse_grid(rng, shape, palette)


# -- determinacy ---------------------------------------------------------------------------------------------
def enumerable_instances(family: str) -> list[dict[str, Any]]:
    """Every instance of a small family (identities included), or [] for a family too large to list."""
    if family == "dihedral":
        return [{"transform": t} for t in range(8)]
    if family == "translation":
        return [{"dr": dr, "dc": dc} for dr in range(-MAX_SHIFT, MAX_SHIFT + 1)
                for dc in range(-MAX_SHIFT, MAX_SHIFT + 1)]
    if family == "gravity":
        return [{"direction": d, "colour": c} for d in DIRECTIONS for c in range(1, 10)]
    return []


def _colours_of(grid: Grid) -> set[int]:
    return {int(c) for c in np.unique(grid)}


def _sizes_of(grid: Grid) -> set[int]:
    return {len(cells) for cells in components(grid)}


def _step_determined(family: str, params: dict[str, Any], demos: list[tuple[Grid, Grid]],
                     tests: list[Grid]) -> bool:
    """Do the demo (input, output) pairs of one rule determine its outputs on the test inputs?"""
    if family == "colour_permutation":
        seen = set().union(*(_colours_of(i) for i, _ in demos))
        return all(_colours_of(t) <= seen for t in tests)
    if family == "recolour_by_size":
        seen = set().union(*(_sizes_of(i) for i, _ in demos))
        return all(_sizes_of(t) <= seen for t in tests)
    truth = [apply_rule(family, params, t) for t in tests]
    for candidate in enumerable_instances(family):
        consistent = all(np.array_equal(apply_rule(family, candidate, i), o) for i, o in demos)
        if consistent and any(not np.array_equal(apply_rule(family, candidate, t), y)
                              for t, y in zip(tests, truth)):
            return False
    return True


def is_determined(family: str, params: dict[str, Any], demos: list[tuple[Grid, Grid]],
                  tests: list[Grid]) -> bool:
    """True when the demos pin down the test outputs (a composition: each rule given the other)."""
    if family != "composition":
        return _step_determined(family, params, demos, tests)
    first, second = params["first"], params["second"]
    middle_demos = [(i, apply_rule(first["family"], first["params"], i)) for i, _ in demos]
    middle_tests = [apply_rule(first["family"], first["params"], t) for t in tests]
    second_demos = [(m, o) for (_, m), (_, o) in zip(middle_demos, demos)]
    return (_step_determined(first["family"], first["params"], middle_demos, tests)
            and _step_determined(second["family"], second["params"], second_demos, middle_tests))


# -- tasks ---------------------------------------------------------------------------------------------------
SPLITS = ("train", "validation", "held_out")


@dataclass
class SyntheticTask:
    """One task: a rule instance with its demonstration and test pairs, its split and its augmented copies
    (the identity first)."""

    name: str
    family: str
    params: dict[str, Any]
    split: str
    demos: list[tuple[Grid, Grid]] = field(default_factory=list)
    tests: list[tuple[Grid, Grid]] = field(default_factory=list)
    augmentations: list[Augmentation] = field(default_factory=lambda: [Augmentation()])

    def to_json(self) -> dict[str, Any]:
        pairs = lambda ps: [{"input": i.tolist(), "output": o.tolist()} for i, o in ps]  # noqa: E731
        return {"name": self.name, "family": self.family, "params": self.params, "split": self.split,
                "train": pairs(self.demos), "test": pairs(self.tests)}


def _valid_pair(family: str, grid: Grid, output: Grid, max_side: int) -> bool:
    """A useful pair: the output differs from the input (the rule visibly acts) and fits the grid bound."""
    return max(output.shape) <= max_side and not (grid.shape == output.shape and np.array_equal(grid, output))


def make_task(name: str, family: str, params: dict[str, Any], split: str, rng: np.random.Generator,
              max_side: int = MAX_SIDE, attempts: int = 200) -> SyntheticTask:
    """Draw the pairs of one task until the demos determine its test outputs."""
    for _ in range(attempts):
        palette = _colours(rng, int(rng.integers(2, 6)))
        n_demos, n_tests = int(rng.integers(3, 5)), int(rng.integers(1, 3))
        pairs = []
        for _ in range(50 * (n_demos + n_tests)):  # bounded: some instances act on few grids (tiny canvas)
            grid = _input_grid(family, params, rng, palette, max_side)
            output = apply_rule(family, params, grid)
            if _valid_pair(family, grid, output, max_side):
                pairs.append((grid, output))
            if len(pairs) == n_demos + n_tests:
                break
        demos, tests = pairs[:n_demos], pairs[n_demos:]
        if len(pairs) == n_demos + n_tests and is_determined(family, params, demos, [t for t, _ in tests]):
            return SyntheticTask(name, family, params, split, demos, tests)
    raise DataError(f"synthetic task {name} ({family} {params}): could not draw demos that determine the "
                    f"rule in {attempts} attempts; use a larger canvas")


def _reserved_pools(family: str, rng: np.random.Generator) -> dict[str, list[dict[str, Any]] | None]:
    """Instances the validation and held-out tasks draw from: a family with few instances gives each split its
    own sixth of them (at least one), so training keeps most; a large family (None) draws afresh per task."""
    space = [p for p in enumerable_instances(family) if p not in ({"transform": 0}, {"dr": 0, "dc": 0})]
    if not space:
        return {"validation": None, "held_out": None}
    order, size = rng.permutation(len(space)), max(1, len(space) // 6)
    return {"validation": [space[int(i)] for i in order[:size]],
            "held_out": [space[int(i)] for i in order[size:2 * size]]}


def _draw_instance(family: str, rng: np.random.Generator, pool: list[dict[str, Any]] | None,
                   allowed: Callable[[str, dict[str, Any]], bool], what: str) -> dict[str, Any]:
    for _ in range(1000):
        params = pool[int(rng.integers(len(pool)))] if pool else sample_params(family, rng)
        if allowed(family, params):
            return params
    raise DataError(f"synthetic family {family}: no {what} instance left that is disjoint from the other "
                    f"splits; ask for fewer tasks")


def generate_tasks(seed: int, families: list[str], train_tasks: int, eval_tasks: int,
                   max_side: int = MAX_SIDE, val_tasks: int | None = None, num_aug: int = 0
                   ) -> list[SyntheticTask]:
    """Validation, held-out, then training tasks of each family (``val_tasks`` (default ``eval_tasks``),
    ``eval_tasks``, ``train_tasks`` per family), with up to ``num_aug`` augmented copies each.

    Disjoint by construction, comparing rules by their behaviour on fixed probe grids (:func:`behaviour`):
    the validation and held-out instances differ from each other, and nothing training shows — a training
    instance, either part of a training composition, and the conjugated rule a(rule(a⁻¹(x))) of every
    augmented copy of those — equals a validation or held-out instance. Evaluation tasks are augmented only
    by transforms that leave their rule unchanged (their augmented copies show the same instance); training
    copies whose conjugated rule (or part) is an evaluation instance are not drawn.
    """
    for family in families:
        if family not in FAMILIES:
            raise ConfigError(f"unknown synthetic family '{family}' (choose from {', '.join(FAMILIES)})")
    val_tasks = eval_tasks if val_tasks is None else val_tasks
    rng = np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, 0])))
    reserved: dict[str, str] = {}  # behaviour → evaluation split

    def new_for(split: str) -> Callable[[str, dict[str, Any]], bool]:
        return lambda family, params: reserved.get(behaviour(family, params), split) == split

    def unreserved(family: str, params: dict[str, Any]) -> bool:
        return all(behaviour(f, p) not in reserved for f, p in rules_shown(family, params))

    evaluation: list[SyntheticTask] = []
    for family in families:
        pools = _reserved_pools(family, rng)
        for split, count in (("validation", val_tasks), ("held_out", eval_tasks)):
            for index in range(count):
                params = _draw_instance(family, rng, pools[split], new_for(split), split)
                reserved[behaviour(family, params)] = split
                task = make_task(f"{family}-{split.replace('_', '')}-{index:04d}", family, params, split, rng,
                                 max_side)
                task.augmentations = _augmentations(task, num_aug, rng, rule_preserving=True)
                evaluation.append(task)
    training: list[SyntheticTask] = []
    for family in families:
        for index in range(train_tasks):
            params = _draw_instance(family, rng, None, unreserved, "training")
            task = make_task(f"{family}-train-{index:04d}", family, params, "train", rng, max_side)
            task.augmentations = _augmentations(
                task, num_aug, rng, allowed=lambda a, t=task: all(
                    behaviour(f, p, a) not in reserved for f, p in rules_shown(t.family, t.params)))
            training.append(task)
    return evaluation + training


# -- augmentation (dihedral + colour permutation of 1..9, names as in the ARC builder) ---------------------
def _rule_colours(family: str, params: dict[str, Any]) -> set[int]:
    """Colours the rule treats specially (a relabelling that fixes them leaves the rule unchanged)."""
    if family == "colour_permutation":
        return {c for c, m in enumerate(params["mapping"]) if c != m}
    if family == "gravity":
        return {params["colour"]}
    if family == "recolour_by_size":
        return set(params["size_colours"].values())
    if family == "composition":
        return _rule_colours(**params["first"]) | _rule_colours(**params["second"])
    return set()


def _random_augmentation(rng: np.random.Generator, task: SyntheticTask, rule_preserving: bool
                         ) -> Augmentation:
    """Any augmentation, or (``rule_preserving``) one drawn among those that leave the rule's colours and,
    where it commutes with the rule, its geometry unchanged (callers still check the rule is unchanged)."""
    transform = int(rng.integers(0, 8))
    mapping = np.concatenate([[0], rng.permutation(np.arange(1, 10))])
    if rule_preserving:
        fixed = sorted(_rule_colours(task.family, task.params))
        free = [c for c in range(1, 10) if c not in fixed]
        mapping = np.arange(10)
        mapping[free] = rng.permutation(free)
    return Augmentation(transform, tuple(int(d) for d in mapping))


def _augmentations(task: SyntheticTask, num_aug: int, rng: np.random.Generator, *,
                   rule_preserving: bool = False, allowed: Callable[[Augmentation], bool] | None = None
                   ) -> list[Augmentation]:
    """The identity, then up to ``num_aug`` distinct augmented copies: with ``rule_preserving`` only those
    whose conjugated rule is the task's own rule, otherwise those ``allowed`` accepts."""
    own = behaviour(task.family, task.params) if rule_preserving else ""
    result = [Augmentation()]
    seen = {_task_hash(task, result[0])}
    for _ in range(5 * num_aug):
        if len(result) > num_aug:
            break
        augmentation = _random_augmentation(rng, task, rule_preserving)
        digest = _task_hash(task, augmentation)
        if digest in seen:
            continue
        if rule_preserving and behaviour(task.family, task.params, augmentation) != own:
            continue
        if allowed is not None and not allowed(augmentation):
            continue
        seen.add(digest)
        result.append(augmentation)
    return result


def _task_hash(task: SyntheticTask, transform: Callable[[Grid], Grid]) -> str:
    digest = hashlib.sha256()
    for grid_in, grid_out in task.demos + task.tests:
        for grid in (transform(grid_in), transform(grid_out)):
            digest.update(bytes(grid.shape) + np.ascontiguousarray(grid).tobytes())
    return digest.hexdigest()


# -- writing (official format) -------------------------------------------------------------------------------
def encode_grid(grid: Grid, canvas: int, r0: int = 0, c0: int = 0) -> np.ndarray:
    """Tokens of a grid at (r0, c0) on a canvas×canvas board with the EOS row/column (trm-reference §7.2)."""
    height, width = grid.shape
    if r0 < 0 or c0 < 0 or r0 + height > canvas or c0 + width > canvas:
        raise DataError(f"a {height}x{width} grid at ({r0}, {c0}) does not fit the {canvas}x{canvas} canvas")
    board = np.zeros((canvas, canvas), dtype=np.uint8)
    board[r0:r0 + height, c0:c0 + width] = grid + COLOR_OFFSET
    if r0 + height < canvas:
        board[r0 + height, c0:c0 + width] = EOS_ID
    if c0 + width < canvas:
        board[r0:r0 + height, c0 + width] = EOS_ID
    return board.reshape(-1)


@dataclass
class PuzzleRecord:
    """One puzzle of a split: its name, example grids (input, output) and how many leading ones are demos."""

    name: str
    pairs: list[tuple[Grid, Grid]]
    num_demos: int = 0


def write_split(split_dir: Path, groups: list[list[PuzzleRecord]], identifier_of: dict[str, int], canvas: int,
                num_identifiers: int, *, encoder: bool, translate: bool, rng: np.random.Generator,
                max_demos: int = 0) -> None:
    """Write one split's arrays and dataset.json; in ``translate`` mode every example but one random one per
    puzzle is placed at a random offset (input and output share it), as the official builder does."""
    split_dir.mkdir(parents=True)
    inputs, labels, identifiers, puzzle_indices, group_indices, num_demos = [], [], [], [0], [0], []
    for group in groups:
        for puzzle in group:
            keep = int(rng.integers(0, len(puzzle.pairs))) if translate else -1
            for k, (grid_in, grid_out) in enumerate(puzzle.pairs):
                r0 = c0 = 0
                if translate and k != keep:
                    r0 = int(rng.integers(0, canvas - max(grid_in.shape[0], grid_out.shape[0]) + 1))
                    c0 = int(rng.integers(0, canvas - max(grid_in.shape[1], grid_out.shape[1]) + 1))
                inputs.append(encode_grid(grid_in, canvas, r0, c0))
                labels.append(encode_grid(grid_out, canvas, r0, c0))
            puzzle_indices.append(len(inputs))
            identifiers.append(identifier_of[puzzle.name])
            num_demos.append(puzzle.num_demos)
        group_indices.append(len(identifiers))
    seq_len = canvas * canvas
    arrays = {"inputs": np.stack(inputs) if inputs else np.zeros((0, seq_len)),
              "labels": np.stack(labels) if labels else np.zeros((0, seq_len)),
              "puzzle_identifiers": identifiers, "puzzle_indices": puzzle_indices,
              "group_indices": group_indices}
    if encoder:
        arrays["num_demos"] = num_demos
    for name, values in arrays.items():
        np.save(array_path(split_dir, name), np.asarray(values, dtype=ENCODER_ARRAY_DTYPES[name]))
    extra = {"layout": "encoder", "max_demos": max_demos} if encoder else None
    write_json(split_dir / "dataset.json", dataset_json(
        seq_len=seq_len, num_puzzle_identifiers=num_identifiers, total_groups=len(groups),
        total_puzzles=len(identifiers), total_examples=len(inputs), extra=extra))


def assign_identifiers(splits: list[list[list[PuzzleRecord]]]) -> list[str]:
    """Identifier names in first-seen order over splits, groups, puzzles (0 = blank), as officially."""
    names = [BLANK_IDENTIFIER]
    index = {BLANK_IDENTIFIER: 0}
    for groups in splits:
        for group in groups:
            for puzzle in group:
                if puzzle.name not in index:
                    index[puzzle.name] = len(names)
                    names.append(puzzle.name)
    return names


def write_dataset(root: Path, train: list[list[PuzzleRecord]], test: list[list[PuzzleRecord]], canvas: int,
                  *, encoder: bool, seed: int, test_puzzles: dict[str, Any] | None = None,
                  info: dict[str, Any] | None = None) -> None:
    """Write a dataset directory (train/, test/, identifiers.json, test_puzzles.json, synthetic.json)."""
    names = assign_identifiers([train, test])
    identifier_of = {name: i for i, name in enumerate(names)}
    rng = np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, 1])))
    max_demos = max((p.num_demos for groups in (train, test) for g in groups for p in g), default=0)
    for split, groups in (("train", train), ("test", test)):
        write_split(root / split, groups, identifier_of, canvas, len(names), encoder=encoder,
                    translate=split == "train", rng=rng, max_demos=max_demos)
    write_json(root / "identifiers.json", names)
    write_json(root / "test_puzzles.json", test_puzzles or {})
    if info is not None:
        (root / "synthetic.json").write_text(json.dumps(info, indent=2) + "\n")


# -- the two layouts -----------------------------------------------------------------------------------------
def _group(task: SyntheticTask, pairs_of: Callable[[SyntheticTask], list], num_demos: int
           ) -> list[PuzzleRecord]:
    return [PuzzleRecord(a.puzzle_name(task.name), [(a(i), a(o)) for i, o in pairs_of(task)], num_demos)
            for a in task.augmentations]


def build_layouts(tasks: list[SyntheticTask], output: Path, canvas: int, seed: int, info: dict[str, Any]
                  ) -> None:
    """Write ``output/trm``, ``output/encoder`` and ``output/tasks.json`` (``output`` must be new)."""
    by_split = {split: [t for t in tasks if t.split == split] for split in SPLITS}
    training = by_split["train"]
    # Validation first, then held out, so `eval.max_tasks = <number of validation tasks>` scores validation
    # alone (and the sum of both, both evaluation splits).
    evaluated = by_split["validation"] + by_split["held_out"] + training
    test_puzzles = {t.name: {"train": [{"input": i.tolist(), "output": o.tolist()} for i, o in t.demos],
                             "test": [{"input": i.tolist(), "output": o.tolist()} for i, o in t.tests]}
                    for t in evaluated}
    demos_and_tests = lambda t: t.demos + t.tests  # noqa: E731
    tests_only = lambda t: t.tests  # noqa: E731
    trm_train = [_group(t, demos_and_tests, 0) for t in training]
    trm_test = [_group(t, tests_only, 0) for t in evaluated]
    write_dataset(output / "trm", trm_train, trm_test, canvas, encoder=False, seed=seed,
                  test_puzzles=test_puzzles, info={**info, "layout": "trm", "note": TRM_NOTE})
    enc_train = [_group(t, demos_and_tests, len(t.demos)) for t in training]
    enc_test = [_group(t, demos_and_tests, len(t.demos)) for t in evaluated]
    write_dataset(output / "encoder", enc_train, enc_test, canvas, encoder=True, seed=seed,
                  test_puzzles=test_puzzles, info={**info, "layout": "encoder", "note": ENCODER_NOTE})
    (output / "tasks.json").write_text(json.dumps({**info, "tasks": [t.to_json() for t in tasks]}) + "\n")


TRM_NOTE = ("official TRM layout. train/: every training task's demos and test pairs (with augmentations). "
            "test/: the test pairs of the validation tasks (first), the held-out tasks, then the training "
            "tasks. Validation and held-out identifiers never occur in train/, so a TRM has no trained "
            "puzzle embedding for them.")
ENCODER_NOTE = ("encoder layout: each puzzle's demos first, then its queries (all__num_demos.npy). "
                "Validation and held-out tasks occur only in test/ (validation first, then held out), "
                "followed by the training tasks (whose queries are also in train/).")


def build_synthetic(output_dir: str | Path, seed: int = 0, families: list[str] | None = None,
                    train_tasks: int = 64, eval_tasks: int = 16, canvas: int = 10, num_aug: int = 0,
                    overwrite: bool = False, log: Callable[[str], None] = print, val_tasks: int | None = None
                    ) -> dict[str, Any]:
    """Generate the tasks and write both layouts atomically into ``output_dir``; returns the summary.
    ``val_tasks`` (validation tasks per family) defaults to ``eval_tasks`` (held-out tasks per family)."""
    families = list(families or DEFAULT_FAMILIES)
    val_tasks = eval_tasks if val_tasks is None else val_tasks
    if len(set(families)) != len(families):
        raise ConfigError(f"--families lists a family twice: {families}")
    if not MIN_SIDE + 1 <= canvas <= 30:
        raise ConfigError(f"--canvas must be between {MIN_SIDE + 1} and 30, got {canvas}")
    if train_tasks < 1 or eval_tasks < 1 or val_tasks < 1 or num_aug < 0 or seed < 0:
        raise ConfigError("--train-tasks, --val-tasks and --eval-tasks must be ≥ 1, --num-aug and --seed ≥ 0")
    output = Path(output_dir)
    check_output_dir(output, overwrite)
    started = time.perf_counter()
    max_side = min(canvas, MAX_SIDE)
    tasks = generate_tasks(seed, families, train_tasks, eval_tasks, max_side, val_tasks, num_aug)
    info = {"generator": "trmlab build-synthetic", "seed": seed, "families": families, "canvas": canvas,
            "num_aug": num_aug, "train_tasks_per_family": train_tasks, "val_tasks_per_family": val_tasks,
            "eval_tasks_per_family": eval_tasks, "max_grid_side": max_side}
    with staged_directory(output, f"--output-dir {output_dir}") as staging:  # nothing half-written, ever
        build_layouts(tasks, staging, canvas, seed, info)
    summary = {"tasks": len(tasks), **{split: sum(t.split == split for t in tasks) for split in SPLITS[1:]},
               "seconds": round(time.perf_counter() - started, 2)}
    log(f"wrote {output}/trm, {output}/encoder and {output}/tasks.json: {summary['tasks']} tasks "
        f"({summary['validation']} validation, {summary['held_out']} held out) of {len(families)} families, "
        f"canvas {canvas}, num_aug {num_aug}, in {summary['seconds']} s")
    return summary


# -- CLI ---------------------------------------------------------------------------------------------------
def register_data_command(data_subparsers: argparse._SubParsersAction) -> None:
    """Add ``trmlab data build-synthetic``."""
    parser = data_subparsers.add_parser(
        "build-synthetic", help="generate few-shot tasks from rule families (a CPU-sized benchmark)",
        description="Generate ARC-style tasks from parameterised rule families and write them in the TRM "
        "layout (DIR/trm) and the encoder layout (DIR/encoder), plus DIR/tasks.json. Validation and held-out "
        "tasks are rule instances that differ from everything training shows (augmented copies and "
        "composition parts included).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--output-dir", required=True, help="directory to create")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    parser.add_argument("--families", nargs="+", default=list(DEFAULT_FAMILIES), choices=FAMILIES,
                        metavar="FAMILY", help=f"rule families: {', '.join(FAMILIES)}")
    parser.add_argument("--train-tasks", type=int, default=64, help="training tasks per family")
    parser.add_argument("--val-tasks", type=int, default=None,
                        help="validation tasks per family (default: --eval-tasks)")
    parser.add_argument("--eval-tasks", type=int, default=16, help="held-out tasks per family")
    parser.add_argument("--canvas", type=int, default=10,
                        help="canvas side (seq_len = canvas²); grids are at most min(canvas, 10) on a side")
    parser.add_argument("--num-aug", type=int, default=0,
                        help="augmented copies per task (dihedral + colour permutation, as in ARC)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --output-dir")
    add_no_progress_flag(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    build_synthetic(args.output_dir, seed=args.seed, families=args.families, train_tasks=args.train_tasks,
                    eval_tasks=args.eval_tasks, canvas=args.canvas, num_aug=args.num_aug,
                    overwrite=args.overwrite, val_tasks=args.val_tasks)
    return 0
