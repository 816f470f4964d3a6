"""Loader and sampler: seeded, resumable, rank-sharded batches with the official semantics; encoder demos.

Run: .venv/bin/python -m pytest -q tests/test_dataset.py
"""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trmlab.data.dataset import ArcDataset, TrainSampler, iter_test_batches
from trmlab.data.synthetic import PuzzleRecord, write_dataset
from trmlab.errors import ConfigError, DataError

CANVAS = 5


def _random_groups(rng: np.random.Generator, n_groups: int, prefix: str, encoder: bool) -> list:
    groups = []
    for g in range(n_groups):
        puzzles = []
        for p in range(int(rng.integers(1, 4))):
            pairs = []
            for _ in range(int(rng.integers(1, 6))):
                shape = tuple(int(s) for s in rng.integers(1, CANVAS, size=2))
                pairs.append((rng.integers(0, 10, size=shape).astype(np.uint8),
                              rng.integers(0, 10, size=shape).astype(np.uint8)))
            name = f"{prefix}{g}" if p == 0 else f"{prefix}{g}|||t{p}|||0123456789"
            demos = int(rng.integers(0, len(pairs) + 1)) if encoder else 0
            puzzles.append(PuzzleRecord(name, pairs, demos))
        groups.append(puzzles)
    return groups


def make_dataset(root: Path, *, encoder: bool = False, n_groups: int = 30, seed: int = 0, prefix: str = "task"
                 ) -> Path:
    rng = np.random.default_rng(seed)
    train = _random_groups(rng, n_groups, prefix, encoder)
    test = _random_groups(rng, 5, prefix + "-eval", encoder)
    write_dataset(root, train, test, CANVAS, encoder=encoder, seed=seed)
    return root


@pytest.fixture
def official(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "official")


@pytest.fixture
def encoder(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "encoder", encoder=True)


def _epoch(sampler: TrainSampler, iteration: int) -> list[dict[str, torch.Tensor]]:
    return list(sampler.iter_iteration(iteration))


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_metadata_and_collate(official: Path):
    dataset = ArcDataset([official], "train")
    meta = json.loads((official / "train" / "dataset.json").read_text())
    assert dataset.seq_len == CANVAS * CANVAS and dataset.layout == "official"
    assert dataset.num_puzzle_identifiers == meta["num_puzzle_identifiers"]
    assert dataset.total_groups == 30 and dataset.num_puzzles == meta["total_puzzles"]
    batch = next(TrainSampler(dataset, 8, seed=0).iter_iteration(0))
    assert batch["inputs"].dtype == torch.int32 and batch["labels"].dtype == torch.int64
    assert batch["puzzle_identifiers"].dtype == torch.int32 and batch["inputs"].shape == (8, 25)
    assert set(batch) == {"inputs", "labels", "puzzle_identifiers"}
    # PAD labels become −100, every other label token is kept.
    raw = np.load(official / "train" / "all__labels.npy")
    assert (batch["labels"] != 0).all() and (batch["labels"] == -100).any()
    assert set(batch["labels"][batch["labels"] >= 0].unique().tolist()) <= set(range(1, 12))
    assert raw.dtype == np.uint8


def test_same_seed_same_batches_and_other_seed_differs(official: Path):
    dataset = ArcDataset([official], "train")
    first = _epoch(TrainSampler(dataset, 8, seed=3), 2)
    again = _epoch(TrainSampler(dataset, 8, seed=3), 2)
    other = _epoch(TrainSampler(dataset, 8, seed=4), 2)
    assert len(first) == len(again) and all(_equal(a, b) for a, b in zip(first, again))
    assert not all(_equal(a, b) for a, b in zip(first, other))


def test_batches_per_iteration_is_exact(official: Path, encoder: Path):
    for path in (official, encoder):
        sampler = TrainSampler(ArcDataset([path], "train"), 7, seed=1)
        counts = [sampler.batches_per_iteration(e) for e in range(6)]
        assert counts == [len(_epoch(sampler, e)) for e in range(6)]
        assert min(counts) >= 1
        assert len(set(counts)) > 1 or path == encoder  # depends on the draws (different puzzle sizes)


def test_official_semantics_within_an_iteration(official: Path):
    dataset = ArcDataset([official], "train")
    sampler = TrainSampler(dataset, 9, seed=5)
    sizes = np.diff(dataset.puzzle_indices)
    group_of_puzzle = np.searchsorted(dataset.group_indices, np.arange(dataset.num_puzzles), side="right") - 1
    groups_seen: list[int] = []
    for b in range(sampler.batches_per_iteration(0)):
        examples, puzzles = sampler.global_items(0, b)
        assert examples.size == 9  # full batches only
        # Puzzles come as runs; each puzzle's examples are distinct and belong to it.
        runs = [puzzles[0]] + [p for prev, p in itertools.pairwise(puzzles) if p != prev]
        for i, puzzle in enumerate(runs):
            rows = examples[puzzles == puzzle]
            assert len(set(rows.tolist())) == rows.size
            start, end = dataset.puzzle_indices[puzzle], dataset.puzzle_indices[puzzle + 1]
            assert np.all((rows >= start) & (rows < end))
            # m = min(n, remaining): every puzzle but the batch's last contributes all its examples.
            if i < len(runs) - 1:
                assert rows.size == sizes[puzzle]
        groups_seen.extend(group_of_puzzle[runs].tolist())
    assert len(groups_seen) == len(set(groups_seen))  # each group at most once per 1-epoch iteration


def test_resume_reproduces_the_uninterrupted_run(official: Path):
    dataset = ArcDataset([official], "train")
    reference = TrainSampler(dataset, 8, seed=11)
    epochs = [_epoch(reference, e) for e in range(3)]
    flat = [(e, b, batch) for e, batches in enumerate(epochs) for b, batch in enumerate(batches)]
    # Positions inside epoch 1 and exactly at the epoch boundary (epoch 0 finished).
    for stop in (len(epochs[0]) + 1, len(epochs[0]), 2):
        first = TrainSampler(dataset, 8, seed=11)
        consumed = []
        for e in range(3):
            for batch in first.iter_iteration(e):
                consumed.append(batch)
                if len(consumed) == stop:
                    break
            if len(consumed) == stop:
                break
        state = first.state_dict()
        resumed = TrainSampler(dataset, 8, seed=11)
        resumed.load_state_dict(state)
        rest = [batch for e in range(state["iteration"], 3) for batch in resumed.iter_iteration(e)]
        expected = [batch for _, _, batch in flat[stop:]]
        assert len(rest) == len(expected) and all(_equal(a, b) for a, b in zip(rest, expected))


def test_two_ranks_partition_each_global_batch(official: Path, encoder: Path):
    for path in (official, encoder):
        dataset = ArcDataset([path], "train")
        whole = _epoch(TrainSampler(dataset, 8, seed=2), 0)
        shards = [_epoch(TrainSampler(dataset, 8, seed=2, rank=r, world_size=2), 0) for r in range(2)]
        assert len(shards[0]) == len(shards[1]) == len(whole)
        for full, a, b in zip(whole, *shards):
            assert a["inputs"].shape[0] == 4
            assert all(torch.equal(torch.cat([a[k], b[k]]), full[k]) for k in full)
    with pytest.raises(DataError, match=r"not divisible"):
        TrainSampler(ArcDataset([official], "train"), 9, seed=0, world_size=2)


def test_batch_larger_than_an_epoch_is_refused(official: Path):
    dataset = ArcDataset([official], "train")
    sizes, groups = np.diff(dataset.puzzle_indices), dataset.group_indices
    per_epoch_max = sum(int(sizes[groups[g]:groups[g + 1]].max()) for g in range(dataset.total_groups))
    TrainSampler(dataset, per_epoch_max, seed=0)
    with pytest.raises(DataError, match=r"less than one global batch"):
        TrainSampler(dataset, per_epoch_max + 1, seed=0)


def test_max_groups_limits_training_to_the_first_groups(official: Path):
    dataset = ArcDataset([official], "train")
    sampler = TrainSampler(dataset, 4, seed=0, max_groups=5)
    limit = dataset.group_indices[5]
    for b in range(sampler.batches_per_iteration(0)):
        _, puzzles = sampler.global_items(0, b)
        assert puzzles.max() < limit
    with pytest.raises(ConfigError, match=r"exceeds"):
        TrainSampler(dataset, 4, seed=0, max_groups=31)


def test_multiple_paths_offset_identifiers(tmp_path: Path):
    a = make_dataset(tmp_path / "a", n_groups=4, seed=1, prefix="a")
    b = make_dataset(tmp_path / "b", n_groups=3, seed=2, prefix="b")
    one, two, both = ArcDataset([a], "train"), ArcDataset([b], "train"), ArcDataset([a, b], "train")
    assert both.num_puzzle_identifiers == one.num_puzzle_identifiers + two.num_puzzle_identifiers
    assert both.total_groups == 7 and both.num_examples == one.num_examples + two.num_examples
    assert np.array_equal(both.puzzle_identifiers,
                          np.concatenate([one.puzzle_identifiers,
                                          two.puzzle_identifiers + one.num_puzzle_identifiers]))
    names = both.identifiers()
    assert names[both.puzzle_identifiers[-1]] == two.identifiers()[two.puzzle_identifiers[-1]]
    rows = np.arange(both.num_examples)
    assert np.array_equal(both.gather("inputs", rows[::-1])[::-1],
                          np.concatenate([one.gather("inputs", np.arange(one.num_examples)),
                                          two.gather("inputs", np.arange(two.num_examples))]))
    assert one.fingerprint() != both.fingerprint() == ArcDataset([a, b], "train").fingerprint()


def test_disagreeing_paths_are_refused(tmp_path: Path):
    a = make_dataset(tmp_path / "a", n_groups=3)
    b = make_dataset(tmp_path / "b", n_groups=3)
    meta = json.loads((b / "train" / "dataset.json").read_text())
    meta["vocab_size"] = 13
    (b / "train" / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="vocab_size") as error:
        ArcDataset([a, b], "train")
    assert str(a) in str(error.value) and str(b) in str(error.value)


def test_damaged_dataset_is_refused(official: Path):
    (official / "train" / "all__puzzle_indices.npy").unlink()
    with pytest.raises(DataError, match=r"all__puzzle_indices\.npy"):
        ArcDataset([official], "train")
    with pytest.raises(DataError, match=r"dataset\.json"):
        ArcDataset([official / "nowhere"], "test")
    with pytest.raises(DataError, match=r"one split of a dataset"):
        ArcDataset([official / "test"], "train")


def test_encoder_batches_carry_their_puzzles_demos(encoder: Path):
    dataset = ArcDataset([encoder], "train")
    assert dataset.layout == "encoder"
    max_demos = 3  # smaller than some puzzles' demo counts: capped in order
    sampler = TrainSampler(dataset, 6, seed=0, max_demos=max_demos)
    inputs = np.load(encoder / "train" / "all__inputs.npy")
    labels = np.load(encoder / "train" / "all__labels.npy")
    for b in range(sampler.batches_per_iteration(0)):
        examples, puzzles = sampler.global_items(0, b)
        batch = sampler.make_batch(0, b)
        assert batch["demo_inputs"].shape == (6, max_demos, 25) and batch["demo_mask"].dtype == torch.bool
        for row, (example, puzzle) in enumerate(zip(examples, puzzles)):
            start, demos = dataset.puzzle_indices[puzzle], dataset.num_demos[puzzle]
            assert example >= start + demos  # only queries are targets
            assert np.array_equal(batch["inputs"][row].numpy(), inputs[example])
            used = min(demos, max_demos)
            assert batch["demo_mask"][row].tolist() == [j < used for j in range(max_demos)]
            for j in range(max_demos):
                if j < used:
                    assert np.array_equal(batch["demo_inputs"][row, j].numpy(), inputs[start + j])
                    assert np.array_equal(batch["demo_labels"][row, j].numpy(), labels[start + j])
                else:
                    assert not batch["demo_inputs"][row, j].any() and not batch["demo_labels"][row, j].any()


def test_encoder_puzzles_without_queries_are_skipped(encoder: Path):
    dataset = ArcDataset([encoder], "train")
    no_queries = np.flatnonzero(dataset.item_counts() == 0)
    assert no_queries.size  # the random fixture has some
    sampler = TrainSampler(dataset, 5, seed=7)
    for e in range(3):
        for b in range(sampler.batches_per_iteration(e)):
            assert not np.isin(sampler.global_items(e, b)[1], no_queries).any()


def test_leave_one_out_makes_every_example_a_query_with_the_others_as_demos(encoder: Path):
    dataset = ArcDataset([encoder], "train")
    max_demos = 2  # fewer than some puzzles' other examples: a cyclic window after the item
    sampler = TrainSampler(dataset, 6, seed=0, max_demos=max_demos, leave_one_out=True)
    inputs = np.load(encoder / "train" / "all__inputs.npy")
    labels = np.load(encoder / "train" / "all__labels.npy")
    sizes = np.diff(dataset.puzzle_indices)
    seen_demo_items = False
    for b in range(sampler.batches_per_iteration(0)):
        examples, puzzles = sampler.global_items(0, b)
        batch = sampler.make_batch(0, b)
        for row, (example, puzzle) in enumerate(zip(examples, puzzles)):
            start, size = dataset.puzzle_indices[puzzle], sizes[puzzle]
            within = example - start
            seen_demo_items |= bool(within < dataset.num_demos[puzzle])  # demos are targets too
            used = min(size - 1, max_demos)
            assert batch["demo_mask"][row].tolist() == [j < used for j in range(max_demos)]
            for j in range(used):
                other = start + (within + 1 + j) % size
                assert other != example  # never its own answer
                assert np.array_equal(batch["demo_inputs"][row, j].numpy(), inputs[other])
                assert np.array_equal(batch["demo_labels"][row, j].numpy(), labels[other])
            assert not batch["demo_inputs"][row, used:].any()
    assert seen_demo_items
    # Every example of the epoch's chosen puzzles is an item (no puzzle is skipped for lack of queries).
    assert (dataset.item_counts(leave_one_out=True) == sizes).all()


def test_leave_one_out_needs_the_encoder_layout(official: Path):
    with pytest.raises(ConfigError, match=r"leave_one_out needs the encoder layout.*official"):
        TrainSampler(ArcDataset([official], "train"), 4, seed=0, leave_one_out=True)


@pytest.mark.parametrize("layout", ["official", "encoder"])
def test_test_batches_cover_every_item_in_file_order(tmp_path: Path, layout: str):
    root = make_dataset(tmp_path / layout, encoder=layout == "encoder")
    dataset = ArcDataset([root], "test")
    examples, puzzles = dataset.items()
    for world in (1, 2):
        seen, pad_rows = [], 0
        for rank in range(world):
            for batch, n_real in iter_test_batches(dataset, 6, rank=rank, world_size=world, max_demos=4):
                ids = batch["example_indices"]
                assert ids.shape == (6 // world,) and (ids[:n_real] >= 0).all() and (ids[n_real:] == -1).all()
                seen.append(ids[:n_real])
                pad = slice(n_real, None)
                pad_rows += ids[pad].numel()
                assert not batch["inputs"][pad].any() and (batch["labels"][pad] == -100).all()
                assert not batch["puzzle_identifiers"][pad].any()
                if layout == "encoder":
                    assert not batch["demo_mask"][pad].any() and not batch["demo_inputs"][pad].any()
                real_ids = batch["puzzle_identifiers"][:n_real].numpy()
                lookup = dict(zip(examples.tolist(), dataset.puzzle_identifiers[puzzles].tolist()))
                assert real_ids.tolist() == [lookup[i] for i in ids[:n_real].tolist()]
        order = torch.cat(seen).numpy()
        assert sorted(order.tolist()) == examples.tolist()
        if world == 1:
            assert order.tolist() == examples.tolist()
        assert pad_rows == -examples.size % 6


def test_official_build_fixture_loads(official_arc_build_small: Path):
    output = official_arc_build_small / "output"
    for split in ("train", "test"):
        dataset = ArcDataset([output], split)
        meta = json.loads((output / split / "dataset.json").read_text())
        assert dataset.num_puzzles == meta["total_puzzles"] and dataset.total_groups == meta["total_groups"]
        assert dataset.seq_len == 900 and len(dataset.identifiers()) == meta["num_puzzle_identifiers"]
    sampler = TrainSampler(ArcDataset([output], "train"), 16, seed=0)
    assert sampler.batches_per_iteration(0) == len(list(sampler.iter_iteration(0))) >= 1


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.lists(st.integers(0, 6), min_size=1, max_size=4), min_size=1, max_size=12),
       batch=st.integers(1, 12), seed=st.integers(0, 2**32), world=st.sampled_from([1, 2]))
def test_sampler_invariants_on_random_layouts(sizes, batch, seed, world):
    """Any group/puzzle layout (encoder: queries per puzzle, zeros allowed): exact counts, full batches."""
    batch *= world
    rng = np.random.default_rng(0)
    grid = np.zeros((1, 1), np.uint8)
    groups = [[PuzzleRecord(f"g{g}p{p}", [(grid, grid)] * (n + 1), 1) for p, n in enumerate(puzzles)]
              for g, puzzles in enumerate(sizes)]
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(Path(tmp) / "d", groups, groups[:1], 2, encoder=True, seed=int(rng.integers(9)))
        dataset = ArcDataset([Path(tmp) / "d"], "train")
        if sum(max(p) for p in sizes) < batch:
            with pytest.raises(DataError):
                TrainSampler(dataset, batch, seed=seed, world_size=world)
            return
        samplers = [TrainSampler(dataset, batch, seed=seed, rank=r, world_size=world) for r in range(world)]
        for epoch in range(2):
            shards = [list(s.iter_iteration(epoch)) for s in samplers]
            assert all(len(shard) == samplers[0].batches_per_iteration(epoch) for shard in shards)
            for b, parts in enumerate(zip(*shards)):
                examples, puzzles = samplers[0].global_items(epoch, b)
                assert examples.size == batch and len(set(examples.tolist())) == batch
                assert np.all(examples >= dataset.puzzle_indices[puzzles] + dataset.num_demos[puzzles])
                merged = torch.cat([part["inputs"] for part in parts])
                assert merged.shape[0] == batch
