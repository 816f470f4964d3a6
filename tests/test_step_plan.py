"""The official trainer's step plan (trm-reference §6.5-6.7, §7.5): batches per iteration, the puzzles of
every batch, the optimizer-step count and the LR schedule length, equal to the official loader's.

The expected values are facts measured by driving the official ``PuzzleDataset`` (SamsungSAILMontreal/
TinyRecursiveModels ``puzzle_dataset.py``, as its ``pretrain.py`` drives it: one loader object, iterated once
per iteration with ``epochs_per_iter = eval_interval``) on the same data, recording the puzzle index of every
row of every yielded global batch; the official code is not part of this repository.

Run: .venv/bin/python -m pytest -q tests/test_step_plan.py
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from train_helpers import Resolved, tiny_config, write_tiny_dataset
from trmlab.data.dataset import ArcDataset, TrainSampler
from trmlab.data.format import array_path, dataset_json, write_json
from trmlab.errors import ConfigError
from trmlab.training.loop import Trainer
from trmlab.training.plan import make_sampler, plan_steps

# (seed, global batch, epochs, eval_interval, copies of the data path) → the official loader's
# (estimate int(epochs·total_groups·mean_puzzle_examples/B), batches per iteration, sorted distinct puzzle
# indices of the first 3 batches, sha256 of the puzzle index of every row of every batch as little-endian
# int64, batches in order). Measured 2026-11-28 on ../shared/fixtures/official-arc-build/small/output.
OFFICIAL_SMALL = {
    (0, 16, 12, 4, 1): (38, [11, 11, 11], [[16, 31, 83, 154], [8, 51, 60, 107], [75, 98, 108, 129, 130]],
                        "b0ea3c133fbc05e2ee12edaabae6dbfe5d72dbead94a8af0e2a2582f174e427d"),
    (0, 16, 12, 1, 1): (38, [2, 3, 2, 3, 3, 2, 2, 2, 2, 2, 2, 2],
                        [[23, 27, 84, 153], [8, 40, 63, 107], [0, 35, 72, 147]],
                        "cdcaf125c8a135843ed204d9addb0c68654c00574b94fd0e98e53eccfa75b371"),
    (0, 16, 12, None, 1): (38, [34], [[24, 35, 78, 154], [5, 50, 63, 111], [77, 99, 115, 129, 140]],
                           "4fb91ca3db8d9f88732e1fcb5d19927de7ed969326d7c8e22c94c1d1700d622a"),
    (3, 10, 6, 2, 1): (30, [8, 8, 9], [[59, 112, 134], [25, 47], [33, 90, 147]],
                       "ae491e1c58955fba110498e0883a3a1cbb58a7e401bc9c803f5f7ec4aa473841"),
    (7, 32, 8, 8, 1): (12, [12], [[4, 36, 50, 60, 75, 86, 110, 122, 134],
                                  [16, 55, 100, 101, 115, 120, 136, 151], [8, 25, 32, 41, 74, 84, 151]],
                       "63b1800a23d7f2b942d16ea96b9e380035c55a8a589c2c7e6f40ca2d417449af"),
    (1, 5, 4, 2, 1): (40, [14, 16], [[150], [0, 66], [32, 82]],
                      "16af36951daee56b7ea057baec313756e227917fb116d57481c04eb37dce7be7"),
    # Two data paths: the official loader walks them one after the other, each pass with its own counter.
    (2, 16, 4, 2, 2): (25, [11, 11], [[9, 18, 70, 101, 108], [27, 45, 63, 117, 138], [5, 88, 153]],
                       "23e6f26f6c88f3dd256e60dc4152d6b89d3703498daaa97b229dd5e443955d5e"),
}
# Rank-local puzzle_identifiers of the first batch, seed 0, batch 16, 12 epochs, eval_interval 4, 2 ranks.
OFFICIAL_SMALL_TWO_RANKS = [[155, 155, 155, 155, 155, 32, 32, 32], [32, 17, 17, 17, 17, 17, 17, 84]]
# On write_skewed_dataset (one 10-example puzzle, one group of nine 1-example puzzles, …) the estimate is
# below the batches: (seed, B, epochs, eval_interval) → (estimate, batches per iteration, sha256 as above).
OFFICIAL_SKEWED = {
    (0, 4, 12, 4): (30, [12, 10, 10], "87a77ea895c0fa0bc1e691057e6ebf2a1f1bf489c83b396f4452dceaf0f4ddfb"),
    (5, 6, 10, 5): (16, [11, 10], "12b540d01eb3ca0a3f8f9afac4e1119ed1b32585e8f1b3d67315f2a2c1389bba"),
    (1, 8, 6, None): (7, [12], "27b665b2d44ece3088072332b920f7dfe2e39c791aed52f2d13bcdb55b175b83"),
}


def write_skewed_dataset(root: Path) -> Path:
    """Official layout, 2×2 canvas; groups whose puzzle counts make the per-group mean (what an epoch draws)
    far above ``mean_puzzle_examples`` (per puzzle), so the official estimate is below the batches."""
    groups = [[10], [1] * 9, [2, 3], [7], [1] * 5]
    rng = np.random.default_rng(0)
    split = root / "train"
    split.mkdir(parents=True, exist_ok=True)
    sizes = [n for group in groups for n in group]
    examples = sum(sizes)
    arrays = {"inputs": rng.integers(2, 12, (examples, 4)).astype(np.uint8),
              "labels": rng.integers(2, 12, (examples, 4)).astype(np.uint8),
              "puzzle_identifiers": np.arange(1, len(sizes) + 1, dtype=np.int32),
              "puzzle_indices": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32),
              "group_indices": np.concatenate([[0], np.cumsum([len(g) for g in groups])]).astype(np.int32)}
    for name, value in arrays.items():
        np.save(array_path(split, name), value)
    write_json(split / "dataset.json", dataset_json(seq_len=4, num_puzzle_identifiers=len(sizes) + 1,
                                                    total_groups=len(groups), total_puzzles=len(sizes),
                                                    total_examples=examples))
    (root / "identifiers.json").write_text(json.dumps(["<blank>"] + [f"p{i}" for i in range(len(sizes))]))
    return root


def _rows_digest(sampler: TrainSampler, counts: list[int]) -> tuple[str, list[list[int]]]:
    digest, first = hashlib.sha256(), []
    for iteration, count in enumerate(counts):
        for batch in range(count):
            _, puzzles = sampler.global_items(iteration, batch)
            digest.update(puzzles.astype("<i8").tobytes())
            if len(first) < 3:
                first.append(sorted(set(puzzles.tolist())))
    return digest.hexdigest(), first


def _plan_of(path: Path, copies: int, seed: int, batch: int, epochs: int, eval_interval: int | None, **extra):
    config = tiny_config(path, path / "unused-run", data_paths=[str(path)] * copies, seed=seed,
                         global_batch_size=batch, epochs=epochs, eval_interval=eval_interval,
                         checkpoint_every=None, **extra)
    sampler = make_sampler(config, ArcDataset(list(config.data_paths), "train"))
    return sampler, plan_steps(sampler, config)


@pytest.mark.parametrize("setting", list(OFFICIAL_SMALL), ids=str)
def test_plan_and_every_batch_match_the_official_loader(official_arc_build_small: Path, setting):
    seed, batch, epochs, eval_interval, copies = setting
    estimate, counts, first, digest = OFFICIAL_SMALL[setting]
    sampler, plan = _plan_of(official_arc_build_small / "output", copies, seed, batch, epochs, eval_interval)
    assert plan.batches_per_iteration == counts
    assert plan.schedule_steps == sampler.estimated_batches(epochs) == estimate
    assert plan.optimizer_steps == min(sum(counts), estimate)
    assert _rows_digest(sampler, counts) == (digest, first)


def test_the_issue_figures(official_arc_build_small: Path):
    """Seed 0, batch 16, 12 epochs: 33 optimizer steps with eval_interval 4, 27 with eval_interval 1."""
    data = official_arc_build_small / "output"
    assert _plan_of(data, 1, 0, 16, 12, 4)[1].optimizer_steps == 33
    assert _plan_of(data, 1, 0, 16, 12, 1)[1].optimizer_steps == 27


@pytest.mark.parametrize("setting", list(OFFICIAL_SKEWED), ids=str)
def test_the_estimate_caps_the_steps_and_is_the_schedule_length(tmp_path: Path, setting):
    seed, batch, epochs, eval_interval = setting
    estimate, counts, digest = OFFICIAL_SKEWED[setting]
    sampler, plan = _plan_of(write_skewed_dataset(tmp_path / "skewed"), 1, seed, batch, epochs, eval_interval)
    assert sum(counts) > estimate  # the official trainer stops updating before the loader is done
    assert (plan.optimizer_steps, plan.schedule_steps) == (estimate, estimate)
    assert plan.iteration_ends[-1] == estimate and plan.eval_steps[-1] == estimate
    assert _rows_digest(sampler, [sampler.batches_per_iteration(i) for i in range(len(counts))])[0] == digest


def test_each_rank_takes_its_slice_of_the_official_batch(official_arc_build_small: Path):
    dataset = ArcDataset([official_arc_build_small / "output"], "train")
    for rank, expected in enumerate(OFFICIAL_SMALL_TWO_RANKS):
        sampler = TrainSampler(dataset, 16, 0, rank=rank, world_size=2, epochs_per_iteration=4)
        assert sampler.make_batch(0, 0)["puzzle_identifiers"].tolist() == expected


def test_resume_inside_and_between_iterations_is_exact(official_arc_build_small: Path):
    dataset = ArcDataset([official_arc_build_small / "output"], "train")
    reference = TrainSampler(dataset, 16, 0, epochs_per_iteration=4)
    flat = [b for i in range(3) for b in reference.iter_iteration(i)]
    for stop in (5, 11, 12):  # inside iteration 0, exactly at its end, inside iteration 1
        first = TrainSampler(dataset, 16, 0, epochs_per_iteration=4)
        iterator = (b for i in range(3) for b in first.iter_iteration(i))
        consumed = [next(iterator) for _ in range(stop)]
        state = first.state_dict()
        resumed = TrainSampler(dataset, 16, 0, epochs_per_iteration=4)
        resumed.load_state_dict(state)
        rest = [b for i in range(state["iteration"], 3) for b in resumed.iter_iteration(i)]
        assert len(consumed) + len(rest) == len(flat) == 33
        for got, want in zip(consumed + rest, flat):
            assert all(np.array_equal(got[k].numpy(), want[k].numpy()) for k in want)
    with pytest.raises(ConfigError, match=r"eval_interval must not change"):
        TrainSampler(dataset, 16, 0, epochs_per_iteration=1).load_state_dict(state)
    with pytest.raises(ConfigError, match=r"per epoch.*start a new run"):
        TrainSampler(dataset, 16, 0).load_state_dict({"epoch": 1, "batch_in_epoch": 0})


def test_min_eval_interval_counts_iterations_from_zero(official_arc_build_small: Path):
    """Official: evaluate after iteration i (0-based) when i >= min_eval_interval."""
    data = official_arc_build_small / "output"
    assert _plan_of(data, 1, 0, 16, 12, 4)[1].eval_steps == [11, 22, 33]
    assert _plan_of(data, 1, 0, 16, 12, 4, min_eval_interval=1)[1].eval_steps == [22, 33]
    assert _plan_of(data, 1, 0, 16, 12, 4, min_eval_interval=2)[1].eval_steps == [33]
    # The last step is always evaluated and checkpointed, even past the official cadence.
    assert _plan_of(data, 1, 0, 16, 12, 4, min_eval_interval=5)[1].eval_steps == [33]


def _official_lr(step: int, base: float, warmup: int, total: int, min_ratio: float) -> float:
    """The official cosine_schedule_with_warmup_lr_lambda (trm-reference §6.2), written out independently."""
    if step < warmup:
        return base * step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return base * (min_ratio + max(0.0, (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))))


def test_lr_at_every_step_follows_the_official_schedule_over_the_estimate(tmp_path: Path):
    data = write_tiny_dataset(tmp_path / "data")  # 6 groups × 2 puzzles × 3 examples: estimate 4·6·3/4 = 18
    config = tiny_config(data, tmp_path / "run", epochs=4, eval_interval=2, lr_min_ratio=0.25,
                         lr_warmup_steps=3, log_every=1, checkpoint_every=None)
    trainer = Trainer(Resolved(config), progress=False, evaluate=lambda trainer, step: {})
    seen = []
    step = trainer.sparse.step
    trainer.sparse.step = lambda: (seen.append((trainer.adam.param_groups[0]["lr"], trainer.sparse.lr)),
                                   step())[1]
    trainer.run()
    assert trainer.schedule_steps == 18 and trainer.total_steps == len(seen) == 12  # 2 puzzles per batch
    for index, (lr, emb_lr) in enumerate(seen, start=1):
        assert lr == pytest.approx(_official_lr(index, config.lr, 3, 18, 0.25), rel=1e-12)
        assert emb_lr == pytest.approx(_official_lr(index, config.puzzle_emb_lr, 3, 18, 0.25), rel=1e-12)


def _dry_run(data: Path, setting: tuple, run_dir: Path, *flags: str) -> list[str]:
    seed, batch, epochs, eval_interval, copies = setting
    interval = "null" if eval_interval is None else str(eval_interval)
    # The dry run checks what the run checks: evaluating during training on several datasets needs a test set.
    test = [f"data_paths_test=[{data}]"] if copies > 1 else []
    return ["train", "tiny", f"data_paths=[{','.join([str(data)] * copies)}]", *test, f"run_dir={run_dir}",
            f"seed={seed}", f"global_batch_size={batch}", f"epochs={epochs}", f"eval_interval={interval}",
            "--dry-run", *flags]


@pytest.mark.parametrize("setting", list(OFFICIAL_SMALL), ids=str)
def test_dry_run_json_reports_the_official_plan_and_writes_nothing(official_arc_build_small: Path, setting,
                                                                     tmp_path: Path, monkeypatch, capsys):
    from trmlab.cli import main

    monkeypatch.chdir(tmp_path)
    estimate, counts, first, _ = OFFICIAL_SMALL[setting]
    assert main(_dry_run(official_arc_build_small / "output", setting, tmp_path / "run", "--json")) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["optimizer_steps"] == min(sum(counts), estimate) and plan["schedule_steps"] == estimate
    assert plan["batches_per_iteration"] == counts and plan["first_batches"] == first
    assert list(tmp_path.iterdir()) == []  # no run directory, nothing in the working directory


def test_dry_run_prints_the_plan(official_arc_build_small: Path, tmp_path: Path, monkeypatch, capsys):
    from trmlab.cli import main

    monkeypatch.chdir(tmp_path)
    words = _dry_run(official_arc_build_small / "output", (0, 16, 12, 4, 1), tmp_path / "run")
    assert main([*words, "checkpoint_every=10", "lr_warmup_steps=5", "lr_min_ratio=0.5"]) == 0
    out = capsys.readouterr().out
    assert "optimizer steps:       33 (stops at the loader's batches" in out
    assert "batches per iteration: 11, 11, 11" in out and "evaluation steps:      11, 22, 33" in out
    assert "checkpoint steps:      10, 11, 20, 22, 30, 33" in out
    lr_end = _official_lr(33, 1e-4, 5, 38, 0.5)  # the tiny preset's lr 1e-4, schedule = estimate 38
    assert f"lr 0.0001 at step 5 (warmup end), {lr_end:.3g} at the last step" in out
    assert list(tmp_path.iterdir()) == []
    assert main(["train", "tiny", "--json"]) == 2
    assert "--json only goes with --dry-run" in capsys.readouterr().err



@pytest.mark.parametrize("flags", [(), ("--json",)], ids=["text", "json"])
def test_dry_run_stops_at_the_estimate_when_it_is_below_the_batches(tmp_path: Path, monkeypatch, capsys,
                                                                    flags):
    """Seed 0, batch 4, 12 epochs on the skewed data: the loader yields 32 batches, the official trainer
    updates 30 times (its estimate), and the plan must say 30 wherever it reports steps."""
    from trmlab.cli import main

    data = write_skewed_dataset(tmp_path / "skewed")
    if not (data / "test").exists():  # the dry run opens the evaluation data, as the run does
        shutil.copytree(data / "train", data / "test")
    monkeypatch.chdir(tmp_path / "skewed")
    estimate, counts, _ = OFFICIAL_SKEWED[(0, 4, 12, 4)]
    assert (estimate, sum(counts)) == (30, 32)
    words = [*_dry_run(data, (0, 4, 12, 4, 1), tmp_path / "run", *flags), "lr_warmup_steps=5",
             "lr_min_ratio=0.5"]
    assert main(words) == 0
    out = capsys.readouterr().out
    lr_end = _official_lr(30, 1e-4, 5, 30, 0.5)  # the schedule's own end: the minimum, 5e-5
    assert lr_end == pytest.approx(5e-5) and _official_lr(32, 1e-4, 5, 30, 0.5) != lr_end
    if flags:
        plan = json.loads(out)
        assert (plan["optimizer_steps"], plan["schedule_steps"], plan["batches"]) == (30, 30, 32)
        assert plan["batches_per_iteration"] == counts and plan["eval_steps"] == [12, 22, 30]
        assert plan["checkpoint_steps"] == [12, 22, 30]
        assert plan["lr"]["at_end"] == pytest.approx(lr_end, rel=1e-12)
    else:
        assert ("optimizer steps:       30 (stops at the official estimate; the loader yields 32 batches, "
                "official estimate 30)") in out
        assert "evaluation steps:      12, 22, 30" in out and "checkpoint steps:      12, 22, 30" in out
        assert f"{lr_end:.3g} at the last step" in out
    assert not (tmp_path / "run").exists()


# The released recipes on the full rebuilt datasets (`trmlab data build-arc`, 6.8 and 9.0 GB: not in CI).
# (env var naming the dataset dir) → (loader batches, official estimate, optimizer steps, evaluation steps)
RELEASED = {
    "TRMLAB_ARC1_DATA": (518_071, 518_226, 518_071,
                         [51_807, 103_614, 155_422, 207_229, 259_036, 310_843, 362_650, 414_457, 466_264,
                          518_071]),
    "TRMLAB_ARC2_DATA": (723_914, 722_098, 722_098,
                         [72_391, 144_783, 217_174, 289_565, 361_957, 434_348, 506_739, 579_130, 651_522,
                          722_098]),
}


@pytest.mark.slow
@pytest.mark.parametrize("variable", list(RELEASED))
def test_the_released_recipe_plans_the_released_checkpoint_steps(variable: str):
    """ARC-AGI-1: step_518071 (the released checkpoint); ARC-AGI-2: 723,914 batches (the final checkpoint's
    name) of which the first 722,098 update, and step_651522 at the end of iteration 9."""
    import os

    from trmlab.config import load_config

    path = os.environ.get(variable)
    if not path:
        pytest.skip(f"set {variable} to a full build of the dataset")
    config = load_config("trm-arc1", [f"data_paths=[{path}]"]).config
    plan = plan_steps(make_sampler(config, ArcDataset([path], "train")), config)
    assert (plan.batches, plan.schedule_steps, plan.optimizer_steps, plan.eval_steps) == RELEASED[variable]
