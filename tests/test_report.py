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


def _run_dir(eval_dir, tmp_path, lines):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    shutil.copytree(eval_dir, run / "eval" / "step_20")
    shutil.copytree(eval_dir, run / "eval" / "step_100")
    (run / "config.yaml").write_text(yaml.safe_dump({"config": {"lr": 0.0001, "arch": {"hidden_size": 64}},
                                                     "provenance": {}}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 4')  # torn
    return run


def _train_lines(steps=(10, 20, 30)):
    return [{"step": s, "epoch": 0, "split": "train", "lm_loss": 2.0 / s, "exact_accuracy": s / 100,
             "q_halt_accuracy": 0.5 + s / 100, "steps": 16 - s / 10, "lr": 1e-4, "grad_norm": 1.0 / s,
             "samples_per_s": 700.0 + s, "steps_per_s": 2.0} for s in steps]


def _figure(page, metric):
    """The <figure> of one chart, or None."""
    start = page.find(f'<figure class="chart" data-metric="{metric}">')
    return None if start < 0 else page[start:page.index("</figure>", start)]


def test_report_of_a_run_dir_has_curves_and_the_latest_eval(eval_dir, tmp_path):
    lines = _train_lines()
    lines.append({"step": 20, "epoch": 0, "split": "eval", "ARC/pass@1": 0.25, "ARC/pass@2": 0.5})
    run = _run_dir(eval_dir, tmp_path, lines)
    page = render_report(run)
    _check_self_contained(page)
    assert "<h2>Curves</h2>" in page and "<svg" in page
    assert "Tasks (step_100)" in page and "step_20" in page
    assert "hidden_size: 64" in page


def test_curves_are_grouped_with_labelled_axes_and_units(eval_dir, tmp_path):
    page = render_report(_run_dir(eval_dir, tmp_path, _train_lines()))
    order = [page.find(f'id="group-{group}"') for group in ("loss", "accuracy", "halting", "throughput",
                                                            "other")]
    assert -1 not in order and order == sorted(order)
    expected_y = {"train/lm_loss": "loss per sample", "train/exact_accuracy": "exact accuracy (%)",
                  "train/q_halt_accuracy": "halt decision right (%)", "train/steps": "ACT steps per row",
                  "train/grad_norm": "gradient L2 norm"}
    for metric, y_label in expected_y.items():
        figure = _figure(page, metric)
        assert figure is not None, metric
        assert '<text class="axis-label x"' in figure and ">optimizer step</text>" in figure
        assert f">{y_label}</text>" in figure.split('class="axis-label y"')[1]
        assert figure.count('class="tick y"') >= 2 and figure.count('class="tick x"') >= 2
    assert '>30</text>' in _figure(page, "train/exact_accuracy")  # a rate is drawn in % (0.30 → 30)


def test_throughput_and_single_points_are_values_not_curves(eval_dir, tmp_path):
    lines = _train_lines()
    lines.append({"step": 30, "epoch": 0, "split": "eval", "Sudoku/exact_accuracy": 0.125})
    page = render_report(_run_dir(eval_dir, tmp_path, lines))
    for metric in ("train/samples_per_s", "train/steps_per_s", "train/lr", "eval/Sudoku/exact_accuracy"):
        assert _figure(page, metric) is None, metric
    throughput = page.split('id="group-throughput"')[1].split("</section>")[0]
    assert "<svg" not in throughput and "samples/s" in throughput and ">730</td>" in throughput  # last
    evaluation = page.split('id="group-evaluation"')[1].split("</section>")[0]
    assert "eval/Sudoku/exact_accuracy" in evaluation and "12.50%" in evaluation
    assert "at step 30" in evaluation
    assert "train/lr" in page.split('id="group-other"')[1].split("</section>")[0]  # constant: a value
    assert "constant over 3 logs" in page


def test_pass_at_k_gets_one_small_chart_each_on_a_shared_range(eval_dir, tmp_path):
    lines = _train_lines()
    ks = (1, 2, 5, 10, 100, 1000)
    lines += [{"step": s, "epoch": 0, "split": "eval", **{f"ARC/pass@{k}": s / 100 + k / 2000 for k in ks}}
              for s in (10, 20, 30)]
    page = render_report(_run_dir(eval_dir, tmp_path, lines))
    figures = [_figure(page, f"ARC/pass@{k}") for k in ks]
    assert all(f is not None and f.count('class="series"') == 1 for f in figures)  # one line per chart
    assert "legend" not in "".join(figures)
    y_ticks = {tuple(re.findall(r'class="tick y"[^>]*>([^<]+)<', f)) for f in figures}
    assert len(y_ticks) == 1  # the same y axis on every panel


def test_report_needs_no_matplotlib(eval_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    page = render_report(_run_dir(eval_dir, tmp_path, _train_lines()))
    assert _figure(page, "train/lm_loss") is not None


def test_a_wrong_digit_on_a_given_cell_is_marked_wrong(tmp_path):
    from trmlab.reports.puzzles import puzzle_section

    # 4×4 Sudoku, tokens = digit + 1 (1 = blank). The model keeps every given but changes the first one.
    answer = np.array([1, 2, 3, 4, 3, 4, 1, 2, 2, 1, 4, 3, 4, 3, 2, 1], np.uint8) + 1
    question = answer.copy()
    question[[1, 2, 5, 6, 9, 10, 13, 14]] = 1
    prediction = answer.copy()
    prediction[0] = 3  # a given 1 predicted as 2
    prediction[1] = 5  # a blank filled in wrong (4 instead of 2)
    (tmp_path / "data" / "test").mkdir(parents=True)
    np.save(tmp_path / "data" / "test" / "all__labels.npy", answer[None])
    np.savez(tmp_path / "raw_predictions.npz", inputs=question[None],
             preds=prediction[None])
    section = puzzle_section(tmp_path, {"task": "sudoku", "dataset": str(tmp_path / "data")}, None)
    predicted = section.split("<figcaption>input</figcaption>")[1]
    cells = re.findall(r'<td class="([^"]*)">(.*?)</td>', predicted)
    assert "given" in cells[0][0] and "bad" in cells[0][0] and cells[0][1] == "2<sub>1</sub>"
    assert "bad" in cells[1][0] and cells[1][1] == "4<sub>2</sub>"
    assert "given" in cells[3][0] and "bad" not in cells[3][0]
    assert "✘ unsolved" in section
    assert 'class="legend"' in section and "a given changed by the model (wrong)" in section


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
