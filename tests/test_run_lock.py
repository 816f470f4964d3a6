"""Nothing lost (issue 20, item 2): one writer per run directory, `trmlab demo` keeps earlier runs, a full
disk at a checkpoint keeps the previous one and the run resumes, stale staging directories of dead builds
go."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import shared_path
from train_helpers import tiny_config, write_tiny_dataset
from trmlab.cli import main
from trmlab.training.run_dir import LOCK_FILE, RunDir


@pytest.fixture
def preset(tmp_path: Path) -> tuple[Path, Path]:
    """(a YAML preset of a tiny TRM, its tiny dataset)."""
    from trmlab.config.loader import config_to_dict

    data = write_tiny_dataset(tmp_path / "tiny")
    document = config_to_dict(tiny_config(data, tmp_path / "unused", checkpoint_every=4))
    for key in ("data_paths", "run_dir"):
        document.pop(key)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(document))
    return path, data


def _stopped_run(preset: tuple[Path, Path], run: Path, monkeypatch: pytest.MonkeyPatch, stop_at: int) -> None:
    """A run stopped (as by max_minutes) at ``stop_at`` with a checkpoint there: something to resume."""
    from trmlab.training.loop import Trainer

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_over_budget", lambda self: self.step >= stop_at)
        assert main(["train", str(preset[0]), f"data_paths=[{preset[1]}]", f"run_dir={run}",
                     "max_minutes=1000", "--no-progress"]) == 0
    assert RunDir(run).checkpoint_steps() == [stop_at]


def test_two_concurrent_resumes_the_second_is_refused_the_first_completes(preset, tmp_path, monkeypatch,
                                                                         capsys):
    run = tmp_path / "run"
    _stopped_run(preset, run, monkeypatch, stop_at=4)
    second: list[tuple[int, str]] = []
    append = RunDir.append_metrics

    def append_then_resume_again(self: RunDir, record: dict) -> None:
        append(self, record)
        if not second:  # while the first resume trains: a second `trmlab train resume=RUN`
            capsys.readouterr()
            code = main(["train", f"resume={run}", "--no-progress"])
            second.append((code, capsys.readouterr().err))

    monkeypatch.setattr(RunDir, "append_metrics", append_then_resume_again)
    assert main(["train", f"resume={run}", "--no-progress"]) == 0
    code, err = second[0]
    assert code == 3, err
    assert err.startswith("trmlab: error: run_dir") and f"pid {os.getpid()} on {socket.gethostname()}" in err
    assert "started" in err and len(err.strip().splitlines()) == 1
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 12  # in order, none twice
    assert [r["step"] for r in records if r["split"] == "eval"] == [12]       # one final evaluation
    assert not (run / LOCK_FILE).exists()  # released when the run finished


def test_a_lock_left_by_a_dead_process_is_taken_over(preset, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _stopped_run(preset, run, monkeypatch, stop_at=4)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    holder = {"pid": int(gone.stdout), "host": socket.gethostname(), "started": "earlier", "command": "x"}
    (run / LOCK_FILE).write_text(json.dumps(holder))
    capsys.readouterr()
    assert main(["train", f"resume={run}", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"taking over the lock of {run} left by pid {holder['pid']}" in err and "which is gone" in err
    assert not (run / LOCK_FILE).exists()


def test_a_lock_held_on_another_host_is_refused_and_names_it(preset, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _stopped_run(preset, run, monkeypatch, stop_at=4)
    holder = {"pid": 1, "host": "elsewhere.example", "started": "2026-12-07 01:00:00 UTC",
              "command": "trmlab"}
    (run / LOCK_FILE).write_text(json.dumps(holder))
    before = (run / "metrics.jsonl").read_bytes()
    capsys.readouterr()
    assert main(["train", f"resume={run}", "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "pid 1 on elsewhere.example, started 2026-12-07 01:00:00 UTC" in err
    assert (run / "metrics.jsonl").read_bytes() == before  # the refused writer changed nothing
    assert json.loads((run / LOCK_FILE).read_text()) == holder


def test_resume_dry_run_checks_without_changing_the_run(preset, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _stopped_run(preset, run, monkeypatch, stop_at=4)
    before = sorted(str(p) for p in run.rglob("*"))
    capsys.readouterr()
    assert main(["train", f"resume={run}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "resume: from step_4" in out and "optimizer steps:       12" in out
    assert sorted(str(p) for p in run.rglob("*")) == before


# ------------------------------------------------------------------------------------------------ demo


def _fake_demo(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The demo with its dataset build, training and report replaced by stand-ins that write a run dir."""
    import trmlab.reports.html
    import trmlab.training.demo as demo
    import trmlab.training.loop

    runs: list[Path] = []

    class FakeTrainer:
        def __init__(self, resolved):
            self.path = Path(resolved.config.run_dir)

        def run(self):
            self.path.mkdir(parents=True)
            (self.path / "config.yaml").write_text("config: {}\n")
            runs.append(self.path)
            return SimpleNamespace(evaluations=[])

    monkeypatch.setattr(demo, "build_demo_data", lambda path: None)
    monkeypatch.setattr(trmlab.training.loop, "Trainer", FakeTrainer)
    monkeypatch.setattr(trmlab.reports.html, "write_report", lambda path: Path(path) / "report.html")
    monkeypatch.setattr(demo, "_print_summary", lambda *args: None)
    return runs


def test_demo_twice_keeps_both_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runs = _fake_demo(monkeypatch)
    assert main(["demo", "max_steps=300"]) == 0
    assert main(["demo", "max_steps=300"]) == 0
    assert main(["demo"]) == 0
    assert runs == [Path("runs/demo"), Path("runs/demo-2"), Path("runs/demo-3")]
    assert all((tmp_path / run / "config.yaml").is_file() for run in runs)
    assert "runs/demo holds an earlier run (kept); this run goes to runs/demo-2" in capsys.readouterr().err


def test_demo_overwrite_replaces_only_a_run_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runs = _fake_demo(monkeypatch)
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    (tmp_path / "runs" / "demo" / "notes.txt").write_text("mine")
    assert main(["demo", "--overwrite"]) == 2
    assert "not a trmlab run directory" in capsys.readouterr().err
    assert (tmp_path / "runs" / "demo" / "notes.txt").read_text() == "mine"
    shutil.rmtree(tmp_path / "runs" / "demo")
    assert main(["demo"]) == 0 and main(["demo", "--overwrite"]) == 0
    assert runs == [Path("runs/demo"), Path("runs/demo")] and not (tmp_path / "runs" / "demo-2").exists()


@pytest.mark.parametrize(("words", "suggestion"), [
    (["--out", "x"], "did you mean out=?"), (["--data=y"], "did you mean data=?"),
    (["run_dir=z"], "did you mean out=?"), (["data_paths=[z]"], "did you mean data=?")])
def test_demo_old_spellings_fail_with_a_suggestion(words, suggestion, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", *words]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trmlab: error:") and suggestion in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ builds


def test_a_build_removes_the_staging_directory_of_a_dead_build(tmp_path, capsys):
    inputs = shared_path("fixtures/official-arc-build/small/input")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    stale = tmp_path / f".arc.partial-{int(gone.stdout)}-deadbeef"
    live = tmp_path / f".arc.partial-{os.getpid()}-0123abcd"  # a build still running (this process)
    for staging in (stale, live):
        (staging / "train").mkdir(parents=True)
    assert main(["data", "build-arc", "--input-file-prefix", str(inputs / "mini"), "--output-dir",
                 str(tmp_path / "arc"), "--subsets", "training", "evaluation", "--test-set-name",
                 "evaluation", "--num-aug", "2", "--quiet"]) == 0
    assert not stale.exists() and live.exists() and (tmp_path / "arc" / "identifiers.json").is_file()
    assert f"removed {stale}, the partial output of an earlier build" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    target = tmp_path / "disk"
    target.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'not permitted'}): the full-disk "
                    f"test needs one")
    yield target
    subprocess.run(["umount", str(target)], capture_output=True, check=False)


def test_a_full_disk_at_a_checkpoint_keeps_the_previous_one_and_the_run_resumes(preset, small_disk, capsys):
    run = small_disk / "run"
    # Room for the run and its first checkpoint (~270 KB), not for a second one.
    with open(small_disk / "filler", "wb") as handle:
        handle.write(b"\0" * (1024 * 1024 - 420 * 1024))
    code = main(["train", str(preset[0]), f"data_paths=[{preset[1]}]", f"run_dir={run}", "checkpoint_every=2",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert err.strip().splitlines()[-1].startswith("trmlab: error: run_dir") and "No space left" in err
    assert f"resume from step_2 with: trmlab train resume={run}" in err
    assert RunDir(run).checkpoint_steps() == [2]
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_2"]  # no partial directory
    (small_disk / "filler").unlink()  # space freed: the run continues from step_2
    assert main(["train", f"resume={run}", "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().err and 12 in RunDir(run).checkpoint_steps()
