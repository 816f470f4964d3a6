"""The CLI layer: startup without torch, ``--version``, and failures that end as one line and a non-zero exit
code with nothing half-written (read-only or full disk, a file in the way, non-UTF-8 input, Ctrl-C, a closed
pipe)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from train_helpers import write_tiny_dataset
from trmlab import __version__
from trmlab.cli import COMMAND_MODULES, build_parser, main

SRC = Path(__file__).resolve().parents[1] / "src"


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single line the CLI printed on stderr (and assert it is exactly one, with no traceback)."""
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("trmlab: error: ")
    return lines[0]


def leftovers(root: Path) -> list[str]:
    """Every path under ``root`` (hidden staging directories included)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def run_python(code: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def fail_under(monkeypatch: pytest.MonkeyPatch, root: Path, code: int) -> None:
    """Make every directory creation under ``root`` fail with ``code`` (tests run as root, where a chmod
    would not make anything read-only)."""
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args, **kwargs) -> None:
        if self == root or root in self.parents:
            raise OSError(code, os.strerror(code), str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)


# ---------------------------------------------------------------------------------------------------------
# Startup


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"trmlab {__version__}\n"


def test_command_table_matches_the_registered_commands():
    def commands(parser) -> set[str]:
        return {name for action in parser._subparsers._group_actions for name in action.choices}

    assert commands(build_parser()) == set(COMMAND_MODULES)
    for command in COMMAND_MODULES:
        assert command in commands(build_parser(command)), command


@pytest.mark.parametrize("argv", [["--help"], ["data", "--help"], ["data", "build-arc", "--help"],
                                  ["checkpoint", "inspect", "--help"], ["eval", "--help"]])
def test_parsers_do_not_import_torch(argv):
    process = run_python(f"""
        import sys
        from trmlab.cli import main
        try:
            main({argv!r})
        except SystemExit:
            pass
        print("torch" in sys.modules)
    """)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert out.splitlines()[-1] == "False"


def test_data_commands_do_not_import_torch(official_arc_build_small, tmp_path):
    prefix = official_arc_build_small / "input/mini"
    process = run_python(f"""
        import sys
        from trmlab.cli import main
        code = main(["data", "build-arc", "--input-file-prefix", {str(prefix)!r}, "--output-dir",
                     {str(tmp_path / "out")!r}, "--subsets", "training", "evaluation", "--num-aug", "2",
                     "--quiet"])
        code += main(["data", "inspect", {str(tmp_path / "out")!r}])
        print(code, "torch" in sys.modules)
    """)
    out, err = process.communicate(timeout=60)
    assert out.split()[-2:] == ["0", "False"], err
    assert (tmp_path / "out/identifiers.json").is_file()


# ---------------------------------------------------------------------------------------------------------
# data build-arc


def build_args(prefix: Path, out: Path) -> list[str]:
    return ["data", "build-arc", "--input-file-prefix", str(prefix), "--output-dir", str(out),
            "--subsets", "training", "evaluation", "--num-aug", "4", "--quiet"]


def test_build_arc_into_a_read_only_directory(official_arc_build_small, tmp_path, monkeypatch, capsys):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    fail_under(monkeypatch, read_only, errno.EROFS)
    assert main(build_args(official_arc_build_small / "input/mini", read_only / "out")) == 3
    line = one_error_line(capsys)
    assert f"--output-dir {read_only / 'out'}: cannot write: Read-only file system" in line
    assert leftovers(read_only) == []


def test_build_arc_on_a_full_disk_removes_its_partial_output(official_arc_build_small, tmp_path, monkeypatch,
                                                             capsys):
    from trmlab.data import build_arc

    real_write = build_arc.NpyStreamWriter.write
    calls = []

    def write(self, block: np.ndarray) -> None:
        calls.append(self.path)
        if len(calls) == 3:  # after some bytes reached the disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(self, block)

    monkeypatch.setattr(build_arc.NpyStreamWriter, "write", write)
    assert main(build_args(official_arc_build_small / "input/mini", tmp_path / "out")) == 3
    line = one_error_line(capsys)
    assert f"--output-dir {tmp_path / 'out'}: cannot write: No space left on device" in line
    assert "partial output was removed" in line
    assert leftovers(tmp_path) == []


def test_build_synthetic_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    from trmlab.data import synthetic

    real_write, calls = synthetic.write_json, []

    def write_json(path, value):
        calls.append(path)
        if len(calls) == 4:  # after the first layout is complete on disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, value)

    monkeypatch.setattr(synthetic, "write_json", write_json)
    out = tmp_path / "synthetic"
    assert main(["data", "build-synthetic", "--output-dir", str(out), "--families", "colour_permutation",
                 "--train-tasks", "2", "--eval-tasks", "1"]) == 3
    line = one_error_line(capsys)
    assert f"--output-dir {out}: cannot write: No space left on device" in line
    assert leftovers(tmp_path) == []


def test_build_arc_over_a_file(official_arc_build_small, tmp_path, capsys):
    (tmp_path / "out").write_text("keep me")
    assert main(build_args(official_arc_build_small / "input/mini", tmp_path / "out")) == 2
    assert f"--output-dir {tmp_path / 'out'}: exists and is not a directory" in one_error_line(capsys)
    assert (tmp_path / "out").read_text() == "keep me"


def test_input_json_that_is_not_utf8(tmp_path, capsys):
    challenges = tmp_path / "arc_training_challenges.json"
    challenges.write_bytes(b'{"t\xe9st": {"train": [], "test": []}}')  # Latin-1 é
    args = ["data", "build-arc", "--input-file-prefix", str(tmp_path / "arc"), "--output-dir",
            str(tmp_path / "out"), "--subsets", "training", "--test-set-name", "training", "--quiet"]
    assert main(args) == 2
    line = one_error_line(capsys)
    assert f"{challenges}: not UTF-8 text (byte 0xe9 at offset 3); save the file as UTF-8" in line
    assert leftovers(tmp_path) == [challenges.name]


def test_ctrl_c_in_a_data_build(official_arc_build_small, tmp_path):
    """A real SIGINT in the middle of writing: one line, exit code 130, the staging directory removed."""
    args = build_args(official_arc_build_small / "input/mini", tmp_path / "out")
    process = run_python(f"""
        import os, signal, sys, time
        from trmlab.cli import main
        from trmlab.data import build_arc

        real_write_split = build_arc.write_split

        def write_split(*args, **kwargs):
            real_write_split(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGINT)
            # Short sleeps: the kernel may hand the signal to another thread (the writer's, numpy's), and
            # then only the main thread's next bytecode, not an interrupted sleep, runs the handler.
            for _ in range(300):
                time.sleep(0.1)

        build_arc.write_split = write_split
        sys.exit(main({args!r}))
    """)
    _, err = process.communicate(timeout=60)
    assert (process.returncode, err) == (130, "trmlab: error: interrupted\n")
    assert leftovers(tmp_path) == []


def test_closed_pipe_exits_quietly():
    """`trmlab config show trm-arc1 | head -0`: no traceback, the exit code of a tool killed by SIGPIPE."""
    process = run_python("""
        import sys
        from trmlab.cli import main
        sys.exit(main(["config", "show", "trm-arc1"]))
    """)
    process.stdout.close()  # the reader is gone before the command writes
    err = process.stderr.read()
    assert process.wait(timeout=60) == 141
    assert err == ""


# ---------------------------------------------------------------------------------------------------------
# train


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return write_tiny_dataset(tmp_path / "data")


@pytest.fixture
def no_eval(monkeypatch):
    import trmlab.training.evaluate as evaluate

    # The tiny dataset has no ARC test set: evaluation is not what these tests are about.
    monkeypatch.setattr(evaluate, "check_eval_data", lambda config: None)
    monkeypatch.setattr(evaluate, "evaluate_during_training", lambda trainer, step: {})


def train_args(data: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "tiny", f"data_paths=[{data}]", f"run_dir={run}", "device=cpu", "global_batch_size=4",
            "arch.hidden_size=16", "arch.num_heads=2", "arch.L_layers=1", "arch.halt_max_steps=2",
            "arch.puzzle_emb_ndim=16", "--no-progress", *extra]


def test_train_run_dir_that_is_a_file(tiny_data, tmp_path, no_eval, capsys):
    run = tmp_path / "run"
    run.write_text("notes")
    assert main(train_args(tiny_data, run, "max_steps=1")) == 2
    line = one_error_line(capsys)
    assert f"run_dir {run}: exists and is a file, not a directory" in line
    assert run.read_text() == "notes"


def test_train_into_a_read_only_directory(tiny_data, tmp_path, no_eval, monkeypatch, capsys):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    fail_under(monkeypatch, read_only, errno.EACCES)
    assert main(train_args(tiny_data, read_only / "run", "max_steps=1")) == 3
    line = one_error_line(capsys)
    assert line.startswith(f"trmlab: error: run_dir {read_only / 'run'}: cannot write: Permission denied")
    assert line.endswith("; choose a directory you can write to; partial output was removed")
    assert leftovers(read_only) == []


def test_train_on_a_full_disk_keeps_the_last_complete_checkpoint(tiny_data, tmp_path, no_eval, monkeypatch,
                                                                  capsys):
    from trmlab.checkpoints import bundle

    real_write_part = bundle._write_part

    def write_part(path: Path, name: str, part):
        if path.parent.name.startswith(".step_4.") and name == "model.safetensors":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_part(path, name, part)

    monkeypatch.setattr(bundle, "_write_part", write_part)
    run = tmp_path / "run"
    assert main(train_args(tiny_data, run, "max_steps=4", "checkpoint_every=2", "keep_last=5",
                     "eval_interval=null")) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"trmlab: error: run_dir {run}: cannot write: No space left on device; free some space or write "
        f"elsewhere; partial output was removed; resume from step_2 with: trmlab train resume={run}")
    assert os.listdir(run / "checkpoints") == ["step_2"]


def test_resume_of_a_missing_directory(tmp_path, capsys):
    assert main(["train", f"resume={tmp_path / 'nope'}"]) == 2
    assert f"resume={tmp_path / 'nope'}: the directory does not exist" in one_error_line(capsys)


# ---------------------------------------------------------------------------------------------------------
# train: progress and logging


@pytest.fixture
def recorded_eval(monkeypatch):
    """Evaluations during training, stubbed: records the progress flag each call got."""
    import trmlab.evaluation.runner as runner
    import trmlab.training.evaluate as evaluate

    calls = []
    monkeypatch.setattr(evaluate, "check_eval_data", lambda config: None)
    monkeypatch.setattr(runner, "evaluate", lambda *args, **kwargs: calls.append(kwargs["progress"]))
    return calls


def progress_run(tiny_data: Path, run: Path, *extra: str) -> list[str]:
    return [word for word in train_args(tiny_data, run, "max_steps=4", "log_every=2", "eval_interval=null",
                                        *extra) if word != "--no-progress"]


@pytest.mark.parametrize("flag", [[], ["--no-progress"]])
def test_without_a_terminal_or_with_no_progress_metrics_are_logged_as_lines(tiny_data, tmp_path,
                                                                          recorded_eval, capsys, flag):
    assert main(progress_run(tiny_data, tmp_path / "run", *flag)) == 0
    err = capsys.readouterr().err
    assert "\r" not in err  # no progress bar updates in a log file
    lines = [line for line in err.splitlines() if line.startswith("step ")]
    assert [line.split(" (")[0] for line in lines] == ["step 2/4", "step 4/4"]
    assert "lm_loss " in lines[0] and "steps/s" in lines[0]
    # the evaluation shows progress too: plain lines in a log (trmlab.progress decides bar or lines)
    assert "evaluating at step 4 (ema weights, " in err and recorded_eval == [True]


def test_on_a_terminal_the_bar_replaces_the_lines(tiny_data, tmp_path, recorded_eval, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(progress_run(tiny_data, tmp_path / "run")) == 0
    err = capsys.readouterr().err
    assert "\r" in err and not [line for line in err.splitlines() if line.startswith("step ")]
    assert recorded_eval == [True]  # the evaluation shows its own progress bar


def test_train_with_a_full_disk_during_an_evaluation(tiny_data, tmp_path, monkeypatch, capsys):
    import trmlab.training.evaluate as evaluate
    from trmlab.errors import write_failure

    def evaluation_on_a_full_disk(trainer, step):
        full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise write_failure(str(trainer.run_dir.eval_path(step)), full)

    monkeypatch.setattr(evaluate, "check_eval_data", lambda config: None)
    monkeypatch.setattr(evaluate, "evaluate_during_training", evaluation_on_a_full_disk)
    run = tmp_path / "run"
    assert main(train_args(tiny_data, run, "max_steps=2", "eval_interval=null")) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("trmlab: error:") == 1
    assert err.splitlines()[-1] == (
        f"trmlab: error: {run / 'eval/step_2'}: cannot write: No space left on device; free some space or "
        f"write elsewhere; partial output was removed; resume from step_2 with: trmlab train resume={run}")


def test_an_unexpected_exception_is_one_line_exit_4_with_the_traceback_in_a_file(monkeypatch, capsys):
    import trmlab.cli as cli

    def broken(argv):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(cli, "_dispatch", broken)
    assert cli.main(["config", "show", "tiny"]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "internal error" in err
    saved = err.split("traceback written to ")[1].split(";")[0]
    assert "ZeroDivisionError: boom" in Path(saved).read_text()
    Path(saved).unlink()
