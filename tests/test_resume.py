"""SIGKILL at several points (including during checkpoint writes), resume, and end bitwise identical.

Run: .venv/bin/python -m pytest -q tests/test_resume.py   (about 30-40 s on 2 CPU cores)
"""

from __future__ import annotations

import os
import random
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
config = tiny_config(data, run_dir, epochs=30, checkpoint_every=1, keep_last=2, log_every=5)
# No ARC test set in the tiny dataset: evaluation is stubbed (it runs on the EMA weights, swapped in and out).
Trainer(Resolved(config), resume=run_dir if resume else None, progress=False,
        evaluate=lambda trainer, step: {{}}).run()
"""

TOTAL_STEPS = 90  # 30 epochs × 3 batches (checked below)


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


def _final_files(run_dir: Path) -> dict[str, bytes]:
    final = RunDir(run_dir).checkpoint_path(TOTAL_STEPS)
    return {name: (final / name).read_bytes() for name in ("model.safetensors", "ema.safetensors",
                                                           "puzzle_embedding.safetensors")}


def test_sigkill_and_resume_is_bitwise_identical(tmp_path):
    data = write_tiny_dataset(tmp_path / "data")
    reference = _launch(data, tmp_path / "reference", resume=False)
    interrupted = _launch(data, tmp_path / "interrupted", resume=False)
    rng = random.Random(0)
    run_dir = tmp_path / "interrupted"
    _kill_when(interrupted, run_dir, new_checkpoints=3, extra_delay=0.0)
    _finish(reference)
    assert RunDir(tmp_path / "reference").checkpoint_steps()[0] == TOTAL_STEPS
    kills = 1
    messages = []
    # Kill resumed processes at random moments: checkpoints are written every step, so some kills land
    # inside a write.
    for _ in range(4):
        steps = RunDir(run_dir).checkpoint_steps()
        if steps and steps[0] >= TOTAL_STEPS - 10:
            break
        proc = _launch(data, run_dir, resume=True)
        _kill_when(proc, run_dir, new_checkpoints=rng.randint(1, 4), extra_delay=rng.uniform(0.0, 0.02))
        kills += 1
    last = _launch(data, run_dir, resume=True)
    messages.append(_finish(last))
    assert "resuming" in messages[-1]
    assert kills >= 3
    assert _final_files(run_dir) == _final_files(tmp_path / "reference"), \
        "resumed run diverged from the uninterrupted one"
    # metrics.jsonl holds each logged step exactly once, in order.
    import json
    logged = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["split"] == "train"]
    assert logged == sorted(set(logged)) and logged[-1] == TOTAL_STEPS


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path):
    data = write_tiny_dataset(tmp_path / "data")
    reference = _launch(data, tmp_path / "reference", resume=False)
    _finish(reference)
    # Corrupt the newest checkpoint (truncate a weight file) and resume the completed run: it must say so,
    # fall back to step TOTAL-1 and redo the last step to the identical result.
    import shutil
    run_dir = tmp_path / "copy"
    shutil.copytree(tmp_path / "reference", run_dir)
    reference_files = _final_files(tmp_path / "reference")
    newest = RunDir(run_dir).checkpoint_path(TOTAL_STEPS) / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    err = _finish(_launch(data, run_dir, resume=True))
    assert "unusable" in err and "sha256" in err.lower() and f"step_{TOTAL_STEPS - 1}" in err
    assert _final_files(run_dir) == reference_files


@pytest.mark.parametrize("missing", ["manifest.json"])
def test_incomplete_checkpoint_is_skipped(tmp_path, missing):
    data = write_tiny_dataset(tmp_path / "data")
    run_dir = tmp_path / "run"
    _finish(_launch(data, run_dir, resume=False))
    reference_files = _final_files(run_dir)
    (RunDir(run_dir).checkpoint_path(TOTAL_STEPS) / missing).unlink()
    err = _finish(_launch(data, run_dir, resume=True))
    assert "unusable" in err
    assert _final_files(run_dir) == reference_files
