"""The report's curves: metrics.jsonl grouped (loss, accuracy, halting, evaluation, throughput, other) and
drawn as inline SVG charts, so that titles, axis labels and tick values are text in the page (searchable,
readable by a screen reader, checked by the browser test) and no plotting library is needed.

Rules a reader can rely on: the x axis is always the optimizer step; every y axis names the quantity and its
unit (rates in [0, 1] are shown in %); a metric logged once is a value, not a lone dot; a metric that never
changed is listed as a constant; throughput (samples/s, steps/s) is a table of values, never a curve; the
ARC pass@K scores get one small chart each, on a shared y range, instead of overlapping lines under a legend.
"""

from __future__ import annotations

import html
import math
import statistics
from dataclasses import dataclass
from typing import Any

GROUPS = ("Loss", "Accuracy", "Halting", "Evaluation", "Throughput", "Other")
X_LABEL = "optimizer step"
WIDTH, HEIGHT = 300, 190      # one chart, in CSS pixels
SMALL_WIDTH = 210             # one pass@K panel
MARGIN = {"left": 58, "right": 12, "top": 24, "bottom": 40}
MAX_MARKERS = 30              # points drawn as dots up to this many (beyond: the line alone)


@dataclass
class Series:
    """One metric over the run: where it belongs and how its axis is labelled."""

    name: str                 # split-prefixed, e.g. train/lm_loss, eval/Sudoku/exact_accuracy, ARC/pass@2
    steps: list[float]
    values: list[float]
    group: str
    unit: str                 # y-axis label: the quantity and its unit
    scale: float = 1.0        # 100 for rates shown in %

    @property
    def shown(self) -> list[float]:
        return [v * self.scale for v in self.values]

    def format(self, value: float) -> str:
        return f"{value * self.scale:.2f}%" if self.scale == 100 else _number(value)


def collect_series(lines: list[dict[str, Any]]) -> dict[str, Series]:
    """metric name → Series over the metrics.jsonl records (keys prefixed with their split)."""
    series: dict[str, Series] = {}
    for record in lines:
        split = record.get("split", "train")
        if "step" not in record:
            continue
        for key, value in record.items():
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if key in ("step", "epoch", "split") or not numeric:
                continue
            name = key if key.startswith(("ARC/", f"{split}/")) else f"{split}/{key}"
            if name not in series:
                series[name] = Series(name, [], [], *classify(name))
            series[name].steps.append(float(record["step"]))
            series[name].values.append(float(value))
    return series


def classify(name: str) -> tuple[str, str, float]:
    """(group, y-axis label with unit, scale) of a metric from its name."""
    leaf = name.rsplit("/", 1)[-1]
    if leaf in ("samples_per_s", "steps_per_s"):
        return "Throughput", leaf.replace("_per_s", "/s"), 1.0
    if "/encoder/" in f"/{name}" or name.startswith(("train/encoder", "eval/encoder")):
        return "Other", leaf.replace("_", " "), 1.0
    is_eval = name.startswith(("eval/", "ARC/"))
    if is_eval and (leaf.startswith("pass@") or "accuracy" in leaf):
        return "Evaluation", f"{leaf.replace('_', ' ')} (%)", 100.0
    if is_eval:
        return "Evaluation", leaf.replace("_", " "), 1.0
    if "q_halt" in leaf or "q_continue" in leaf or leaf == "steps":
        if leaf.endswith("accuracy"):
            return "Halting", "halt decision right (%)", 100.0
        if leaf.endswith("loss"):
            return "Halting", "halting loss per sample", 1.0
        return "Halting", "ACT steps per row" if leaf == "steps" else leaf, 1.0
    if leaf.endswith("loss"):
        return "Loss", "loss per sample", 1.0
    if "accuracy" in leaf:
        return "Accuracy", f"{leaf.replace('_', ' ')} (%)", 100.0
    return "Other", OTHER_UNITS.get(leaf, leaf.replace("_", " ")), 1.0


OTHER_UNITS = {"lr": "learning rate", "grad_norm": "gradient L2 norm", "count": "rows per step",
               "updated_params": "parameters updated"}


# -- the section --------------------------------------------------------------------------------------------
def curves_section(lines: list[dict[str, Any]]) -> str:
    """The "Curves" part of a run's report: one block per group (charts, then values)."""
    if not lines:
        return "<p>No metrics.jsonl lines yet.</p>"
    series = collect_series(lines)
    blocks = []
    for group in GROUPS:
        members = [s for s in series.values() if s.group == group]
        if members:
            blocks.append(_group_block(group, sorted(members, key=_order)))
    note = (f'<p class="axes-note">Every chart: x = {X_LABEL}; y = the metric, its unit on the axis. A '
            "metric logged once is shown as a value.</p>")
    return note + f'<div class="groups">{"".join(blocks)}</div>'


def _order(series: Series) -> tuple[int, int, str]:
    """Main metrics first (halted rows before all rows), pass@K by K."""
    k = series.name.rsplit("@", 1)[-1]
    return ("/all_rows/" in series.name, int(k) if k.isdigit() else 0, series.name)


def _group_block(group: str, members: list[Series]) -> str:
    if group == "Throughput":
        body = _throughput_table(members)
    else:
        curves = [s for s in members if len(set(s.steps)) > 1 and len(set(s.values)) > 1]
        values = [s for s in members if s not in curves]
        shared = _shared_pass_range(curves)
        charts = "".join(svg_chart(s, y_range=shared if s.name.startswith("ARC/pass@") else None,
                                   width=SMALL_WIDTH if s.name.startswith("ARC/pass@") else WIDTH)
                         for s in curves)
        body = f'<div class="panels">{charts}{_values_table(values)}</div>'
    slug = group.lower()
    return f'<section class="group" id="group-{slug}"><h3>{group}</h3>{body}</section>'


def _shared_pass_range(curves: list[Series]) -> tuple[float, float] | None:
    """One y range for every ARC pass@K chart, so the small panels compare at a glance."""
    shown = [v for s in curves if s.name.startswith("ARC/pass@") for v in s.shown]
    return (0.0, max(shown)) if shown else None


def _values_table(members: list[Series]) -> str:
    if not members:
        return ""
    rows = []
    for s in members:
        if len(s.values) == 1:
            when = f"at step {s.steps[0]:,.0f}"
        else:
            when = f"constant over {len(s.values)} logs (steps {s.steps[0]:,.0f}–{s.steps[-1]:,.0f})"
        rows.append(f'<tr><th>{html.escape(s.name)}</th><td class="value">{s.format(s.values[-1])}</td>'
                    f"<td>{html.escape(s.unit)}</td><td>{when}</td></tr>")
    return ('<table class="values"><caption>values (logged once, or constant)</caption>'
            "<tr><th>metric</th><th>value</th><th>unit</th><th>when</th></tr>" + "".join(rows) + "</table>")


def _throughput_table(members: list[Series]) -> str:
    rows = []
    for s in members:
        cells = [_number(s.values[-1]), _number(statistics.median(s.values)),
                 f"{_number(min(s.values))} – {_number(max(s.values))}", str(len(s.values))]
        rows.append(f'<tr><th>{html.escape(s.name)}</th><td>{html.escape(s.unit)}</td>'
                    + "".join(f'<td class="value">{cell}</td>' for cell in cells) + "</tr>")
    return ('<table class="values throughput"><caption>rates, not learning curves (the first log includes '
            "start-up)</caption><tr><th>metric</th><th>unit</th><th>last</th><th>median</th>"
            "<th>range</th><th>logs</th></tr>" + "".join(rows) + "</table>")


# -- one chart ----------------------------------------------------------------------------------------------
def svg_chart(series: Series, *, y_range: tuple[float, float] | None = None, width: int = WIDTH,
              height: int = HEIGHT) -> str:
    """One metric as an inline SVG line chart with a title, labelled axes and tick values."""
    xs, ys = series.steps, series.shown
    x_ticks = nice_ticks(min(xs), max(xs))
    low, high = y_range if y_range is not None else (min(ys), max(ys))
    y_ticks = nice_ticks(min(low, min(ys)), max(high, max(ys)))
    left, right = MARGIN["left"], width - MARGIN["right"]
    top, bottom = MARGIN["top"], height - MARGIN["bottom"]

    def px(x: float) -> float:
        return left + (x - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * (right - left)

    def py(y: float) -> float:
        return bottom - (y - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * (bottom - top)

    title = html.escape(series.name)
    unit = html.escape(series.unit)
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img">',
             f"<title>{title}: {unit} against {X_LABEL}</title>",
             f'<text class="chart-title" x="{left}" y="15">{title}</text>']
    for y in y_ticks:
        parts.append(f'<line class="gridline" x1="{left}" x2="{right}" y1="{py(y):.1f}" y2="{py(y):.1f}"/>'
                     f'<text class="tick y" x="{left - 4}" y="{py(y) + 3:.1f}" text-anchor="end">'
                     f"{_tick(y, y_ticks)}</text>")
    for x in x_ticks:
        parts.append(f'<line class="tickmark" x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{bottom}" '
                     f'y2="{bottom + 4}"/><text class="tick x" x="{px(x):.1f}" y="{bottom + 14}" '
                     f'text-anchor="middle">{_tick(x, x_ticks)}</text>')
    parts.append(f'<polyline class="axis" points="{left},{top} {left},{bottom} {right},{bottom}"/>')
    points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
    parts.append(f'<polyline class="series" points="{points}"/>')
    if len(xs) <= MAX_MARKERS:
        parts += [f'<circle class="point" cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5"/>'
                  for x, y in zip(xs, ys)]
    parts.append(f'<text class="axis-label x" x="{(left + right) / 2:.0f}" y="{height - 6}" '
                 f'text-anchor="middle">{X_LABEL}</text>')
    parts.append(f'<text class="axis-label y" transform="translate(12,{(top + bottom) / 2:.0f}) rotate(-90)" '
                 f'text-anchor="middle">{unit}</text>')
    parts.append("</svg>")
    last = series.format(series.values[-1])
    return (f'<figure class="chart" data-metric="{title}">{"".join(parts)}'
            f"<figcaption>{title}: last {last} at step {series.steps[-1]:,.0f}</figcaption></figure>")


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """Round tick values (1, 2, 5 × 10^k apart) covering [low, high]; a flat range gets a unit-wide band."""
    if not (math.isfinite(low) and math.isfinite(high)):
        low, high = 0.0, 1.0
    if high - low <= 1e-12 * max(1.0, abs(high)):
        low, high = low - 0.5 * max(abs(low), 1.0), high + 0.5 * max(abs(high), 1.0)
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = [first]
    while ticks[-1] < high - 1e-9 * step:
        ticks.append(ticks[-1] + step)
    return [round(t, 12) for t in ticks]


def _tick(value: float, ticks: list[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    if step >= 1 and abs(value) < 1e6:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _number(value: float) -> str:
    """4 significant digits, thousands separated (29,120 not 2.912e+04); tiny or huge in e-notation."""
    if value == 0:
        return "0"
    if 1000 <= abs(value) < 1e9:
        return f"{value:,.0f}"
    if 1e-3 <= abs(value) < 1000:
        return f"{value:.4g}"
    return f"{value:.3g}"


__all__ = ["GROUPS", "X_LABEL", "Series", "classify", "collect_series", "curves_section", "nice_ticks",
           "svg_chart"]
