"""``trmlab report``: one self-contained HTML page for a run directory or an eval directory.

A run directory has ``config.yaml``, ``metrics.jsonl`` and ``eval/step_<N>/`` subdirectories; an eval
directory has ``metrics.json`` and ``predictions.json`` (written by ``trmlab eval`` / ``trmlab score`` /
training). The page shows the metrics, the curves grouped by kind (inline SVG with labelled axes:
``trmlab.reports.charts``) and, for the newest evaluation, every task: demonstration pairs, test inputs,
targets and top predictions in the ARC palette, solved/unsolved marked, with a legend for the colours. Demos
and targets come from the dataset recorded in ``metrics.json``. Everything is inlined (SVG, base64 PNG), so
the file can be mailed or archived on its own.
"""

from __future__ import annotations

import html
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trmlab.errors import ConfigError, DataError, not_utf8
from trmlab.progress import track
from trmlab.reports.charts import curves_section
from trmlab.reports.png import ARC_PALETTE, grid_data_uri
from trmlab.reports.puzzles import GRID_TASKS, legend, puzzle_section, swatch

SOLVED_MARK = "✔ solved"
UNSOLVED_MARK = "✘ unsolved"
HEADLINE_K = 2  # ARC's headline metric is pass@2: a task counts as solved when every test input passes at 2
SCORE_PREFIXES = ("ARC/", "Sudoku/", "Maze/", "Grid/")  # evaluators' metric names (trmlab.evaluation)


@dataclass
class EvalDir:
    """One evaluation's files, read."""

    path: Path
    label: str
    metrics: dict[str, Any]
    predictions: dict[str, list[dict[str, Any]]] | None


@dataclass
class ReportSource:
    """What a report is made of: the run's config and metric lines (if a run) and its evaluations."""

    path: Path
    kind: str  # "run" or "eval"
    config: dict[str, Any] | None = None
    metric_lines: list[dict[str, Any]] = field(default_factory=list)
    evals: list[EvalDir] = field(default_factory=list)


def _read_text(path: Path) -> str:
    """A UTF-8 text input of the report; other bytes are a DataError naming the file."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(not_utf8(path, error)) from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None


def _read_eval(path: Path, label: str) -> EvalDir:
    metrics = _read_json(path / "metrics.json")
    predictions = _read_json(path / "predictions.json") if (path / "predictions.json").is_file() else None
    return EvalDir(path, label, metrics, predictions)


def _read_metric_lines(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl lines; a torn last line (a killed run) is skipped, any other bad line is an error."""
    if not path.is_file():
        return []
    lines = _read_text(path).splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                continue
            raise DataError(f"{path}:{number}: not a JSON line") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: not a JSON object (each line is one record)")
        step = record.get("step", 0)
        if not isinstance(step, int) or isinstance(step, bool):
            raise DataError(f"{path}:{number}: 'step' is {step!r}, not an integer")
        records.append(record)
    return records


def _read_config(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(_read_text(path))
    except yaml.YAMLError as error:
        raise DataError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
    if document is not None and not isinstance(document, dict):
        raise DataError(f"{path}: not a trmlab config.yaml (a mapping expected)")
    return document


def _step_of(path: Path) -> int:
    match = re.fullmatch(r"step_(\d+)", path.name)
    return int(match.group(1)) if match else -1


def load_source(path: str | Path) -> ReportSource:
    """Read a run directory or an eval directory (see the module docstring)."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory; pass a run directory or an eval directory")
    if (root / "metrics.json").is_file():
        return ReportSource(root, "eval", evals=[_read_eval(root, root.name)])
    if not ((root / "config.yaml").is_file() or (root / "metrics.jsonl").is_file()):
        raise DataError(f"{root}: neither an eval directory (metrics.json) nor a run directory "
                        f"(config.yaml, metrics.jsonl)")
    source = ReportSource(root, "run", metric_lines=_read_metric_lines(root / "metrics.jsonl"))
    if (root / "config.yaml").is_file():
        source.config = _read_config(root / "config.yaml")
    eval_root = root / "eval"
    if eval_root.is_dir():
        dirs = sorted((d for d in eval_root.iterdir() if (d / "metrics.json").is_file()), key=_step_of)
        source.evals = [_read_eval(d, d.name) for d in dirs]
    return source


# -- pieces of the page --------------------------------------------------------------------------------------
def _img(grid: Any, caption: str, css: str = "") -> str:
    uri = grid_data_uri(grid)
    cap = html.escape(caption)
    if uri is None:
        return (f'<figure class="{css}"><div class="empty">(empty grid)</div>'
                f"<figcaption>{cap}</figcaption></figure>")
    shape = f"{len(grid)}×{len(grid[0])}"
    return (f'<figure class="{css}"><img src="{uri}" alt="{cap} {shape}">'
            f"<figcaption>{cap} <small>{shape}</small></figcaption></figure>")


def _is_score(key: str, value: Any) -> bool:
    """``ARC/pass@K``, ``Sudoku/exact_accuracy``, ``Maze/vote@8/token_accuracy`` ...: rates in [0, 1]."""
    return key.startswith(SCORE_PREFIXES) and isinstance(value, int | float) and not isinstance(value, bool)


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{v * 100:.2f}%</td></tr>"
                   for k, v in metrics.items() if _is_score(k, v))
    counts = metrics.get("counts", {})
    count_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in counts.items())
    settings = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in metrics.items()
                       if not _is_score(k, v) and k not in ("counts", "tasks"))
    evaluated = ""
    if "weights" in metrics:  # recorded by `trmlab eval` and by evaluations during training
        checkpoint = metrics.get("checkpoint")
        where = f" of <code>{html.escape(str(checkpoint))}</code>" if checkpoint else ""
        evaluated = (f"<p>evaluated: <b>{html.escape(str(metrics['weights']))} weights</b>{where}, step "
                     f"{html.escape(str(metrics.get('step')))}</p>")
    return (f'{evaluated}<div class="tables"><table><caption>scores</caption>{rows}</table>'
            f"<table><caption>counts</caption>{count_rows}</table>"
            f"<table><caption>settings</caption>{settings}</table></div>")


def _eval_history(evals: list[EvalDir]) -> str:
    if not evals:
        return "<p>No evaluations yet.</p>"
    keys = [k for k, v in evals[-1].metrics.items() if _is_score(k, v)]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join(
        f"<tr><th>{html.escape(e.label)}</th>"
        + "".join(f"<td>{e.metrics.get(k, float('nan')) * 100:.2f}%</td>" for k in keys) + "</tr>"
        for e in evals)
    return f"<table><tr><th>evaluation</th>{head}</tr>{body}</table>"


def _load_tasks(metrics: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """test_puzzles.json of the dataset recorded in metrics.json (demos and targets), or a note why not."""
    dataset = metrics.get("dataset")
    if not dataset:
        return None, "metrics.json records no dataset: demos and targets are not shown."
    path = Path(dataset) / "test_puzzles.json"
    if not path.is_file():
        return None, f"{path} is not readable here: demos and targets are not shown."
    return _read_json(path), ""


def _task_solved(task_metrics: dict[str, Any] | None, pairs: list[dict[str, Any]]) -> bool:
    if task_metrics and f"pass@{HEADLINE_K}" in task_metrics:
        return task_metrics[f"pass@{HEADLINE_K}"] == 1.0
    return bool(pairs) and all(p.get("label_rank") is not None and p["label_rank"] <= HEADLINE_K
                               for p in pairs)


def _task_section(task_id: str, pairs: list[dict[str, Any]], puzzle: dict[str, Any] | None,
                  task_metrics: dict[str, Any] | None, top: int) -> tuple[str, bool]:
    solved = _task_solved(task_metrics, pairs)
    mark = SOLVED_MARK if solved else UNSOLVED_MARK
    scores = ""
    if task_metrics:
        scores = " · ".join(f"{k} {v:.2f}" for k, v in task_metrics.items() if k.startswith("pass@"))
    parts = [f'<section class="task {"solved" if solved else "unsolved"}" id="task-{html.escape(task_id)}">',
             f'<h3><span class="mark">{mark}</span> {html.escape(task_id)} <small>{scores}</small></h3>']
    if puzzle is not None:
        demos = "".join(f'<div class="pair">{_img(p["input"], f"demo {i + 1} input")}'
                        f'{_img(p["output"], f"demo {i + 1} output")}</div>'
                        for i, p in enumerate(puzzle.get("train", [])))
        parts.append(f'<div class="row demos">{demos}</div>')
    for pair in pairs:
        index = pair["test_index"]
        row = []
        if puzzle is not None and index < len(puzzle.get("test", [])):
            row.append(_img(puzzle["test"][index]["input"], f"test {index + 1} input"))
            row.append(_img(puzzle["test"][index]["output"], "target", "target"))
        for candidate in pair["candidates"][:top]:
            ok = "✔" if candidate["correct"] else "✘"
            caption = f'#{candidate["rank"]} {ok} votes {candidate["votes"]}, q {candidate["mean_q"]:.3f}'
            css = "right" if candidate["correct"] else "wrong"
            if candidate.get("grid") is None:
                row.append(f'<figure class="{css}"><div class="empty">(grid not kept)</div>'
                           f"<figcaption>{html.escape(caption)}</figcaption></figure>")
            else:
                row.append(_img(candidate["grid"], caption, css))
        if not pair["candidates"]:
            row.append('<figure class="wrong"><div class="empty">no votes</div></figure>')
        rank = pair.get("label_rank")
        where = f"target at rank {rank}" if rank else "target not predicted"
        parts.append(f'<div class="row test"><p>test input {index + 1}: {pair["votes"]} votes, '
                     f'{pair["num_candidates"]} candidates, {where}</p>{"".join(row)}</div>')
    parts.append("</section>")
    return "".join(parts), solved


def _tasks(evaluation: EvalDir, max_tasks: int | None, top: int) -> str:
    if evaluation.metrics.get("task") in GRID_TASKS:  # Sudoku / Maze: one answer per puzzle, no votes
        return puzzle_section(evaluation.path, evaluation.metrics, max_tasks)
    if evaluation.predictions is None:
        return f"<p>{html.escape(str(evaluation.path))} has no predictions.json: no per-task view.</p>"
    puzzles, note = _load_tasks(evaluation.metrics)
    per_task = evaluation.metrics.get("tasks", {})
    ids = list(evaluation.predictions)[:max_tasks] if max_tasks else list(evaluation.predictions)
    sections, index = [], []
    for task_id in track(ids, "drawing tasks", unit="tasks"):  # 400 tasks of PNG grids: seconds
        puzzle = puzzles.get(task_id) if puzzles is not None else None
        section, solved = _task_section(task_id, evaluation.predictions[task_id], puzzle,
                                        per_task.get(task_id), top)
        sections.append(section)
        css = "solved" if solved else "unsolved"
        index.append(f'<a class="{css}" href="#task-{html.escape(task_id)}">'
                     f'{"✔" if solved else "✘"} {html.escape(task_id)}</a>')
    solved_count = sum("✔" in i for i in index)
    total = len(evaluation.predictions)
    shown = f"{len(ids)} of {total} tasks shown" if len(ids) < total else f"{len(ids)} tasks"
    head = (f"<p>{shown}; {solved_count} solved (every test input right within {HEADLINE_K} attempts). "
            f"{html.escape(note)}</p>")
    return head + arc_legend() + f'<nav class="index">{" ".join(index)}</nav>' + "".join(sections)


def arc_legend() -> str:
    """What the frames around the ARC pictures mean, and the palette's colour numbers."""
    frames = [(swatch("#fff", "", f"outline:3px {FRAMES['target']}"), "the target"),
              (swatch("#fff", "", f"outline:3px {FRAMES['right']}"),
               f"a prediction equal to the target ({SOLVED_MARK[0]})"),
              (swatch("#fff", "", f"outline:3px {FRAMES['wrong']}"),
               f"a wrong prediction ({UNSOLVED_MARK[0]})")]
    colours = [(swatch(f"#{r:02x}{g:02x}{b:02x}", "", ""), str(number))
               for number, (r, g, b) in enumerate(ARC_PALETTE.tolist())]
    return legend(frames, "frames") + legend(colours, "ARC colours 0-9")


FRAMES = {"target": "solid #888", "right": "solid #2a2", "wrong": "dashed #c33"}  # ARC pictures' frames
STYLE = "".join(f"figure.{kind} img{{outline:3px {line}}}" for kind, line in FRAMES.items()) + """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{font-size:1.4em} h2{border-bottom:1px solid #ccc;margin-top:1.6em} h3{margin:.3em 0}
table{border-collapse:collapse;margin:.4em 1em .4em 0;font-size:.9em;vertical-align:top}
td,th{border:1px solid #ddd;padding:.15em .5em;text-align:left} caption{font-weight:bold;text-align:left}
.tables{display:flex;flex-wrap:wrap;align-items:flex-start}
.task{border:1px solid #ddd;border-left:6px solid #c33;padding:.4em .8em;margin:.8em 0}
.task.solved{border-left-color:#2a2}
.solved .mark,a.solved{color:#2a2} .unsolved .mark,a.unsolved{color:#c33}
.row{display:flex;flex-wrap:wrap;align-items:flex-end;gap:.6em;margin:.3em 0}
.row p{flex-basis:100%;margin:.2em 0;font-size:.85em;color:#555}
.pair{display:flex;gap:.2em;padding:.2em;background:#f4f4f4}
figure{margin:0;text-align:center} figcaption{font-size:.75em}
.empty{width:60px;height:40px;display:flex;align-items:center;justify-content:center;font-size:.7em;
 background:#eee}
.index a{margin-right:.6em;text-decoration:none;font-family:monospace} .note{color:#a60}
pre{background:#f6f6f6;padding:.5em;overflow:auto;max-height:30em}
.groups{display:flex;flex-wrap:wrap;gap:0 2em;align-items:flex-start}
.group{margin:.6em 0 1em} .panels{display:flex;flex-wrap:wrap;gap:.8em;align-items:flex-start}
figure.chart{border:1px solid #e4e4e4;padding:.2em;background:#fff}
svg.chart{display:block;font-family:system-ui,sans-serif}
svg.chart .chart-title{font-size:11px;font-weight:600;fill:#222} svg.chart .tick{font-size:9px;fill:#555}
svg.chart .axis-label{font-size:10px;fill:#333} svg.chart .axis,svg.chart .tickmark{stroke:#555;fill:none}
svg.chart .gridline{stroke:#eee} svg.chart .series{stroke:#1f5fa8;stroke-width:1.6;fill:none}
svg.chart .point{fill:#1f5fa8} .axes-note{font-size:.85em;color:#555}
table.values td.value{font-family:monospace;text-align:right}
.legend{display:flex;flex-wrap:wrap;gap:.3em 1.2em;align-items:center;font-size:.85em;margin:.4em 0;
 padding:.3em .6em;background:#fafafa;border:1px solid #e4e4e4}
.legend .key{display:inline-flex;align-items:center;gap:.35em}
.legend .swatch{display:inline-block;min-width:1.5em;height:1.5em;border:1px solid #999;text-align:center;
 font-family:monospace;line-height:1.5em}
"""


def render_report(path: str | Path, *, max_tasks: int | None = None, top: int = 3) -> str:
    """The HTML page for a run or eval directory (see the module docstring)."""
    source = load_source(path)
    title = f"trmlab report: {source.path.name}"
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>{source.kind} directory <code>{html.escape(str(source.path.resolve()))}</code>, "
            f"generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')}</p>"]
    if source.kind == "run":
        body.append("<h2>Curves</h2>" + curves_section(source.metric_lines))
        body.append("<h2>Evaluations</h2>" + _eval_history(source.evals))
    latest = source.evals[-1] if source.evals else None
    if latest is not None:
        body.append(f"<h2>Metrics ({html.escape(latest.label)})</h2>" + _metrics_table(latest.metrics))
        body.append(f"<h2>Tasks ({html.escape(latest.label)})</h2>" + _tasks(latest, max_tasks, top))
    if source.config is not None:
        text = yaml.safe_dump(source.config.get("config", source.config), sort_keys=False)
        body.append(f"<h2>Config</h2><details><summary>config.yaml</summary><pre>{html.escape(text)}</pre>"
                    f"</details>")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(path: str | Path, out: str | Path | None = None, **options: Any) -> Path:
    """Render and write the report atomically (default: ``<DIR>/report.html``); returns its path."""
    target = Path(out) if out is not None else Path(path) / "report.html"
    if out is not None and not target.parent.is_dir():  # checked first: nothing is created on the way
        raise ConfigError(f"out={out}: the directory {target.parent} does not exist; create it or choose "
                          f"another out=FILE")
    text = render_report(path, **options)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
