"""The dataset, the training sampler and the test iteration (trm-reference §7.5-7.6, etrm-reference §2.3).

:class:`ArcDataset` reads one split of one or more built datasets (official layout, or the encoder layout with
``all__num_demos.npy``): inputs/labels memory-mapped, index arrays in RAM, later paths' identifiers offset by
the earlier paths' counts.

:class:`TrainSampler` reproduces the official trainer's step plan: an *iteration* is ``eval_interval`` epochs;
iteration ``k`` (per data path, counted from 1 over the run) draws from ``Generator(Philox(seed + k))`` the
concatenation of ``eval_interval`` group permutations and one augmented puzzle per group (the original is one
of the choices); ``m = min(n_items, remaining)`` items of each puzzle are packed into global batches along the
whole iteration (the rest of that puzzle is dropped) and only the iteration's short last batch is dropped. The
batch boundaries, hence :meth:`TrainSampler.batches_per_iteration`, follow from those draws alone. Which items
of a puzzle are taken (the official code: numpy's unseeded global RNG) comes from a stream seeded by
``SeedSequence([seed, iteration, 1, batch])``, so any batch can be rebuilt without replaying the ones before
it (resume).

In the encoder layout the items are queries (examples after a puzzle's ``num_demos`` demonstrations); puzzles
without queries add nothing; each item carries its puzzle's first ``max_demos`` demos.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where batches are made: reading a dataset (data inspect) needs none
    import torch

from trmlab.data.format import IGNORE_LABEL, SPLITS, array_path, read_dataset_json, read_json
from trmlab.errors import ConfigError, DataError

ENCODER_LAYOUT = "encoder"
OFFICIAL_LAYOUT = "official"


@dataclass
class _Part:
    """One dataset path's split: its metadata and arrays (indices local to the part)."""

    path: Path
    meta: dict[str, Any]
    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray
    num_demos: np.ndarray | None


def _load_index_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: missing; the dataset split is incomplete (rebuild it)")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:  # EOFError: an empty file
        raise DataError(f"{path}: not a readable .npy array ({error})") from None
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{path}: expected a 1-D integer array, found {array.dtype} {list(array.shape)}")
    return array.astype(np.int64)


def _load_grid_array(path: Path, seq_len: int) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: missing; the dataset split is incomplete (rebuild it)")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:  # EOFError: an empty file
        raise DataError(f"{path}: not a readable .npy array ({error})") from None
    if array.ndim != 2 or array.shape[1] != seq_len or not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{path}: expected an integer array [N, seq_len={seq_len}], "
                        f"found {array.dtype} {list(array.shape)}")
    return array


def _check_offsets(path: Path, name: str, offsets: np.ndarray, total: int) -> None:
    """An offsets array must start at 0, never decrease and end at ``total``."""
    if offsets.size == 0 or offsets[0] != 0 or offsets[-1] != total or np.any(np.diff(offsets) < 0):
        raise DataError(f"{array_path(path, name)}: must start at 0, be non-decreasing and end at {total} "
                        f"(found {offsets.size} entries from {offsets[:1].tolist()} to "
                        f"{offsets[-1:].tolist()})")


def _load_part(root: Path, split: str) -> _Part:
    split_dir = root / split
    if not split_dir.is_dir() and (root / "dataset.json").is_file():
        raise DataError(f"{root}: this is one split of a dataset; give the dataset directory "
                        f"{root.parent} (holding train/ and test/) instead")
    meta = read_dataset_json(split_dir)
    seq_len = int(meta["seq_len"])
    inputs = _load_grid_array(array_path(split_dir, "inputs"), seq_len)
    labels = _load_grid_array(array_path(split_dir, "labels"), seq_len)
    if labels.shape != inputs.shape:
        raise DataError(f"{split_dir}: all__inputs.npy {list(inputs.shape)} and all__labels.npy "
                        f"{list(labels.shape)} differ in shape; rebuild the dataset")
    identifiers = _load_index_array(array_path(split_dir, "puzzle_identifiers"))
    puzzle_indices = _load_index_array(array_path(split_dir, "puzzle_indices"))
    group_indices = _load_index_array(array_path(split_dir, "group_indices"))
    _check_offsets(split_dir, "puzzle_indices", puzzle_indices, inputs.shape[0])
    _check_offsets(split_dir, "group_indices", group_indices, puzzle_indices.size - 1)
    empty = np.flatnonzero(np.diff(group_indices) == 0)
    if empty.size:
        raise DataError(f"{array_path(split_dir, 'group_indices')}: group {int(empty[0])} has no puzzle; "
                        f"rebuild the dataset")
    if identifiers.size != puzzle_indices.size - 1:
        raise DataError(f"{array_path(split_dir, 'puzzle_identifiers')}: {identifiers.size} entries for "
                        f"{puzzle_indices.size - 1} puzzles")
    num_ids = int(meta["num_puzzle_identifiers"])
    if identifiers.size and (identifiers.min() < 0 or identifiers.max() >= num_ids):
        raise DataError(f"{array_path(split_dir, 'puzzle_identifiers')}: identifiers must lie in "
                        f"[0, num_puzzle_identifiers={num_ids}), found "
                        f"{identifiers.min()}..{identifiers.max()}")
    num_demos = None
    if meta.get("layout", OFFICIAL_LAYOUT) == ENCODER_LAYOUT:
        num_demos = _load_index_array(array_path(split_dir, "num_demos"))
        sizes = np.diff(puzzle_indices)
        if num_demos.size != sizes.size or np.any(num_demos < 0) or np.any(num_demos > sizes):
            raise DataError(f"{array_path(split_dir, 'num_demos')}: needs one count per puzzle "
                            f"({sizes.size}) between 0 and the puzzle's example count")
    elif meta.get("layout", OFFICIAL_LAYOUT) != OFFICIAL_LAYOUT:
        raise DataError(f"{split_dir / 'dataset.json'}: unknown layout '{meta['layout']}' "
                        f"(expected '{ENCODER_LAYOUT}' or none)")
    return _Part(root, meta, inputs, labels, identifiers, puzzle_indices, group_indices, num_demos)


class ArcDataset:
    """One split (``train`` or ``test``) of one or more built datasets, concatenated in the given order.

    Attributes: ``seq_len``, ``vocab_size``, ``num_puzzle_identifiers`` (summed over paths), ``total_groups``,
    ``layout`` (``"official"`` or ``"encoder"``), ``ignore_label_id``, and the concatenated index arrays
    ``puzzle_identifiers`` / ``puzzle_indices`` / ``group_indices`` / ``num_demos`` (int64, global offsets)
    and ``puzzle_sizes`` (examples per puzzle).
    """

    def __init__(self, paths: list[str] | list[Path] | str | Path, split: str) -> None:
        if split not in SPLITS:
            raise ConfigError(f"dataset split must be one of {SPLITS}, got '{split}'")
        if isinstance(paths, str | Path):
            paths = [paths]
        if not paths:
            raise ConfigError("no dataset path given (set data_paths)")
        self.paths = [Path(p) for p in paths]
        self.split = split
        self._parts = [_load_part(p, split) for p in self.paths]
        self._check_agreement()
        first = self._parts[0].meta
        self.seq_len = int(first["seq_len"])
        self.vocab_size = int(first["vocab_size"])
        self.ignore_label_id = first.get("ignore_label_id")
        self.layout = first.get("layout", OFFICIAL_LAYOUT)
        self.num_puzzle_identifiers = sum(int(p.meta["num_puzzle_identifiers"]) for p in self._parts)
        self.total_groups = sum(p.group_indices.size - 1 for p in self._parts)
        self._concatenate()

    def _check_agreement(self) -> None:
        first = self._parts[0]
        for part in self._parts[1:]:
            for key in ("seq_len", "vocab_size", "pad_id", "ignore_label_id", "layout"):
                if first.meta.get(key) != part.meta.get(key):
                    raise DataError(f"data paths disagree on '{key}': {first.path} has "
                                    f"{first.meta.get(key)!r}, "
                                    f"{part.path} has {part.meta.get(key)!r}; only datasets with the same "
                                    f"format can be combined")

    def _concatenate(self) -> None:
        """Global index arrays; identifiers of later paths are offset by the earlier paths' counts."""
        ids, puzzles, groups, demos = [], [np.zeros(1, np.int64)], [np.zeros(1, np.int64)], []
        example_starts, id_offset, ex_offset, pz_offset = [], 0, 0, 0
        self.group_ranges: list[tuple[int, int]] = []  # per path: its (first, end) global group ids
        for part in self._parts:
            first_group = self.group_ranges[-1][1] if self.group_ranges else 0
            self.group_ranges.append((first_group, first_group + part.group_indices.size - 1))
            ids.append(part.puzzle_identifiers + id_offset)
            puzzles.append(part.puzzle_indices[1:] + ex_offset)
            groups.append(part.group_indices[1:] + pz_offset)
            if part.num_demos is not None:
                demos.append(part.num_demos)
            example_starts.append(ex_offset)
            id_offset += int(part.meta["num_puzzle_identifiers"])
            ex_offset += part.inputs.shape[0]
            pz_offset += part.puzzle_indices.size - 1
        self.puzzle_identifiers = np.concatenate(ids)
        self.puzzle_indices = np.concatenate(puzzles)
        self.puzzle_sizes = np.diff(self.puzzle_indices)  # examples per puzzle (read per batch: once here)
        self.group_indices = np.concatenate(groups)
        self.num_demos = np.concatenate(demos) if self.layout == ENCODER_LAYOUT else None
        self._example_starts = np.asarray([*example_starts, ex_offset], np.int64)

    # -- sizes -----------------------------------------------------------------------------------------------
    @property
    def num_examples(self) -> int:
        return int(self._example_starts[-1])

    @property
    def num_puzzles(self) -> int:
        return int(self.puzzle_indices.size - 1)

    @property
    def max_demos(self) -> int:
        """Largest demo count of any puzzle (0 in the official layout)."""
        return int(self.num_demos.max()) if self.num_demos is not None and self.num_demos.size else 0

    def item_counts(self, leave_one_out: bool = False) -> np.ndarray:
        """Per puzzle, how many items it offers: all examples, or (encoder layout, unless ``leave_one_out``)
        its queries."""
        sizes = self.puzzle_sizes
        return sizes - self.num_demos if self.num_demos is not None and not leave_one_out else sizes

    def item_starts(self, leave_one_out: bool = False) -> np.ndarray:
        """Per puzzle, the global index of its first item (see :meth:`item_counts`)."""
        starts = self.puzzle_indices[:-1]
        return starts + self.num_demos if self.num_demos is not None and not leave_one_out else starts

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """(example index, puzzle index) of every item in file order (queries only in the encoder layout)."""
        counts = self.item_counts()
        puzzles = np.repeat(np.arange(self.num_puzzles, dtype=np.int64), counts)
        starts = self.item_starts()
        # Position of each item inside its puzzle's item run, without a Python loop.
        within = np.arange(puzzles.size, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        return starts[puzzles] + within, puzzles

    # -- reading ---------------------------------------------------------------------------------------------
    def gather(self, name: str, examples: np.ndarray) -> np.ndarray:
        """Rows of ``inputs`` or ``labels`` for global example indices, as int32 [len(examples), seq_len]."""
        examples = np.asarray(examples, dtype=np.int64)
        out = np.empty((examples.size, self.seq_len), dtype=np.int32)
        part_of = np.searchsorted(self._example_starts, examples, side="right") - 1
        for index in np.unique(part_of):
            rows = part_of == index
            local = examples[rows] - self._example_starts[index]
            array = getattr(self._parts[index], name)
            # Sorted reads are sequential on the memory map; scatter back into the requested order.
            order = np.argsort(local, kind="stable")
            chunk = np.empty((local.size, self.seq_len), dtype=np.int32)
            chunk[order] = array[local[order]]
            out[rows] = chunk
        return out

    def identifiers(self) -> list[str]:
        """Identifier names of all paths concatenated (index = offset identifier), from identifiers.json."""
        names: list[str] = []
        for part in self._parts:
            path = part.path / "identifiers.json"
            if not path.is_file():
                raise DataError(f"{path}: missing; it maps puzzle identifiers to task names "
                                f"(rebuild the dataset)")
            part_names = read_json(path)
            expected = int(part.meta["num_puzzle_identifiers"])
            if not isinstance(part_names, list) or len(part_names) != expected:
                raise DataError(f"{path}: expected a list of {expected} names (num_puzzle_identifiers in "
                                f"{part.path / self.split / 'dataset.json'})")
            names.extend(part_names)
        return names

    def fingerprint(self) -> str:
        """sha256 over each path's split dataset.json and identifiers.json (in path order)."""
        digest = hashlib.sha256()
        for part in self._parts:
            for path in (part.path / self.split / "dataset.json", part.path / "identifiers.json"):
                digest.update(str(path.relative_to(part.path)).encode())
                digest.update(path.read_bytes() if path.is_file() else b"<missing>")
        return digest.hexdigest()

    def __repr__(self) -> str:
        return (f"ArcDataset({[str(p) for p in self.paths]}, split={self.split!r}, layout={self.layout!r}, "
                f"groups={self.total_groups}, puzzles={self.num_puzzles}, examples={self.num_examples})")


# -- collation -----------------------------------------------------------------------------------------------
def collate_items(dataset: ArcDataset, examples: np.ndarray, puzzles: np.ndarray, max_demos: int,
                  real: np.ndarray | None = None, leave_one_out: bool = False) -> dict[str, torch.Tensor]:
    """Batch tensors for items (global example index, puzzle index), e.g. from :meth:`ArcDataset.items`.

    Rows where ``real`` is False are padding: inputs 0, labels −100, identifier 0, no demos (their example
    and puzzle entries are ignored). ``leave_one_out`` (encoder layout): an item's demos are the other
    examples of its puzzle instead of the puzzle's demos (see :func:`demo_examples`).
    """
    import torch

    if real is None:
        real = np.ones(examples.size, dtype=bool)
    size = examples.size
    inputs = np.zeros((size, dataset.seq_len), dtype=np.int32)
    labels = np.full((size, dataset.seq_len), IGNORE_LABEL, dtype=np.int64)
    identifiers = np.zeros(size, dtype=np.int32)
    if real.any():
        inputs[real] = dataset.gather("inputs", examples[real])
        raw = dataset.gather("labels", examples[real]).astype(np.int64)
        if dataset.ignore_label_id is not None:
            raw[raw == dataset.ignore_label_id] = IGNORE_LABEL
        labels[real] = raw
        identifiers[real] = dataset.puzzle_identifiers[puzzles[real]]
    batch = {"inputs": torch.from_numpy(inputs), "labels": torch.from_numpy(labels),
             "puzzle_identifiers": torch.from_numpy(identifiers)}
    if dataset.layout == ENCODER_LAYOUT:
        batch.update(_collate_demos(dataset, examples, puzzles, real, max_demos, leave_one_out))
    return batch


def demo_examples(dataset: ArcDataset, examples: np.ndarray, puzzles: np.ndarray, real: np.ndarray,
                  max_demos: int, leave_one_out: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(global example index [B, max_demos], mask [B, max_demos]) of each item's demonstrations.

    Fixed: the puzzle's first min(num_demos, max_demos) examples (its demos). Leave-one-out: the puzzle's
    other examples, in cyclic order starting after the item (so the item itself is never among them and
    every other example gets a turn when there are more than ``max_demos``), min(size − 1, max_demos) of them.
    """
    slots = np.arange(max_demos)[None, :]
    starts = dataset.puzzle_indices[puzzles][:, None]
    if not leave_one_out:
        counts = np.where(real, np.minimum(dataset.num_demos[puzzles], max_demos), 0)
        return starts + slots, slots < counts[:, None]
    sizes = dataset.puzzle_sizes[puzzles][:, None]
    counts = np.where(real, np.minimum(sizes[:, 0] - 1, max_demos), 0)
    offsets = (examples[:, None] - starts + 1 + slots) % np.maximum(sizes, 1)
    return starts + offsets, slots < counts[:, None]


def _collate_demos(dataset: ArcDataset, examples: np.ndarray, puzzles: np.ndarray, real: np.ndarray,
                   max_demos: int, leave_one_out: bool) -> dict[str, torch.Tensor]:
    """demo_inputs/demo_labels int32 [B, max_demos, seq_len] (PAD-filled, raw labels), demo_mask bool."""
    import torch

    size = puzzles.size
    indices, mask = demo_examples(dataset, examples, puzzles, real, max_demos, leave_one_out)
    chosen = indices[mask]
    demo_inputs = np.zeros((size * max_demos, dataset.seq_len), dtype=np.int32)
    demo_labels = np.zeros((size * max_demos, dataset.seq_len), dtype=np.int32)
    flat = mask.reshape(-1)
    if chosen.size:
        demo_inputs[flat] = dataset.gather("inputs", chosen)
        demo_labels[flat] = dataset.gather("labels", chosen)
    shape = (size, max_demos, dataset.seq_len)
    return {"demo_inputs": torch.from_numpy(demo_inputs.reshape(shape)),
            "demo_labels": torch.from_numpy(demo_labels.reshape(shape)),
            "demo_mask": torch.from_numpy(mask)}


def _local_rows(global_batch_size: int, rank: int, world_size: int) -> slice:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is outside world_size {world_size}")
    if global_batch_size < 1 or global_batch_size % world_size:
        raise DataError(f"global_batch_size {global_batch_size} is not divisible by the world size "
                        f"{world_size}; choose a multiple of the number of ranks")
    local = global_batch_size // world_size
    return slice(rank * local, (rank + 1) * local)


def _check_max_demos(dataset: ArcDataset, max_demos: int) -> None:
    if dataset.layout == ENCODER_LAYOUT and max_demos < 1:
        raise ConfigError(f"max_demos must be ≥ 1 for the encoder layout of {dataset.paths[0]}, "
                          f"got {max_demos}")


_collate = collate_items  # the earlier private name (trmlab.evaluation imports it)


# -- training ------------------------------------------------------------------------------------------------
@dataclass
class _IterationPlan:
    """An iteration's group-level draws: the puzzle at each position of its walk, and each batch's positions.

    With several data paths the walks of the paths (one pass each) are concatenated; no batch spans two.
    """

    puzzles: np.ndarray       # chosen puzzle at each position of the walk
    batch_starts: np.ndarray  # [n_batches] first position of each batch
    batch_ends: np.ndarray    # [n_batches] last position (inclusive; its puzzle may be truncated)


def _generator(*words: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(np.random.SeedSequence(list(words))))


def _pack(sizes: np.ndarray, global_batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(first, last position) of each full batch packed from items per position; the short rest is dropped.

    A batch starting at position p fills at the first j with cumulative[j+1] − cumulative[p] ≥ B; the
    puzzle at j gives only what still fits (the rest of it is dropped) and the next batch starts at j + 1.
    """
    cumulative = np.concatenate([[0], np.cumsum(sizes)])
    # The next batch's start for a batch starting at each position (vectorised); then follow the chain.
    following = np.searchsorted(cumulative, cumulative[:-1] + global_batch_size)
    starts, position, end = [], 0, sizes.size
    while position < end and following[position] <= end:  # one step per batch, not per position
        starts.append(position)
        position = int(following[position])
    first = np.asarray(starts, np.int64)
    return first, following[first].astype(np.int64) - 1


class TrainSampler:
    """Seeded, resumable, rank-sharded training batches with the official trainer's step plan.

    An *iteration* (index 0, 1, …) covers ``epochs_per_iteration`` epochs (the official ``eval_interval``).
    For each data path in turn (one *pass*), the official loader's pass counter ``k`` (1, 2, … over the run,
    one per path per iteration) seeds ``numpy Generator(Philox(seed + k))``; the group order is the
    concatenation of ``epochs_per_iteration`` independent permutations of the path's groups, then one puzzle
    per group by ``rng.integers`` (the original is one of the choices). Global batches are packed along the
    whole pass, ``m = min(items, remaining)`` items of each puzzle (the rest of it is dropped), and only the
    pass's short last batch is dropped. Which items of a puzzle are taken (the official code: numpy's
    unseeded global RNG) comes from a stream seeded by ``(seed, iteration, batch)``, so any batch can be
    rebuilt without replaying the ones before it (resume).

    ``batches_per_iteration(i)`` is exact and computed before iterating (indices only). ``iter_iteration(i)``
    yields this rank's local batches; after ``load_state_dict(state)`` it continues with exactly the batches
    an uninterrupted run would have produced next. ``max_groups`` restricts training to the first K groups.
    """

    def __init__(self, dataset: ArcDataset, global_batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, max_demos: int = 10, max_groups: int | None = None,
                 leave_one_out: bool = False, epochs_per_iteration: int = 1) -> None:
        self._rows = _local_rows(global_batch_size, rank, world_size)
        _check_max_demos(dataset, max_demos)
        if leave_one_out and dataset.layout != ENCODER_LAYOUT:
            raise ConfigError(f"demo_sampling=leave_one_out needs the encoder layout; {dataset.paths[0]} "
                              f"is in the {dataset.layout} layout (use demo_sampling=fixed, or build the "
                              f"data with --layout encoder)")
        if not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer for the sampler, got {seed!r}")
        if epochs_per_iteration < 1:
            raise ConfigError(f"epochs per iteration (eval_interval) must be ≥ 1, got {epochs_per_iteration}")
        num_groups = dataset.total_groups
        if max_groups is not None:
            if max_groups < 1:
                raise ConfigError(f"max_train_groups must be ≥ 1, got {max_groups}")
            if max_groups > num_groups:
                raise ConfigError(f"max_train_groups={max_groups} exceeds the {num_groups} groups of "
                                  f"{[str(p) for p in dataset.paths]}")
            num_groups = max_groups
        self.dataset = dataset
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.max_demos, self.leave_one_out = max_demos, leave_one_out
        self.num_groups = num_groups
        self.epochs_per_iteration = epochs_per_iteration
        # Each path's groups (global ids), cut at max_groups; the pass counter counts every path.
        self._passes = [(first, min(end, num_groups)) for first, end in dataset.group_ranges]
        self._item_counts = dataset.item_counts(leave_one_out)
        self._item_starts = dataset.item_starts(leave_one_out)
        # An epoch takes one puzzle per group: if even the largest puzzles cannot fill a batch in an
        # iteration, no iteration can.
        largest = np.maximum.reduceat(self._item_counts, dataset.group_indices[:num_groups]) \
            if num_groups and self._item_counts.size else np.zeros(0, np.int64)
        if largest.sum() * epochs_per_iteration < global_batch_size:
            raise DataError(f"{[str(p) for p in dataset.paths]}: an iteration ({epochs_per_iteration} "
                            f"epoch(s)) of the {num_groups} training groups holds at most "
                            f"{int(largest.sum()) * epochs_per_iteration} items, less than one global batch "
                            f"({global_batch_size}); lower global_batch_size")
        self._plans: dict[int, _IterationPlan] = {}
        self._iteration, self._batch = 0, 0

    # -- plan ----------------------------------------------------------------------------------------------
    def _plan(self, iteration: int) -> _IterationPlan:
        if iteration < 0:
            raise ConfigError(f"iteration must be ≥ 0, got {iteration}")
        if iteration not in self._plans:
            if len(self._plans) >= 2:  # training moves forward iteration by iteration; plans can be large
                self._plans.pop(next(iter(self._plans)))
            self._plans[iteration] = self._make_plan(iteration)
        return self._plans[iteration]

    def _make_plan(self, iteration: int) -> _IterationPlan:
        puzzles, starts, ends, offset = [], [], [], 0
        for index, (first, end) in enumerate(self._passes):
            if end <= first:
                continue  # this path's groups are all beyond max_train_groups
            counter = iteration * len(self._passes) + index + 1  # the official loader's self._iters
            rng = np.random.Generator(np.random.Philox(self.seed + counter))
            order = first + np.concatenate([rng.permutation(end - first)
                                            for _ in range(self.epochs_per_iteration)])
            groups = self.dataset.group_indices
            chosen = rng.integers(groups[order], groups[order + 1])  # one puzzle per group, original included
            batch_starts, batch_ends = _pack(self._item_counts[chosen], self.global_batch_size)
            puzzles.append(chosen)
            starts.append(batch_starts + offset)
            ends.append(batch_ends + offset)
            offset += chosen.size
        empty = np.zeros(0, np.int64)
        return _IterationPlan(np.concatenate(puzzles or [empty]), np.concatenate(starts or [empty]),
                              np.concatenate(ends or [empty]))

    def estimated_batches(self, epochs: int) -> int:
        """The official trainer's step estimate ``int(epochs × groups × mean items per puzzle / batch)``.

        With every group of official-layout data this is exactly the official ``total_steps`` (the
        ``mean_puzzle_examples`` of the paths' dataset.json, weighted by their puzzle counts); otherwise the
        same formula over the items trained (queries in the encoder layout; the first ``max_train_groups``).
        """
        dataset = self.dataset
        if dataset.layout == OFFICIAL_LAYOUT and self.num_groups == dataset.total_groups:
            mean, total = 0.0, 0
            for part in dataset._parts:  # in the official order of operations (bit-identical float)
                mean += part.meta["mean_puzzle_examples"] * part.meta["total_puzzles"]
                total += part.meta["total_puzzles"]
            mean = mean / total
        else:
            puzzles = int(dataset.group_indices[self.num_groups])
            mean = float(self._item_counts[:puzzles].sum()) / max(puzzles, 1)
        return int(epochs * self.num_groups * mean / self.global_batch_size)

    def batches_per_iteration(self, iteration: int) -> int:
        """Exact number of batches of ``iteration`` (each pass's short last batch is dropped)."""
        return int(self._plan(iteration).batch_starts.size)

    def global_items(self, iteration: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """(item index, puzzle index) of global batch ``batch`` of ``iteration``, all ranks' rows."""
        plan = self._plan(iteration)
        rng = _generator(self.seed, iteration, 1, batch)
        examples, puzzles, remaining = [], [], self.global_batch_size
        for puzzle in plan.puzzles[plan.batch_starts[batch]: plan.batch_ends[batch] + 1]:
            count = int(self._item_counts[puzzle])
            take = min(count, remaining)
            if take == 0:
                continue  # encoder layout: a puzzle without queries contributes nothing
            examples.append(self._item_starts[puzzle] + rng.choice(count, take, replace=False))
            puzzles.append(np.full(take, puzzle, dtype=np.int64))
            remaining -= take
        return np.concatenate(examples), np.concatenate(puzzles)

    def make_batch(self, iteration: int, batch: int) -> dict[str, torch.Tensor]:
        """This rank's rows of global batch ``batch`` of ``iteration``."""
        examples, puzzles = self.global_items(iteration, batch)
        return collate_items(self.dataset, examples[self._rows], puzzles[self._rows], self.max_demos,
                             leave_one_out=self.leave_one_out)

    # -- iteration and position ------------------------------------------------------------------------------
    def iter_iteration(self, iteration: int) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's batches of ``iteration``, from the resumed position if it is the current one."""
        first = self._batch if iteration == self._iteration else 0
        count = self.batches_per_iteration(iteration)
        for batch in range(first, count):
            result = self.make_batch(iteration, batch)
            # The position names the next batch to produce: a checkpoint taken after this step resumes there.
            self._iteration, self._batch = (iteration, batch + 1) if batch + 1 < count else (iteration + 1, 0)
            yield result

    def state_dict(self) -> dict[str, int]:
        """Position of the next batch: ``{"iteration", "batch_in_iteration", "epochs_per_iteration"}``."""
        return {"iteration": self._iteration, "batch_in_iteration": self._batch,
                "epochs_per_iteration": self.epochs_per_iteration}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at a position from :meth:`state_dict`."""
        if isinstance(state, dict) and "epoch" in state:
            raise ConfigError("the checkpoint's sampler position is per epoch: it was written by a trmlab "
                              "before the official step plan (batches packed per eval_interval iteration), "
                              "so it cannot be resumed exactly; start a new run (init_from=<that checkpoint> "
                              "keeps its weights)")
        try:
            iteration, batch = int(state["iteration"]), int(state["batch_in_iteration"])
            epochs = int(state["epochs_per_iteration"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"sampler state must hold integer 'iteration', 'batch_in_iteration' and "
                              f"'epochs_per_iteration', got {state!r}") from None
        if epochs != self.epochs_per_iteration:
            raise ConfigError(f"the checkpoint's iterations have {epochs} epoch(s) but eval_interval now "
                              f"gives {self.epochs_per_iteration}; eval_interval must not change on resume")
        if iteration < 0 or not 0 <= batch <= self.batches_per_iteration(iteration):
            raise ConfigError(f"sampler state {state!r} is outside iteration {iteration}'s "
                              f"{self.batches_per_iteration(max(iteration, 0))} batches (different data or "
                              f"batch size?)")
        finished = batch == self.batches_per_iteration(iteration)
        self._iteration, self._batch = (iteration + 1, 0) if finished else (iteration, batch)


# -- evaluation ----------------------------------------------------------------------------------------------
def iter_test_batches(dataset: ArcDataset, global_batch_size: int, rank: int = 0, world_size: int = 1,
                      max_demos: int = 10) -> Iterator[tuple[dict[str, torch.Tensor], int]]:
    """Every item in file order, in chunks of ``global_batch_size``; yields ``(local batch, n_real_rows)``.

    The last chunk is padded (inputs 0, labels −100, identifier 0, no demos); real rows come first in every
    local batch. Besides the model inputs each batch carries ``example_indices`` int64 [B] (global example
    index of each row, −1 for padding) so the evaluator can tell rows apart.
    """
    import torch

    rows = _local_rows(global_batch_size, rank, world_size)
    _check_max_demos(dataset, max_demos)
    examples, puzzles = dataset.items()
    for start in range(0, examples.size, global_batch_size):
        chunk = np.arange(start, start + global_batch_size)[rows]
        real = chunk < examples.size
        safe = np.where(real, chunk, 0)
        batch_examples = np.where(real, examples[safe] if examples.size else 0, -1)
        batch_puzzles = np.where(real, puzzles[safe] if puzzles.size else 0, 0)
        batch = collate_items(dataset, batch_examples, batch_puzzles, max_demos, real)
        batch["example_indices"] = torch.from_numpy(batch_examples.astype(np.int64))
        yield batch, int(real.sum())
