"""Progress in every long command, as a redirected log sees it (../shared/style/cli.md "Progress and logs").

pytest's capture is not a terminal, so each command here writes what a log file would hold. The line interval
is set to 0 (a line at every update) so tiny runs show what a long run shows every ~10 s.
"""

from __future__ import annotations

import re

import pytest

from test_adapt import trmlab_checkpoint, write_tasks  # noqa: F401  (a module-scoped fixture)
from test_recipes import build
from trmlab import progress
from trmlab.cli import main

LINE = (r"{what}: \d[\d,]*/{total} {unit} \(\d+%\), [\d.,]+ (?:{unit}/s|s/\w+).*, \d+:\d\d elapsed, "
        r"\d+:\d\d left")


@pytest.fixture
def every_update(monkeypatch):
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)


def progress_lines(err: str, what: str, total: str, unit: str) -> list[str]:
    pattern = re.compile(LINE.format(what=re.escape(what), total=total, unit=unit))
    return [line for line in err.splitlines() if pattern.match(line)]


def test_sudoku_generate_build_train_eval_all_show_progress(tmp_path, every_update, capsys):
    data = build("sudoku", tmp_path)  # generate-sudoku, then build-sudoku --quiet
    err = capsys.readouterr().err
    assert progress_lines(err, "generating", "18", "puzzles")  # 12 train + 6 test
    assert not [line for line in err.splitlines() if line.startswith(("checking", "writing"))]  # --quiet

    assert main(["data", "build-sudoku", "--input-dir", str(tmp_path / "sudoku-csv"), "--output-dir",
                 str(tmp_path / "again"), "--num-aug", "2", "--seed", "0"]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("checking train.csv: ")]
    assert progress_lines(err, "writing train", "12", "puzzles")

    run = tmp_path / "run"
    # log_every far above the run's length: without progress lines the log would be silent until the end
    assert main(["train", "tiny", f"data_paths=[{data}]", f"run_dir={run}", "max_steps=4", "epochs=4",
                 "log_every=50", "eval_interval=null", "device=cpu", "arch.halt_max_steps=2"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    train = progress_lines(err, "train", "4", "steps")
    assert len(train) == 4 and "samples/s" in train[0]  # one line per step (interval 0), then the last
    assert re.search(r"^train: 4/4 steps, .* done in \d+:\d\d", err, re.M)
    assert "evaluating at step 4" in err and progress_lines(err, "eval", "1", "batches")  # the final one

    assert main(["eval", str(run / "checkpoints" / "step_4"), str(data), f"out={tmp_path / 'e'}",
                 "device=cpu", "votes=4", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "\r" not in err and progress_lines(err, "eval", "4", "batches")  # one batch per symmetry
    assert "evaluating" not in out and "Sudoku/exact_accuracy" in out  # logs on stderr, results on stdout


def test_build_arc_shows_progress_and_quiet_silences_it(official_arc_build_small, tmp_path, every_update,
                                                         capsys):
    prefix = official_arc_build_small / "input/mini"
    args = ["data", "build-arc", "--input-file-prefix", str(prefix), "--subsets", "training", "evaluation",
            "--num-aug", "3"]
    assert main([*args, "--output-dir", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert progress_lines(err, "augmenting", r"\d+", "tasks") and progress_lines(err, "writing train",
                                                                                 r"[\d,]+", "examples")
    assert main([*args, "--output-dir", str(tmp_path / "b"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_adapt_writes_plain_lines_to_a_log_for_training_and_prediction(trmlab_checkpoint, tmp_path,  # noqa: F811
                                                                      every_update, capsys):
    challenges, _ = write_tasks(tmp_path / "tasks", max_side=2)
    assert main(["adapt", str(trmlab_checkpoint), str(challenges), f"out={tmp_path / 'out'}", "steps=3",
                 "num_augmentations=2", "canvas=3", "device=cpu"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err  # tqdm's carriage-return bars used to land in redirected logs
    assert progress_lines(err, "train", "3", "steps")
    assert re.search(r"^eval: \d+/\d+ batches, .* done in", err, re.M)  # the prediction phase
