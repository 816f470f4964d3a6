"""SIGKILL at several points (including during checkpoint writes), resume, and end bitwise identical.

Run: .venv/bin/python -m pytest -q tests/test_resume.py   (about 30-40 s on 2 CPU cores)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from train_helpers import write_tiny_dataset
from trmlab.training.run_dir import RunDir

TESTS = Path(__file__).resolve().parent

# One process of the tiny run; argv: data, run_dir, resume (0/1). Single-threaded so every process computes
# the same bits.
SCRIPT = """
import sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from train_helpers import Resolved, tiny_config
from trmlab.training.loop import Trainer
data, run_dir, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
config = tiny_config(data, run_dir, epochs=20, checkpoint_every=1, keep_last=3, log_every=5)
# No ARC test set in the tiny dataset: evaluation is stubbed (it runs on the EMA weights, swapped in and out).
Trainer(Resolved(config), resume=run_dir if resume else None, progress=False,
        evaluate=lambda trainer, step: {{}}).run()
"""

TOTAL_STEPS = 60  # 20 epochs × 3 batches (checked below)


def _launch(data: Path, run_dir: Path, resume: bool) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", SCRIPT.format(tests=str(TESTS)), str(data), str(run_dir),
                             "1" if resume else "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"training process failed:\n{err[-3000:]}"
    return err


def _kill_when(proc: subprocess.Popen, run_dir: Path, new_checkpoints: int, extra_delay: float) -> None:
    """SIGKILL once ``new_checkpoints`` more checkpoint writes happened (plus a random delay)."""
    runs = RunDir(run_dir)
    start = max(runs.checkpoint_steps(), default=0)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if max(runs.checkpoint_steps(), default=0) >= start + new_checkpoints:
            break
        time.sleep(0.002)
    time.sleep(extra_delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _kill_during_write(proc: subprocess.Popen, run_dir: Path) -> int:
    """SIGKILL as soon as a checkpoint is being written (a temporary directory exists); 1 if caught."""
    checkpoints = RunDir(run_dir).checkpoints_path
    deadline = time.time() + 60
    caught = 0
    while time.time() < deadline and proc.poll() is None:
        if any(p.name.endswith(".tmp") for p in checkpoints.iterdir()):
            os.kill(proc.pid, signal.SIGKILL)
            caught = 1
            break
        time.sleep(0.0005)
    proc.wait()
    return caught


def _final_files(run_dir: Path) -> dict[str, bytes]:
    final = RunDir(run_dir).checkpoint_path(TOTAL_STEPS)
    return {name: (final / name).read_bytes() for name in ("model.safetensors", "ema.safetensors",
                                                           "puzzle_embedding.safetensors")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny dataset and an uninterrupted run of it (shared by the tests of this module)."""
    root = tmp_path_factory.mktemp("resume")
    data = write_tiny_dataset(root / "data")
    _finish(_launch(data, root / "reference", resume=False))
    assert RunDir(root / "reference").checkpoint_steps() == [TOTAL_STEPS, TOTAL_STEPS - 1, TOTAL_STEPS - 2]
    return data, root / "reference"


def test_sigkill_and_resume_is_bitwise_identical(reference, tmp_path):
    data, reference_dir = reference
    rng = random.Random(0)
    run_dir = tmp_path / "interrupted"
    _kill_when(_launch(data, run_dir, resume=False), run_dir, new_checkpoints=3, extra_delay=0.0)
    kills = 1
    # Kill resumed processes at random moments: checkpoints are written every step, so some kills land
    # inside a write (leaving a temporary directory behind, which resume ignores and pruning removes).
    torn = 0
    for attempt in range(2):
        steps = RunDir(run_dir).checkpoint_steps()
        if steps and steps[0] >= TOTAL_STEPS - 10:
            break
        proc = _launch(data, run_dir, resume=True)
        if attempt % 2 == 0:  # the moment a checkpoint's temporary directory exists: mid-write
            torn += _kill_during_write(proc, run_dir)
        else:
            _kill_when(proc, run_dir, new_checkpoints=rng.randint(1, 4), extra_delay=rng.uniform(0.0, 0.02))
        kills += 1
    assert torn >= 1, "no kill landed inside a checkpoint write"
    err = _finish(_launch(data, run_dir, resume=True))
    assert "resuming" in err
    assert kills >= 3
    assert _final_files(run_dir) == _final_files(reference_dir), "resumed run diverged"
    # metrics.jsonl holds each logged step exactly once, in order.
    logged = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["split"] == "train"]
    assert logged == sorted(set(logged)) and logged[-1] == TOTAL_STEPS


def test_corrupt_and_incomplete_checkpoints_fall_back(reference, tmp_path):
    data, reference_dir = reference
    run_dir = tmp_path / "copy"
    shutil.copytree(reference_dir, run_dir)
    # Newest: a truncated weight file (checksum mismatch); the one before: no manifest (interrupted write).
    newest = RunDir(run_dir).checkpoint_path(TOTAL_STEPS) / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    (RunDir(run_dir).checkpoint_path(TOTAL_STEPS - 1) / "manifest.json").unlink()
    err = _finish(_launch(data, run_dir, resume=True))
    assert f"step_{TOTAL_STEPS}" in err and "sha256" in err and "unusable" in err
    assert "no manifest.json" in err
    assert f"from step_{TOTAL_STEPS - 2}" in err
    # The last two steps are redone and end exactly where the uninterrupted run did.
    assert _final_files(run_dir) == _final_files(reference_dir)
    assert (RunDir(run_dir).checkpoints_path / f"step_{TOTAL_STEPS}.corrupt").is_dir()
