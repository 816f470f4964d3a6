"""``trmlab adapt``: test-time adaptation end to end on tiny checkpoints (official layout and trmlab).

Run: .venv/bin/python -m pytest -q tests/test_adapt.py   (about 20 s)
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from train_helpers import Resolved, tiny_config, write_tiny_dataset
from trmlab.checkpoints import read_checkpoint
from trmlab.cli import main
from trmlab.errors import ConfigError
from trmlab.training import adapt as adapt_module
from trmlab.training.adapt import AdaptSettings, adapt
from trmlab.training.loop import Trainer

TASKS = ("shift1", "shift2", "shift3")


def write_tasks(folder: Path, max_side: int, demos: int = 3) -> tuple[Path, Path]:
    """A challenges file (test outputs absent) and its solutions file: colour-shift tasks on small grids."""
    rng = random.Random(0)
    challenges, solutions = {}, {}
    for shift, task_id in enumerate(TASKS, start=1):
        pairs = []
        for _ in range(demos + 1):
            grid = [[rng.randrange(10) for _ in range(rng.randint(1, max_side))]
                    for _ in range(rng.randint(1, max_side))]
            width = len(grid[0])
            grid = [row[:width] + [0] * (width - len(row)) for row in grid]
            pairs.append({"input": grid, "output": [[(v + shift) % 10 for v in row] for row in grid]})
        challenges[task_id] = {"train": pairs[:demos], "test": [{"input": pairs[demos]["input"]}]}
        solutions[task_id] = [pairs[demos]["output"]]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "challenges.json").write_text(json.dumps(challenges))
    (folder / "solutions.json").write_text(json.dumps(solutions))
    return folder / "challenges.json", folder / "solutions.json"


@pytest.fixture(scope="module")
def trmlab_checkpoint(tmp_path_factory) -> Path:
    """A trmlab checkpoint of a tiny TRM trained 4 steps on a 3×3-canvas dataset (25 table rows)."""
    root = tmp_path_factory.mktemp("pretrained")
    data = write_tiny_dataset(root / "data", groups=6)
    config = tiny_config(data, root / "run", epochs=2, checkpoint_every=None, ema=True)
    result = Trainer(Resolved(config), progress=False, evaluate=lambda t, s: {}).run()
    return result.checkpoints[-1]


def _settings(checkpoint, tasks, out, **values) -> AdaptSettings:
    return AdaptSettings(checkpoint=str(checkpoint), tasks=str(tasks), out=str(out), **values)


def _tensors(bundle_dir: Path, name: str) -> dict[str, torch.Tensor]:
    return read_checkpoint(bundle_dir, verify=True).tensors(name)


def test_official_checkpoint_full_mode_end_to_end(official_trm_tiny, tmp_path):
    challenges, solutions = write_tasks(tmp_path / "tasks", max_side=5)
    out = tmp_path / "out"
    code = main(["adapt", str(official_trm_tiny / "step_100"), str(challenges), f"out={out}", "steps=4",
                 "num_augmentations=2", "canvas=6", f"solutions={solutions}", "device=cpu", "--no-progress"])
    assert code == 0
    submission = json.loads((out / "submission.json").read_text())
    assert list(submission) == list(TASKS)
    for entries in submission.values():  # one entry per test input, two attempts each, grids of colours
        assert len(entries) == 1 and set(entries[0]) == {"attempt_1", "attempt_2"}
        assert all(0 <= v <= 9 for row in entries[0]["attempt_1"] for v in row)
    metrics = json.loads((out / "metrics.json").read_text())
    assert "ARC/pass@2" in metrics and metrics["counts"]["tasks"] == 3
    run = out / "run"
    config = (run / "config.yaml").read_text()
    assert "L_cycles: 3" in config and "freeze_weights: false" in config  # the checkpoint's recipe, full mode
    final = run / "checkpoints" / "step_4"
    table = _tensors(final, "puzzle_embedding.safetensors")["weights"]
    identifiers = json.loads((out / "data" / "identifiers.json").read_text())
    assert table.shape[0] == len(identifiers) > 10  # 10 checkpoint rows, then the new puzzles
    assert all(name == "<blank>" for name in identifiers[:10]) and identifiers[10] == TASKS[0]


def test_the_adaptation_data_holds_demonstrations_only(official_trm_tiny, tmp_path):
    challenges, _ = write_tasks(tmp_path / "tasks", max_side=5)
    settings = _settings(official_trm_tiny / "step_100", challenges, tmp_path / "out", num_aug=3, canvas=6)
    tasks = adapt_module.load_tasks(challenges, 6)
    adapt_module.build_adaptation_data(tasks, tmp_path / "data", 10, settings, log=lambda line: None)
    train_ids = np.load(tmp_path / "data" / "train" / "all__puzzle_identifiers.npy")
    train_inputs = np.load(tmp_path / "data" / "train" / "all__inputs.npy")
    test_inputs = np.load(tmp_path / "data" / "test" / "all__inputs.npy")
    assert train_ids.min() == 10  # every puzzle is a new row after the checkpoint's 10
    assert len(train_inputs) == len(train_ids) * 3  # three demonstrations per puzzle, no test pair
    trained = {row.tobytes() for row in train_inputs}
    assert not any(row.tobytes() in trained for row in test_inputs)
    test_labels = np.load(tmp_path / "data" / "test" / "all__labels.npy")
    assert (test_labels == 2).sum() == len(test_labels)  # only the dummy [[0]] (token 2): no answer exists


def test_embeddings_mode_trains_only_the_new_rows(trmlab_checkpoint, tmp_path):
    challenges, _ = write_tasks(tmp_path / "tasks", max_side=2)
    out = tmp_path / "out"
    result = adapt(_settings(trmlab_checkpoint, challenges, out, mode="embeddings", steps=3, num_aug=2,
                             canvas=3, overrides=["device=cpu"]), progress=False)
    assert result.step == 3
    # init_from starts from the checkpoint's EMA weights (and its buffers from model.safetensors).
    before = {**_tensors(trmlab_checkpoint, "model.safetensors"), **_tensors(trmlab_checkpoint,
                                                                           "ema.safetensors")}
    before_table = _tensors(trmlab_checkpoint, "puzzle_embedding.safetensors")["weights"]
    final = out / "run" / "checkpoints" / "step_3"
    after = _tensors(final, "model.safetensors")
    assert set(after) == set(before)
    for key in before:  # every weight and buffer bit for bit
        assert torch.equal(after[key], before[key]), key
    assert not read_checkpoint(final).has("ema.safetensors")  # nothing to average in this mode
    table = _tensors(final, "puzzle_embedding.safetensors")["weights"]
    rows = before_table.shape[0]
    assert torch.equal(table[:rows], before_table)  # existing rows untouched, the blank row included
    mean = before_table.mean(0)
    moved = [not torch.equal(table[r], mean) for r in range(rows, table.shape[0])]
    assert any(moved)  # the new rows started at the mean and learned


def test_full_mode_moves_the_weights(trmlab_checkpoint, tmp_path):
    challenges, _ = write_tasks(tmp_path / "tasks", max_side=2)
    out = tmp_path / "out"
    adapt(_settings(trmlab_checkpoint, challenges, out, mode="full", steps=2, num_aug=2, canvas=3,
                    overrides=["device=cpu"]), progress=False)
    before = _tensors(trmlab_checkpoint, "model.safetensors")
    after = _tensors(out / "run" / "checkpoints" / "step_2", "model.safetensors")
    assert any(not torch.equal(after[k], before[k]) for k in before)


_OPENED: list[tuple[str, bool]] = []   # (path, scoring had started) for every open while a test watches
_WATCH: dict[str, object] = {}


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _WATCH and isinstance(args[0], str | bytes | os.PathLike):
        path = os.path.realpath(os.fsdecode(args[0]))
        if path == _WATCH["path"]:
            _OPENED.append((path, bool(_WATCH["scoring"])))


sys.addaudithook(_audit)  # audit hooks cannot be removed; it records only while _WATCH is set


def test_solutions_are_read_only_when_scoring(trmlab_checkpoint, tmp_path, monkeypatch):
    """Every open of the solutions file (any API: the interpreter's audit hook) must come after scoring
    began; and it must be opened then, or the test would prove nothing."""
    challenges, solutions = write_tasks(tmp_path / "tasks", max_side=2)
    real_score = adapt_module.score

    def scoring(*args, **kwargs):
        _WATCH["scoring"] = True
        return real_score(*args, **kwargs)

    monkeypatch.setattr(adapt_module, "score", scoring)
    _OPENED.clear()
    _WATCH.update(path=os.path.realpath(solutions), scoring=False)
    try:
        result = adapt(_settings(trmlab_checkpoint, challenges, tmp_path / "out", steps=2, num_aug=2,
                                 canvas=3, solutions=str(solutions), overrides=["device=cpu"]),
                       progress=False)
    finally:
        _WATCH.clear()
    assert _OPENED, "the solutions file was never opened"
    assert all(during_scoring for _, during_scoring in _OPENED), "solutions opened before scoring"
    assert result.metrics is not None and "ARC/pass@2" in result.metrics


def test_budget_stop_checkpoints_predicts_and_resume_finishes_exactly(trmlab_checkpoint, tmp_path):
    challenges, _ = write_tasks(tmp_path / "tasks", max_side=2)
    common = dict(steps=5, num_aug=2, canvas=3, overrides=["device=cpu", "arch.halt_exploration_prob=0.0"])
    out = tmp_path / "budget"
    stopped = adapt(_settings(trmlab_checkpoint, challenges, out, max_minutes=1e-9, **common), progress=False)
    assert stopped.stopped_early == "max_minutes" and stopped.step == 1
    assert (out / "run" / "checkpoints" / "step_1" / "manifest.json").is_file()
    assert (out / "submission.json").is_file()  # stopped cleanly, then predicted
    finished = adapt(_settings(trmlab_checkpoint, challenges, out, **common), progress=False)  # resumes
    assert finished.step == 5 and finished.stopped_early is None
    straight = adapt(_settings(trmlab_checkpoint, challenges, tmp_path / "straight", **common),
                     progress=False)
    assert straight.step == 5
    resumed = _tensors(out / "run" / "checkpoints" / "step_5", "model.safetensors")
    uninterrupted = _tensors(tmp_path / "straight" / "run" / "checkpoints" / "step_5", "model.safetensors")
    for key in uninterrupted:
        assert torch.equal(resumed[key], uninterrupted[key]), key
    assert (out / "submission.json").read_bytes() == (tmp_path / "straight" / "submission.json").read_bytes()


def test_rerun_with_other_settings_is_refused(trmlab_checkpoint, tmp_path):
    challenges, _ = write_tasks(tmp_path / "tasks", max_side=2)
    out = tmp_path / "out"
    adapt(_settings(trmlab_checkpoint, challenges, out, steps=1, num_aug=1, canvas=3,
                    overrides=["device=cpu"]), progress=False)
    with pytest.raises(ConfigError, match="mode differ"):
        adapt(_settings(trmlab_checkpoint, challenges, out, mode="embeddings", steps=1, num_aug=1, canvas=3,
                        overrides=["device=cpu"]), progress=False)


@pytest.mark.parametrize("words, message", [
    (["out=X"], "steps=N"),
    (["out=X", "steps=2", "mode=partial"], "mode=partial"),
    (["out=X", "steps=2", "init_from=elsewhere"], "set by trmlab adapt"),
    (["steps=2"], "out=DIR is required"),
])
def test_bad_settings_are_one_line_errors(trmlab_checkpoint, tmp_path, capsys, words, message):
    challenges, _ = write_tasks(tmp_path / "tasks", max_side=2)
    assert main(["adapt", str(trmlab_checkpoint), str(challenges), *words]) == 2
    assert message in capsys.readouterr().err


def test_extend_keeps_the_rows_and_appends_their_mean():
    from trmlab.errors import CheckpointError
    from trmlab.interop.loading import check_puzzle_table

    table = torch.randn(5, 4)
    extended = check_puzzle_table(table, 8, "extend")
    assert torch.equal(extended[:5], table)
    assert torch.equal(extended[5:], table.mean(0, keepdim=True).expand(3, -1))
    with pytest.raises(CheckpointError, match="fewer than"):
        check_puzzle_table(table, 4, "extend")


def test_freeze_weights_with_ema_is_a_config_error():
    from trmlab.config import load_config

    with pytest.raises(ConfigError, match="ema=false"):
        load_config("tiny", ["freeze_weights=true", "ema=true"])


def _adapt_worker(rank: int, world: int, port: int, settings: AdaptSettings) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = adapt(settings, progress=False)
        assert (result is None) == (rank != 0)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_adapt_like_one(trmlab_checkpoint, tmp_path):
    import socket

    import torch.multiprocessing as mp

    challenges, _ = write_tasks(tmp_path / "tasks", max_side=2)
    # Exploration is seeded per rank, so it is off for the comparison.
    common = dict(steps=3, num_aug=2, canvas=3, overrides=["device=cpu", "arch.halt_exploration_prob=0.0"])
    adapt(_settings(trmlab_checkpoint, challenges, tmp_path / "one", **common), progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    two_settings = _settings(trmlab_checkpoint, challenges, tmp_path / "two", **common)
    mp.spawn(_adapt_worker, args=(2, port, two_settings), nprocs=2, join=True)
    one = _tensors(tmp_path / "one" / "run" / "checkpoints" / "step_3", "model.safetensors")
    two = _tensors(tmp_path / "two" / "run" / "checkpoints" / "step_3", "model.safetensors")
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    assert list(json.loads((tmp_path / "two" / "submission.json").read_text())) == list(TASKS)


def test_a_batch_larger_than_an_epoch_still_runs_the_steps_asked(trmlab_checkpoint, tmp_path):
    challenges, _ = write_tasks(tmp_path / "tasks", max_side=2)  # 3 tasks × 3 demonstrations per epoch
    result = adapt(_settings(trmlab_checkpoint, challenges, tmp_path / "out", steps=7, num_aug=1, canvas=3,
                             overrides=["device=cpu", "global_batch_size=16"]), progress=False)
    assert (result.step, result.total_steps) == (7, 7)
    config = (tmp_path / "out" / "run" / "config.yaml").read_text()
    assert "global_batch_size: 16" in config  # the recipe's batch, not shrunk to an epoch
