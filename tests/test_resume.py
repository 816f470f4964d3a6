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


# -- SIGTERM / SIGUSR1 / SIGINT: finish the step, checkpoint, one line, resume bitwise ----------------------


def _cli(run_dir: Path, *words: str, data: Path | None = None) -> subprocess.Popen:
    """``trmlab train`` (tiny preset, CPU, single-threaded) in a subprocess."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent / "src")}
    base = [] if data is None else ["tiny", f"data_paths=[{data}]", f"run_dir={run_dir}", "device=cpu",
                                    "epochs=12", "eval_interval=null", "checkpoint_every=null", "log_every=2"]
    return subprocess.Popen([sys.executable, "-m", "trmlab", "train", *base, *words, "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_checkpoints_exits_and_resumes_bitwise(tmp_path):
    from trmlab.checkpoints import read_checkpoint
    from trmlab.data.synthetic import build_synthetic

    build_synthetic(tmp_path / "synthetic", seed=0, families=["colour_permutation"], train_tasks=4,
                    eval_tasks=1, canvas=4, log=lambda _: None)
    data = tmp_path / "synthetic" / "trm"
    proc = _cli(tmp_path / "stopped", data=data)
    metrics = tmp_path / "stopped" / "metrics.jsonl"
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline:
        if metrics.exists() and metrics.stat().st_size:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)  # a few steps in (the first metrics line is step 2 of 24)
    _, err = proc.communicate(timeout=60)
    steps = RunDir(tmp_path / "stopped").checkpoint_steps()
    assert len(steps) == 1 and 2 <= steps[0] < 24, err
    line = (f"interrupted at step {steps[0]}; checkpoint step_{steps[0]} written; resume with: "
            f"trmlab train resume={(tmp_path / 'stopped').resolve()}")
    assert proc.returncode == 128 + signal.SIGTERM and err.splitlines()[-1] == line, err
    assert "Traceback" not in err
    read_checkpoint(RunDir(tmp_path / "stopped").checkpoint_path(steps[0]), verify=True)

    resumed, reference = _cli(tmp_path / "stopped", f"resume={tmp_path / 'stopped'}"), _cli(tmp_path / "ref",
                                                                                           data=data)
    for proc in (resumed, reference):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    for name in ("model.safetensors", "ema.safetensors", "puzzle_embedding.safetensors"):
        final = [(run / "checkpoints" / "step_24" / name).read_bytes() for run in (tmp_path / "stopped",
                                                                                   tmp_path / "ref")]
        assert final[0] == final[1], f"{name}: the resumed run diverged"


# A process that catches the stop signals, receives ``signal`` once or twice, and reports what it saw.
SIGNAL_SCRIPT = """
import os, signal, sys, time
from types import SimpleNamespace
from trmlab.training.signals import StopOnSignal
stop = StopOnSignal(SimpleNamespace(is_main=True, distributed=False)).install()
signum, gaps = getattr(signal, sys.argv[1]), [float(gap) for gap in sys.argv[2:]]
os.kill(os.getpid(), signum)
for gap in gaps:
    time.sleep(gap)
    os.kill(os.getpid(), signum)
time.sleep(0.1)
print("stop at", stop.should_stop(), flush=True)
stop.close()
print("restored", signal.getsignal(signum) is not stop._handle, flush=True)
"""


def _signal_script(name: str, *gaps: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent / "src")}
    return subprocess.run([sys.executable, "-c", SIGNAL_SCRIPT, name, *map(str, gaps)], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGUSR1", "SIGINT"])
def test_first_signal_requests_a_stop_and_a_second_exits_at_once(name):
    signum = int(getattr(signal, name))
    once = _signal_script(name)
    assert once.returncode == 0, once
    assert once.stdout.splitlines() == [f"stop at {signum}", "restored True"]
    assert f"got {name}; stopping after the current optimizer step" in once.stderr
    twice = _signal_script(name, 1.2)
    assert twice.returncode == 128 + signum and twice.stdout == "", twice
    assert twice.stderr.splitlines()[-1] == f"trmlab train: second {name}; exiting now without a checkpoint"


def test_a_duplicate_delivery_does_not_cancel_the_checkpoint():
    """torchrun forwards the signal its workers already got (Ctrl-C, Slurm): a repeat within a second is the
    same event, not the user insisting."""
    duplicate = _signal_script("SIGTERM", 0.05)
    assert duplicate.returncode == 0, duplicate
    assert duplicate.stdout.splitlines()[0] == f"stop at {int(signal.SIGTERM)}"
