"""``trmlab report``: a self-contained HTML page for eval and run directories."""

from __future__ import annotations

import json
import re
import shutil
import sys

import numpy as np
import pytest
import yaml

from trmlab.cli import main
from trmlab.errors import DataError
from trmlab.reports.html import SOLVED_MARK, UNSOLVED_MARK, render_report
from trmlab.reports.png import ARC_PALETTE, encode_png, grid_image


@pytest.fixture
def eval_dir(official_eval_small, official_arc_build_small, tmp_path):
    """The official fixture re-scored with trmlab score: 4 tasks, pass@1 = 0.5, pass@2 = 1."""
    out = tmp_path / "eval"
    assert main(["score", str(official_arc_build_small / "output"),
                 str(official_eval_small / "raw_predictions.npz"), f"out={out}"]) == 0
    return out


def _check_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r'(src|href)="(https?:|file:|/)', page)  # every image inlined, no external links


def test_report_of_an_eval_dir_shows_every_task_and_its_mark(eval_dir, official_arc_build_small, capsys):
    assert main(["report", str(eval_dir)]) == 0
    page = (eval_dir / "report.html").read_text()
    assert f"wrote {eval_dir / 'report.html'}" in capsys.readouterr().out
    _check_self_contained(page)
    tasks = json.loads((official_arc_build_small / "output/test_puzzles.json").read_text())
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    for task_id in tasks:
        assert f'id="task-{task_id}"' in page
        solved = metrics["tasks"][task_id]["pass@2"] == 1.0
        section = page.split(f'id="task-{task_id}"')[1].split("</section>")[0]
        assert (SOLVED_MARK if solved else UNSOLVED_MARK) in section
        # demos + test input + target + top-3 predictions, each an inlined PNG
        n_demos = len(tasks[task_id]["train"])
        assert section.count("data:image/png;base64,") >= 2 * n_demos + 2
    assert page.count(SOLVED_MARK) == 4  # pass@2 = 1.0 on every task of the fixture
    assert "ARC/pass@1" in page and "50.00%" in page


def test_report_marks_unsolved_tasks(eval_dir):
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    first = next(iter(metrics["tasks"]))
    metrics["tasks"][first]["pass@2"] = 0.0
    (eval_dir / "metrics.json").write_text(json.dumps(metrics))
    page = render_report(eval_dir)
    section = page.split(f'id="task-{first}"')[1].split("</section>")[0]
    assert UNSOLVED_MARK in section and page.count(SOLVED_MARK) == 3


def test_report_of_a_run_dir_has_curves_and_the_latest_eval(eval_dir, tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    shutil.copytree(eval_dir, run / "eval" / "step_20")
    shutil.copytree(eval_dir, run / "eval" / "step_100")
    (run / "config.yaml").write_text(yaml.safe_dump({"config": {"lr": 0.0001, "arch": {"hidden_size": 64}},
                                                     "provenance": {}}))
    lines = [{"step": s, "epoch": 0, "split": "train", "lm_loss": 2.0 / s, "exact_accuracy": s / 100}
             for s in (10, 20, 30)]
    lines.append({"step": 20, "epoch": 0, "split": "eval", "ARC/pass@1": 0.25, "ARC/pass@2": 0.5})
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 4')  # torn
    page = render_report(run)
    _check_self_contained(page)
    assert 'alt="learning curves"' in page
    assert "Tasks (step_100)" in page and "step_20" in page
    assert "hidden_size: 64" in page


def test_report_without_matplotlib_skips_curves_with_a_note(eval_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "split": "train", "lm_loss": 1.0}) + "\n")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    page = render_report(run)
    assert "matplotlib is not installed" in page and "learning curves skipped" in page


def test_report_refuses_a_directory_that_is_neither(tmp_path, capsys):
    with pytest.raises(DataError, match="neither an eval directory"):
        render_report(tmp_path)
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_grid_png_uses_the_arc_palette():
    image = grid_image([[0, 1], [2, 9]], cell=3)
    assert image.shape == (9, 9, 3)
    assert np.array_equal(image[1, 1], ARC_PALETTE[0]) and np.array_equal(image[5, 5], ARC_PALETTE[9])
    png = encode_png(image)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png.endswith(b"IEND\xaeB`\x82")
