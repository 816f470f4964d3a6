"""The ARC dataset builder: the official TRM layout, byte for byte, and the encoder layout.

The official algorithm (trm-reference §7.3) is followed draw for draw replaying numpy's legacy RNG
(:class:`trmlab.data.legacy_rng.LegacyDraws`, equal to ``np.random.seed(seed)`` + ``np.random.*``):

1. per subset: load (file order), one shuffle of the task list, then per task up to ``5 * num_aug``
   augmentation trials (one ``randint(0, 8)`` and one permutation of 1..9 each), deduplicated by puzzle
   identity;
2. identifiers: train split first, groups and puzzles in order;
3. per split, group, puzzle: ``k0 = randint(0, n_examples)``, then in train ``r0``/``c0`` per example but k0.

What differs from the official code is only how the work is done (the random stream is untouched):

- Deduplication compares a cheaper key than the official sha256-of-hex-strings: sha256 of the sorted
  encodings ``bytes([h_in, w_in, h_out, w_out]) + input cells + output cells`` of the pairs. Two puzzles have
  the same official ``puzzle_hash`` exactly when these multisets are equal (both hashes are injective on them
  up to sha256 collisions), so the accepted augmentations are the same. Each task's 8 dihedral versions are
  computed once; a trial is one C-level colour lookup on a concatenated buffer, and a trial repeating an
  earlier (transform, map of the task's colours) is a known duplicate without any hashing.
- Only the augmentation plan (transform id + colour map, 11 bytes per puzzle) is kept in memory; arrays are
  encoded in vectorised blocks and streamed to ``.npy`` files whose header (numpy's own) is written first, so
  peak memory does not grow with ``num_aug`` and the files equal ``np.save``'s byte for byte.
- The output is written into a temporary sibling directory and renamed into place at the end.

Encoder layout (``layout="encoder"``, etrm-reference §2 with fixes): test-set tasks go entirely to ``test/``
(none of their pairs reach ``train/``), every other task entirely to ``train/``; within a puzzle the demos
(``"train"`` pairs) come first, then the queries (``"test"`` pairs); ``all__num_demos.npy`` gives the demo
count per puzzle. Demos are stored once per augmented puzzle, untranslated at (0, 0) (they are context, a
fixed random offset per stored copy would add nothing); in ``train/`` the queries follow the official
translation rule among themselves (one query at (0, 0), the others at random offsets). The same
augmentation/dedup/identifier machinery is used, so augmentations are identical to a TRM-layout build
from the same inputs.
"""

from __future__ import annotations

import hashlib
import json
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trmlab.data import format as fmt
from trmlab.data.augment import NUM_DIHEDRAL, SEPARATOR, dihedral
from trmlab.data.legacy_rng import LegacyDraws
from trmlab.data.sources import ArcTask, load_subsets
from trmlab.errors import ConfigError, DataError
from trmlab.progress import Progress

RETRIES_FACTOR = 5  # official: up to 5 * num_aug augmentation trials per task
_TRANSLATE_TAIL = bytes(range(10, 256))  # bytes.translate table entries beyond the 10 colours (never hit)
IDENTITY_MAP = np.arange(10, dtype=np.uint8)
SWAPS_AXES = (False, True, False, True, False, False, True, True)  # dihedral ids that exchange rows/columns
BLOCK_ROWS = 8192  # examples encoded per vectorised block (bounds memory independently of num_aug)

Pair = tuple[np.ndarray, np.ndarray]


@dataclass
class BuildOptions:
    """Options of :func:`build_arc` (names and defaults of the official builder where they exist)."""

    output_dir: str
    input_file_prefix: str | None = None
    source: str | None = None
    subsets: list[str] = field(default_factory=lambda: ["training", "evaluation", "concept"])
    test_set_name: str = "evaluation"
    num_aug: int = 1000
    seed: int = 42
    puzzle_identifiers_start: int = 1
    layout: str = "trm"
    canvas: int = 30
    max_tasks_per_subset: list[int] | None = None
    count_only: bool = False
    overwrite: bool = False


@dataclass
class Group:
    """One task and its augmentation plan: puzzle p is ``dihedral(colour_maps[p][grid], transforms[p])``."""

    task: ArcTask
    splits: dict[str, list[Pair]]
    num_demos: dict[str, int]
    transforms: np.ndarray
    colour_maps: np.ndarray
    first_id: int = -1

    @property
    def num_puzzles(self) -> int:
        return len(self.transforms)

    def names(self) -> list[str]:
        """Puzzle names in order: the task id, then ``<id>|||t<t>|||<digits>`` per augmentation."""
        task_id = self.task.task_id
        digits = (self.colour_maps + np.uint8(ord("0"))).tobytes().decode("ascii")  # 10 per puzzle
        return [task_id] + [f"{task_id}{SEPARATOR}t{t}{SEPARATOR}{digits[10 * p:10 * p + 10]}"
                            for p, t in enumerate(self.transforms.tolist()) if p > 0]


@dataclass
class SplitCounts:
    """Groups (tasks), puzzles (task x augmentation) and examples (pairs) of one split."""

    groups: int = 0
    puzzles: int = 0
    examples: int = 0


@dataclass
class BuildSummary:
    """What a build produced (also printed by the CLI)."""

    num_identifiers: int
    splits: dict[str, SplitCounts]
    tasks_per_subset: dict[str, int]
    skipped_tasks: dict[str, list[str]]
    dummy_outputs: int
    seconds: float
    output_dir: str | None


def validate_options(options: BuildOptions) -> None:
    """Option checks that need no data (bad values are ConfigErrors naming the option)."""
    if options.layout not in ("trm", "encoder"):
        raise ConfigError(f"--layout {options.layout!r}: choose trm or encoder")
    if options.num_aug < 0:
        raise ConfigError(f"--num-aug {options.num_aug}: must be >= 0")
    if options.puzzle_identifiers_start < 1:
        raise ConfigError(f"--puzzle-identifiers-start {options.puzzle_identifiers_start}: must be >= 1 "
                          f"(identifier 0 is the blank puzzle)")
    if not 1 <= options.canvas <= 255:
        raise ConfigError(f"--canvas {options.canvas}: must be 1..255 (30 = official)")
    if not options.subsets:
        raise ConfigError("--subsets: give at least one subset")
    if options.test_set_name not in options.subsets:
        raise ConfigError(f"--test-set-name {options.test_set_name!r} is not one of --subsets "
                          f"{' '.join(options.subsets)}; the test split would be empty")
    if options.subsets[0] == options.test_set_name and len(options.subsets) > 1:
        # Official: the split order would then follow set ordering (unstable); keep the train split first.
        raise ConfigError(f"--subsets must not start with the test set {options.test_set_name!r} (the "
                          f"official builder's split order is undefined then); list it after a training "
                          f"subset")
    limits = options.max_tasks_per_subset
    if limits is not None and (len(limits) not in (1, len(options.subsets)) or any(k < 1 for k in limits)):
        raise ConfigError(f"--max-tasks-per-subset {' '.join(map(str, limits))}: give one K >= 1, or one per "
                          f"subset ({len(options.subsets)})")
    if options.seed < 0 or options.seed >= 2**32:
        raise ConfigError(f"--seed {options.seed}: numpy's legacy RNG takes 0 <= seed < 2**32")


def _limits(options: BuildOptions) -> list[int | None]:
    limits = options.max_tasks_per_subset
    if limits is None:
        return [None] * len(options.subsets)
    return list(limits) * len(options.subsets) if len(limits) == 1 else list(limits)


def check_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse a non-empty existing output directory unless ``overwrite``."""
    if path.exists():
        if not path.is_dir():
            raise DataError(f"--output-dir {path}: exists and is not a directory")
        if any(path.iterdir()) and not overwrite:
            raise DataError(f"--output-dir {path}: exists and is not empty; pass --overwrite to replace it")


# ----------------------------------------------------------------------------------------------------------
# Phase 1: routing and augmentation (the first part of the random stream)


def route_pairs(task: ArcTask, is_test_subset: bool, layout: str
                ) -> tuple[dict[str, list[Pair]], dict[str, int]]:
    """Examples per split for one task, and (encoder layout) the number of leading demos per split."""
    splits: dict[str, list[Pair]] = {}
    if layout == "trm":
        # Official: walk the task's keys in JSON order; test-set "test" pairs → test, everything else → train.
        for kind, pairs in task.pairs.items():
            dest = "test" if is_test_subset and kind == "test" else "train"
            splits.setdefault(dest, []).extend(pairs)
        return {s: splits[s] for s in fmt.SPLITS if splits.get(s)}, {}
    dest = "test" if is_test_subset else "train"
    demos, queries = task.pairs["train"], task.pairs["test"]
    return {dest: demos + queries}, {dest: len(demos)}


class _DedupTable:
    """The 8 dihedral versions of all of a task's grids, concatenated as bytes, for fast exact puzzle keys."""

    def __init__(self, pairs: list[Pair]):
        self.buffers: list[bytes] = []
        self.spans: list[list[tuple[bytes, int, int]]] = []
        for t in range(NUM_DIHEDRAL):
            chunks, spans, position = [], [], 0
            for grid_in, grid_out in pairs:
                a, b = dihedral(grid_in, t), dihedral(grid_out, t)
                chunks += [a.ravel(), b.ravel()]
                spans.append((bytes((*a.shape, *b.shape)), position, position + a.size + b.size))
                position += a.size + b.size
            self.buffers.append(np.concatenate(chunks).tobytes())
            self.spans.append(spans)

    def key(self, t: int, colour_map: Sequence[int] | np.ndarray) -> bytes:
        """Identity of the puzzle under (t, colour map): equal keys ⇔ equal official puzzle_hash.

        sha256 of the sorted, self-delimiting pair encodings (shape header, then cells): a 32-byte digest
        keeps the per-task ``seen`` set small whatever num_aug (sha256 collisions are as negligible as for
        the official hash).
        """
        cells = self.buffers[t].translate(bytes(colour_map) + _TRANSLATE_TAIL)  # colour lookup in C
        return hashlib.sha256(b"".join(sorted([shape + cells[start:end]
                                               for shape, start, end in self.spans[t]]))).digest()


def augment_task(draws: LegacyDraws, pairs: list[Pair], num_aug: int) -> tuple[np.ndarray, np.ndarray]:
    """Official augmentation trials for one task → (transform ids [P], colour maps [P, 10]); row 0 = original.

    A trial whose (transform, colours the task uses → new colours) repeats an earlier trial's gives the same
    puzzle, so it is a duplicate without computing its key; tasks with few colours repeat often.
    """
    table = _DedupTable(pairs)
    used = np.unique(np.frombuffer(table.buffers[0], dtype=np.uint8)).tolist()
    restrict = operator.itemgetter(*used) if len(used) > 1 else (lambda colour_map: colour_map[used[0]])
    seen = {table.key(0, IDENTITY_MAP)}
    tried = {(0, restrict(IDENTITY_MAP.tolist()))}
    transforms, maps = [0], [IDENTITY_MAP.tolist()]
    if num_aug > 0:
        for _ in range(RETRIES_FACTOR * num_aug):
            t, colour_map = draws.augmentation()
            short = (t, restrict(colour_map))
            if short not in tried:
                tried.add(short)
                key = table.key(t, colour_map)
                if key not in seen:
                    seen.add(key)
                    transforms.append(t)
                    maps.append(colour_map)
                    if len(transforms) >= num_aug + 1:
                        break
    return np.array(transforms, dtype=np.uint8), np.array(maps, dtype=np.uint8)


def plan_groups(draws: LegacyDraws, subsets: list[list[ArcTask]], options: BuildOptions,
                log: Callable[[str], None]
                ) -> tuple[dict[str, list[Group]], list[ArcTask], dict[str, list[str]]]:
    """Shuffle and augment every subset in order → groups per split, test-set tasks (shuffled), skipped ids.
    """
    groups: dict[str, list[Group]] = {split: [] for split in fmt.SPLITS}
    test_tasks: list[ArcTask] = []
    skipped: dict[str, list[str]] = {}
    with Progress("augmenting", sum(len(tasks) for tasks in subsets), unit="tasks") as progress:
        for name, tasks in zip(options.subsets, subsets):
            is_test = name == options.test_set_name
            progress.set_status(name)
            for index in draws.shuffle_order(len(tasks)):  # the official shuffle of the (id, task) list
                task = tasks[index]
                progress.update()
                if task.max_side > options.canvas:
                    skipped.setdefault(name, []).append(task.task_id)
                    continue
                splits, num_demos = route_pairs(task, is_test, options.layout)
                all_pairs = [pair for pairs in splits.values() for pair in pairs]
                transforms, maps = augment_task(draws, all_pairs, options.num_aug)
                if is_test:
                    test_tasks.append(task)
                for split in splits:
                    groups[split].append(Group(task, splits, num_demos, transforms, maps))
            note = (f", {len(skipped[name])} skipped (a grid larger than the {options.canvas}x"
                    f"{options.canvas} canvas)") if name in skipped else ""
            log(f"  {name}: {len(tasks)} tasks{note}")
    return groups, test_tasks, skipped


def assign_identifiers(groups: dict[str, list[Group]], start: int) -> int:
    """Official order: train split first, then test; a task's puzzles get consecutive ids. Returns the count.

    Task ids are unique across subsets and a name embeds its task id, so a name was seen before exactly when
    its task's group was already numbered in an earlier split.
    """
    first_ids: dict[str, int] = {}
    next_id = start
    for split in fmt.SPLITS:
        for group in groups[split]:
            task_id = group.task.task_id
            if task_id not in first_ids:
                first_ids[task_id] = next_id
                next_id += group.num_puzzles
            group.first_id = first_ids[task_id]
    return next_id


# ----------------------------------------------------------------------------------------------------------
# Phase 2: translation draws and the arrays (the rest of the random stream)


def draw_offsets(draws: LegacyDraws, group: Group, split: str, options: BuildOptions
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Row/column offsets [P, E] of each example of each puzzle of ``group`` in ``split`` (official draws).

    TRM layout: per puzzle ``k0`` is drawn in both splits; in train every example but k0 gets ``r0`` then
    ``c0``.
    Encoder layout: demos stay at (0, 0); in train the queries follow that rule among themselves; test draws
    nothing.
    """
    pairs = group.splits[split]
    n = len(pairs)
    canvas = options.canvas
    # Offset ranges per example (randint high), for transforms that keep / swap the axes.
    max_h = [max(i.shape[0], o.shape[0]) for i, o in pairs]
    max_w = [max(i.shape[1], o.shape[1]) for i, o in pairs]
    range_h = [canvas - h + 1 for h in max_h]
    range_w = [canvas - w + 1 for w in max_w]
    ranges = {False: (range_h, range_w), True: (range_w, range_h)}
    transforms = group.transforms.tolist()
    rows = np.zeros((group.num_puzzles, n), dtype=np.int64)
    cols = np.zeros((group.num_puzzles, n), dtype=np.int64)
    if options.layout == "trm":
        flat_rows, flat_cols = draws.offsets(n, transforms, ranges, SWAPS_AXES, translate=split == "train")
        rows[:], cols[:] = np.reshape(flat_rows, rows.shape), np.reshape(flat_cols, cols.shape)
        return rows, cols
    first_query = group.num_demos[split]
    if split == "train" and n > first_query:
        query_ranges = {key: (rr[first_query:], cc[first_query:]) for key, (rr, cc) in ranges.items()}
        flat_rows, flat_cols = draws.offsets(n - first_query, transforms, query_ranges, SWAPS_AXES, True)
        rows[:, first_query:] = np.reshape(flat_rows, (group.num_puzzles, n - first_query))
        cols[:, first_query:] = np.reshape(flat_cols, (group.num_puzzles, n - first_query))
    return rows, cols


def _windows(block: np.ndarray, canvas: int, h: int, w: int) -> np.ndarray:
    """Writable view [rows, canvas-h+1, canvas-w+1, h, w] of a block of flat canvases: ``[m, r, c]`` is the
    h x w window of example m whose top-left corner is (r, c). Assigning through it with index arrays over
    the first three axes copies whole windows (numpy loops over examples, not over cells)."""
    rows, stride = block.shape[0], block.strides[0]
    return np.lib.stride_tricks.as_strided(block, shape=(rows, canvas - h + 1, canvas - w + 1, h, w),
                                           strides=(stride, canvas, 1, canvas, 1), writeable=True)


def encode_puzzles(group: Group, split: str, puzzles: slice, rows: np.ndarray, cols: np.ndarray,
                   canvas: int, scratch: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and labels [len(puzzles) * E, canvas²] uint8 of a range of the group's puzzles (vectorised).

    Each grid is stamped with its EOS row below and EOS column to its right (each only where it fits on the
    canvas; the corner cell stays PAD) in one window copy per example. ``scratch`` (uint8 [2, >= rows,
    canvas²]) is reused for the result when given: fresh zeroed pages for every block cost kernel time (page
    faults) and grow the peak RSS.
    """
    pairs = group.splits[split]
    n = len(pairs)
    transforms = group.transforms[puzzles]
    luts = group.colour_maps[puzzles] + np.uint8(fmt.COLOR_OFFSET)  # colour → token, per puzzle
    rows, cols = rows[puzzles], cols[puzzles]
    if scratch is None:
        scratch = np.empty((2, len(transforms) * n, canvas * canvas), np.uint8)
    blocks = (scratch[0, :len(transforms) * n], scratch[1, :len(transforms) * n])
    for block in blocks:
        block.fill(fmt.PAD_ID)
    for t in np.unique(transforms).tolist():
        members = np.nonzero(transforms == t)[0]
        member_luts = luts[members]
        for k, pair in enumerate(pairs):
            r0, c0 = rows[members, k], cols[members, k]
            examples = members * n + k
            for grid, block in zip(pair, blocks):
                cells = dihedral(grid, t)
                h, w = cells.shape
                stamp = np.full((len(members), h + 1, w + 1), fmt.PAD_ID, np.uint8)
                stamp[:, :h, :w] = member_luts[:, cells]
                stamp[:, h, :w] = fmt.EOS_ID
                stamp[:, :h, w] = fmt.EOS_ID
                below, right = r0 + h < canvas, c0 + w < canvas
                for has_row in (False, True):
                    for has_col in (False, True):
                        chosen = np.nonzero((below == has_row) & (right == has_col))[0]
                        if chosen.size:
                            hh, ww = h + has_row, w + has_col
                            _windows(block, canvas, hh, ww)[examples[chosen], r0[chosen], c0[chosen]] = \
                                stamp[chosen, :hh, :ww]
    return blocks


class NpyStreamWriter:
    """Write a ``.npy`` file row block by row block; bytes equal ``np.save`` of the whole array."""

    def __init__(self, path: Path, dtype: np.dtype, shape: tuple[int, ...]):
        self.path, self.dtype, self.shape = path, np.dtype(dtype), shape
        self.rows = 0
        self.file = open(path, "wb")  # noqa: SIM115 (closed by close(), streamed across calls)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self.file, header)

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:]:
            raise RuntimeError(f"{self.path}: block shape {block.shape} does not match {self.shape}")
        self.rows += block.shape[0]
        if block.size:
            self.file.write(memoryview(block).cast("B"))  # no intermediate bytes copy

    def close(self) -> None:
        self.file.close()
        if self.rows != self.shape[0]:
            raise RuntimeError(f"{self.path}: wrote {self.rows} rows, header says {self.shape[0]}")


class _BlockWriter:
    """Writes encoded (inputs, labels) blocks on a background thread while the next block is encoded.

    File writes release the GIL, so the kernel's copy of ~0.3 GB per 40 tasks x 1000 augmentations overlaps
    the encoding. Two scratch buffers alternate: a buffer is handed out again only after its write finished.
    Used as a context manager: leaving it waits for every write and re-raises the first failure.
    """

    def __init__(self, inputs: NpyStreamWriter, labels: NpyStreamWriter, scratch_shape: tuple[int, ...]):
        from concurrent.futures import ThreadPoolExecutor

        self.inputs, self.labels = inputs, labels
        self.scratch = [np.empty(scratch_shape, np.uint8) for _ in range(2)]
        self.pending: list[Any] = [None, None]
        self.turn = 0
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trmlab-build-write")

    def free_scratch(self) -> np.ndarray:
        """The scratch buffer for the next block (waits until its previous block is on disk)."""
        if self.pending[self.turn] is not None:
            self.pending[self.turn].result()
        return self.scratch[self.turn]

    def write(self, inputs: np.ndarray, labels: np.ndarray) -> None:
        """Queue the block just encoded into :meth:`free_scratch`'s buffer."""
        self.pending[self.turn] = self.pool.submit(self._write_both, inputs, labels)
        self.turn = 1 - self.turn

    def _write_both(self, inputs: np.ndarray, labels: np.ndarray) -> None:
        self.inputs.write(inputs)
        self.labels.write(labels)

    def __enter__(self) -> _BlockWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.pool.shutdown(wait=True)  # also on failure: no write may still run when the files close
        for future in self.pending:
            if future is not None and exc_info[0] is None:
                future.result()


def split_counts(groups: list[Group], split: str) -> SplitCounts:
    """Groups, puzzles and examples of one split (known before any array is written)."""
    return SplitCounts(groups=len(groups), puzzles=sum(g.num_puzzles for g in groups),
                       examples=sum(g.num_puzzles * len(g.splits[split]) for g in groups))


def write_split(draws: LegacyDraws, split_dir: Path, split: str, groups: list[Group],
                options: BuildOptions, num_identifiers: int) -> SplitCounts:
    """Draw offsets and stream one split's arrays and dataset.json."""
    split_dir.mkdir()
    counts = split_counts(groups, split)
    size = options.canvas * options.canvas
    encoder = options.layout == "encoder"
    dtypes = fmt.ENCODER_ARRAY_DTYPES if encoder else fmt.ARRAY_DTYPES
    shapes = {"inputs": (counts.examples, size), "labels": (counts.examples, size),
              "puzzle_identifiers": (counts.puzzles,), "puzzle_indices": (counts.puzzles + 1,),
              "group_indices": (counts.groups + 1,), "num_demos": (counts.puzzles,)}
    writers = {name: NpyStreamWriter(fmt.array_path(split_dir, name), dtypes[name], shapes[name])
               for name in dtypes}
    try:
        writers["puzzle_indices"].write(np.zeros(1))
        writers["group_indices"].write(np.zeros(1))
        example_end, puzzle_end = 0, 0
        scratch_rows = max([BLOCK_ROWS] + [len(g.splits[split]) for g in groups])
        background = _BlockWriter(writers["inputs"], writers["labels"], (2, scratch_rows, size))
        with background, Progress(f"writing {split}", counts.examples, unit="examples") as progress:
            for group in groups:
                n = len(group.splits[split])
                rows, cols = draw_offsets(draws, group, split, options)
                step = max(1, BLOCK_ROWS // n)
                for start in range(0, group.num_puzzles, step):
                    background.write(*encode_puzzles(group, split, slice(start, start + step), rows, cols,
                                                     options.canvas, background.free_scratch()))
                puzzles = group.num_puzzles
                writers["puzzle_indices"].write(example_end + n * np.arange(1, puzzles + 1))
                writers["puzzle_identifiers"].write(group.first_id + np.arange(puzzles))
                if encoder:
                    writers["num_demos"].write(np.full(puzzles, group.num_demos[split]))
                example_end += n * puzzles
                puzzle_end += puzzles
                progress.update(n * puzzles)
                writers["group_indices"].write(np.array([puzzle_end]))
    finally:
        for writer in writers.values():
            writer.file.close()
    for writer in writers.values():
        writer.close()
    extra = None
    if encoder:
        extra = {"layout": "encoder", "max_demos": max((g.num_demos[split] for g in groups), default=0)}
    fmt.write_json(split_dir / "dataset.json", fmt.dataset_json(
        seq_len=size, num_puzzle_identifiers=num_identifiers, total_groups=counts.groups,
        total_puzzles=counts.puzzles, total_examples=counts.examples, extra=extra))
    return counts


def write_identifiers(path: Path, groups: dict[str, list[Group]], start: int) -> None:
    """identifiers.json streamed group by group (same bytes as json.dump of the whole list)."""
    with open(path, "w") as f:
        f.write(json.dumps([fmt.BLANK_IDENTIFIER] * start)[:-1])
        numbered = set()
        for split in fmt.SPLITS:
            for group in groups[split]:
                if group.first_id in numbered:
                    continue
                numbered.add(group.first_id)
                for name in group.names():
                    f.write(", " + json.dumps(name))
        f.write("]")


# ----------------------------------------------------------------------------------------------------------
# Driver


def build_arc(options: BuildOptions, log: Callable[[str], None] = print) -> BuildSummary:
    """Build an ARC dataset (see the module docstring). Nothing is written when ``options.count_only``.

    The output is staged in a hidden sibling directory created before anything else (a read-only or
    missing location fails at once) and renamed into place at the end; a failure or Ctrl-C removes it.
    """
    started = time.perf_counter()
    validate_options(options)
    return _build(options, lambda: load_subsets(options.subsets, prefix=options.input_file_prefix,
                                                source=options.source, limits=_limits(options)), log, started)


def build_arc_from_tasks(options: BuildOptions, subsets: list[list[ArcTask]],
                         log: Callable[[str], None] = print, started: float | None = None) -> BuildSummary:
    """:func:`build_arc` on tasks already loaded (one list per ``options.subsets`` entry)."""
    started = time.perf_counter() if started is None else started
    validate_options(options)
    return _build(options, lambda: subsets, log, started)


def _build(options: BuildOptions, load: Callable[[], list[list[ArcTask]]], log: Callable[[str], None],
           started: float) -> BuildSummary:
    output = Path(options.output_dir)
    if options.count_only:
        summary = _plan_and_write(options, load(), None, log)
    else:
        check_output_dir(output, options.overwrite)
        with fmt.staged_directory(output, f"--output-dir {output}") as partial:
            summary = _plan_and_write(options, load(), partial, log)
        summary.output_dir = str(output)
    summary.seconds = time.perf_counter() - started
    _log_summary(summary, log)
    return summary


def _plan_and_write(options: BuildOptions, subsets: list[list[ArcTask]], partial: Path | None,
                    log: Callable[[str], None]) -> BuildSummary:
    """Plan the dataset and, unless ``partial`` is None (count only), write it into ``partial``."""
    draws = LegacyDraws(options.seed)  # np.random.seed(seed) + np.random.*, replayed exactly
    log(f"augmenting ({options.num_aug} per task, seed {options.seed}, layout {options.layout}):")
    groups, test_tasks, skipped = plan_groups(draws, subsets, options, log)
    num_identifiers = assign_identifiers(groups, options.puzzle_identifiers_start)
    summary = BuildSummary(
        num_identifiers=num_identifiers, splits={s: split_counts(groups[s], s) for s in fmt.SPLITS},
        tasks_per_subset={name: len(tasks) for name, tasks in zip(options.subsets, subsets)},
        skipped_tasks=skipped, dummy_outputs=sum(t.dummy_outputs for tasks in subsets for t in tasks),
        seconds=0.0, output_dir=None)
    if not groups["test"]:
        raise DataError(f"no test examples: test set {options.test_set_name!r} contributed no test pairs")
    if partial is not None:
        for split in fmt.SPLITS:
            write_split(draws, partial / split, split, groups[split], options, num_identifiers)
        write_identifiers(partial / "identifiers.json", groups, options.puzzle_identifiers_start)
        fmt.write_json(partial / "test_puzzles.json", {task.task_id: task.raw for task in test_tasks})
    return summary


def _log_summary(summary: BuildSummary, log: Callable[[str], None]) -> None:
    if summary.dummy_outputs:
        log(f"  {summary.dummy_outputs} test pairs had no output: given the dummy [[0]] (official behaviour)")
    for split, counts in summary.splits.items():
        log(f"{split}: {counts.groups:,} groups, {counts.puzzles:,} puzzles, {counts.examples:,} examples")
    log(f"identifiers: {summary.num_identifiers:,} (including the blank)")
    where = f"wrote {summary.output_dir}" if summary.output_dir else "counted (nothing written)"
    log(f"{where} in {summary.seconds:.1f} s")
