"""The dataset, the training sampler and the test iteration (trm-reference §7.5-7.6, etrm-reference §2.3).

:class:`ArcDataset` reads one split of one or more built datasets (official layout, or the encoder layout with
``all__num_demos.npy``): inputs/labels memory-mapped, index arrays in RAM, later paths' identifiers offset by
the earlier paths' counts.

:class:`TrainSampler` keeps the official sampling semantics — per epoch every group once in random order, one
augmented puzzle per group chosen uniformly (the original is one of the choices), ``m = min(n_examples,
remaining)`` of its examples drawn without replacement (the rest of that puzzle is dropped), global batches
filled in group order, a short last batch dropped — but every draw comes from explicitly seeded numpy Philox
generators (the official code draws the examples from numpy's unseeded global RNG). Two streams make the
position cheap:

- the *plan* stream of epoch ``e`` (``SeedSequence([seed, e, 0])``) draws the group order and each group's
  puzzle; from those alone the batch boundaries (hence :meth:`TrainSampler.batches_per_epoch`) follow exactly;
- the *example* stream of batch ``b`` of epoch ``e`` (``SeedSequence([seed, e, 1, b])``) draws the examples of
  the puzzles in that batch, so any batch can be rebuilt without replaying the ones before it (resume).

In the encoder layout the items are queries (examples after a puzzle's ``num_demos`` demonstrations); puzzles
without queries add nothing; each item carries its puzzle's first ``max_demos`` demos.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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
    except (ValueError, OSError) as error:
        raise DataError(f"{path}: not a readable .npy array ({error})") from None
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{path}: expected a 1-D integer array, found {array.dtype} {list(array.shape)}")
    return array.astype(np.int64)


def _load_grid_array(path: Path, seq_len: int) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: missing; the dataset split is incomplete (rebuild it)")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as error:
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
        for part in self._parts:
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
class _EpochPlan:
    """An epoch's group-level draws: puzzle per position in group order, and each batch's position range."""

    puzzles: np.ndarray      # [num_groups] chosen puzzle of the group at each position of the epoch's order
    batch_starts: np.ndarray  # [n_batches] first position of each batch
    batch_ends: np.ndarray    # [n_batches] last position (inclusive; its puzzle may be truncated)


def _generator(*words: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(np.random.SeedSequence(list(words))))


class TrainSampler:
    """Seeded, resumable, rank-sharded training batches with the official sampling semantics.

    ``batches_per_epoch(epoch)`` is exact and computed before iterating (indices only). ``iter_epoch(epoch)``
    yields this rank's local batches; after ``load_state_dict(state)`` it continues with exactly the batches
    an uninterrupted run would have produced next. ``max_groups`` restricts training to the first K groups.
    """

    def __init__(self, dataset: ArcDataset, global_batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, max_demos: int = 10, max_groups: int | None = None,
                 leave_one_out: bool = False) -> None:
        self._rows = _local_rows(global_batch_size, rank, world_size)
        _check_max_demos(dataset, max_demos)
        if leave_one_out and dataset.layout != ENCODER_LAYOUT:
            raise ConfigError(f"demo_sampling=leave_one_out needs the encoder layout; {dataset.paths[0]} "
                              f"is in the {dataset.layout} layout (use demo_sampling=fixed, or build the "
                              f"data with --layout encoder)")
        if not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer for the sampler, got {seed!r}")
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
        self._item_counts = dataset.item_counts(leave_one_out)
        self._item_starts = dataset.item_starts(leave_one_out)
        # An epoch takes one puzzle per group: if even the largest puzzles cannot fill a batch, no epoch can.
        largest = np.maximum.reduceat(self._item_counts, dataset.group_indices[:num_groups]) \
            if num_groups and self._item_counts.size else np.zeros(0, np.int64)
        if largest.sum() < global_batch_size:
            raise DataError(f"{[str(p) for p in dataset.paths]}: one epoch of the {num_groups} training "
                            f"groups holds at most {int(largest.sum())} items, less than one global batch "
                            f"({global_batch_size}); lower global_batch_size")
        self._plans: dict[int, _EpochPlan] = {}
        self._epoch, self._batch = 0, 0

    # -- plan ----------------------------------------------------------------------------------------------
    def _plan(self, epoch: int) -> _EpochPlan:
        if epoch < 0:
            raise ConfigError(f"epoch must be ≥ 0, got {epoch}")
        if epoch not in self._plans:
            if len(self._plans) >= 4:  # keep the few most recent: training moves forward epoch by epoch
                self._plans.pop(next(iter(self._plans)))
            self._plans[epoch] = self._make_plan(epoch)
        return self._plans[epoch]

    def _make_plan(self, epoch: int) -> _EpochPlan:
        rng = _generator(self.seed, epoch, 0)
        order = rng.permutation(self.num_groups)
        starts, ends = self.dataset.group_indices[order], self.dataset.group_indices[order + 1]
        puzzles = rng.integers(starts, ends)  # one puzzle per group, uniformly, the original included
        sizes = self._item_counts[puzzles]
        cumulative = np.concatenate([[0], np.cumsum(sizes)])
        # From start position p a batch fills at the first j with cumulative[j+1] − cumulative[p] ≥ B;
        # j = len(order) means the rest of the epoch cannot fill it (the short last batch is dropped).
        batch_starts, batch_ends, position = [], [], 0
        while position < order.size:
            fill = int(np.searchsorted(cumulative, cumulative[position] + self.global_batch_size)) - 1
            if fill >= order.size:
                break
            batch_starts.append(position)
            batch_ends.append(fill)
            position = fill + 1
        return _EpochPlan(puzzles, np.asarray(batch_starts, np.int64), np.asarray(batch_ends, np.int64))

    def batches_per_epoch(self, epoch: int) -> int:
        """Exact number of batches of ``epoch`` (the short last batch is dropped)."""
        return int(self._plan(epoch).batch_starts.size)

    def total_batches(self, epochs: int) -> int:
        """Exact number of batches (= optimizer steps) in epochs 0..epochs−1."""
        total = 0
        for epoch in range(epochs):
            total += self._make_plan(epoch).batch_starts.size if epoch not in self._plans \
                else self._plans[epoch].batch_starts.size
        return total

    def global_items(self, epoch: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """(example index, puzzle index) of the global batch ``batch`` of ``epoch``, all ranks' rows."""
        plan = self._plan(epoch)
        rng = _generator(self.seed, epoch, 1, batch)
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

    def make_batch(self, epoch: int, batch: int) -> dict[str, torch.Tensor]:
        """This rank's rows of global batch ``batch`` of ``epoch``."""
        examples, puzzles = self.global_items(epoch, batch)
        return collate_items(self.dataset, examples[self._rows], puzzles[self._rows], self.max_demos,
                             leave_one_out=self.leave_one_out)

    # -- iteration and position ------------------------------------------------------------------------------
    def iter_epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's batches of ``epoch``, from the resumed position if ``epoch`` is the current one."""
        first = self._batch if epoch == self._epoch else 0
        count = self.batches_per_epoch(epoch)
        for batch in range(first, count):
            result = self.make_batch(epoch, batch)
            # The position names the next batch to produce: a checkpoint taken after this step resumes there.
            self._epoch, self._batch = (epoch, batch + 1) if batch + 1 < count else (epoch + 1, 0)
            yield result

    def state_dict(self) -> dict[str, int]:
        """Position of the next batch: ``{"epoch", "batch_in_epoch"}``."""
        return {"epoch": self._epoch, "batch_in_epoch": self._batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at a position from :meth:`state_dict`."""
        try:
            epoch, batch = int(state["epoch"]), int(state["batch_in_epoch"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"sampler state must hold integer 'epoch' and 'batch_in_epoch', "
                              f"got {state!r}") from None
        if epoch < 0 or not 0 <= batch <= self.batches_per_epoch(epoch):
            raise ConfigError(f"sampler state {state!r} is outside epoch {epoch}'s "
                              f"{self.batches_per_epoch(max(epoch, 0))} batches (different data or batch "
                              f"size?)")
        finished = batch == self.batches_per_epoch(epoch)
        self._epoch, self._batch = (epoch + 1, 0) if finished else (epoch, batch)


# -- evaluation ----------------------------------------------------------------------------------------------
def iter_test_batches(dataset: ArcDataset, global_batch_size: int, rank: int = 0, world_size: int = 1,
                      max_demos: int = 10) -> Iterator[tuple[dict[str, torch.Tensor], int]]:
    """Every item in file order, in chunks of ``global_batch_size``; yields ``(local batch, n_real_rows)``.

    The last chunk is padded (inputs 0, labels −100, identifier 0, no demos); real rows come first in every
    local batch. Besides the model inputs each batch carries ``example_indices`` int64 [B] (global example
    index of each row, −1 for padding) so the evaluator can tell rows apart.
    """
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
