"""``trmlab report`` rendered by a real browser (headless Chromium): labelled axes and legends as laid out.

A report is made from a tiny Sudoku run (generate → build → train with evaluations) and from an ARC eval
directory, then opened in headless Chromium with a probe script appended to a copy of the page. The probe
measures, after layout, every chart's axis labels (present, non-empty, inside the chart, clear of the tick
values) and every legend key (visible), and writes what it found into the DOM, which ``--dump-dom`` returns.

Chromium comes from Debian (``apt-get install -y chromium``; ``.ci/run`` installs it when missing). Without it
these tests skip with that message, except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from test_recipes import build
from trmlab.cli import main

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")

PROBE = """<pre id="browser-check"></pre><script>
(function () {
  const overlap = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  const out = {charts: [], legends: []};
  for (const svg of document.querySelectorAll("svg.chart")) {
    const box = svg.getBoundingClientRect();
    const ticks = [...svg.querySelectorAll("text.tick")].map(t => t.getBoundingClientRect());
    const label = (axis) => {
      const text = svg.querySelector("text.axis-label." + axis);
      if (!text) return null;
      const r = text.getBoundingClientRect();
      return {text: text.textContent, width: r.width, height: r.height,
              inside: r.left >= box.left - 1 && r.right <= box.right + 1 && r.top >= box.top - 1 &&
                      r.bottom <= box.bottom + 1,
              clear: !ticks.some(t => overlap(t, r))};
    };
    out.charts.push({metric: svg.closest("figure").dataset.metric, x: label("x"), y: label("y"),
                     ticks: ticks.filter(t => t.width > 0).length});
  }
  for (const key of document.querySelectorAll(".legend .key")) {
    const r = key.querySelector(".swatch").getBoundingClientRect();
    out.legends.push({text: key.querySelector(".meaning").textContent, width: r.width, height: r.height,
                      visible: getComputedStyle(key).visibility !== "hidden"});
  }
  document.getElementById("browser-check").textContent = JSON.stringify(out);
})();
</script>"""


def chromium() -> str:
    """The Chromium binary, or skip (fail under CI) with how to install it."""
    found = shutil.which("chromium") or shutil.which("chromium", path="/usr/bin")
    if found is None:
        message = "Chromium is not installed (Debian: apt-get install -y chromium); the browser test needs it"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def render(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    """Run headless Chromium on ``page`` with a fresh profile directory."""
    command = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def probe(report: Path, tmp_path: Path) -> dict:
    """What the probe script measured in Chromium's layout of ``report``."""
    text = report.read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("</body>", PROBE + "</body>"))
    done = render(probed, tmp_path / "profile", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    start = done.stdout.index('<pre id="browser-check">') + len('<pre id="browser-check">')
    return json.loads(done.stdout[start:done.stdout.index("</pre>", start)].replace("&quot;", '"'))


@pytest.fixture(scope="module")
def sudoku_run(tmp_path_factory) -> Path:
    """A tiny Sudoku run: 8 steps logged every 2, evaluated at steps 4 and 8."""
    root = tmp_path_factory.mktemp("browser")
    data = build("sudoku", root)
    run = root / "run"
    assert main(["train", "tiny", f"data_paths=[{data}]", f"run_dir={run}", "device=cpu", "max_steps=8",
                 "epochs=8", "log_every=2", "eval_interval=4", "global_batch_size=8", "arch.hidden_size=16",
                 "arch.num_heads=2", "arch.L_layers=1", "arch.halt_max_steps=2", "--no-progress"]) == 0
    assert main(["report", str(run)]) == 0
    return run


def test_a_run_report_has_labelled_axes_and_a_board_legend_in_chromium(sudoku_run, tmp_path):
    found = probe(sudoku_run / "report.html", tmp_path)
    charts = {chart["metric"]: chart for chart in found["charts"]}
    assert {"train/lm_loss", "train/accuracy"} <= set(charts), sorted(charts)
    for metric, chart in charts.items():
        assert chart["x"]["text"] == "optimizer step", metric
        assert chart["y"]["text"].strip(), metric  # the quantity and its unit
        for axis in ("x", "y"):
            label = chart[axis]
            assert label["width"] > 10 and label["height"] > 5, (metric, axis, label)
            assert label["inside"] and label["clear"], (metric, axis, label)  # drawn, not clipped or covered
        assert chart["ticks"] >= 4, metric
    assert charts["train/lm_loss"]["y"]["text"] == "loss per sample"
    assert charts["train/accuracy"]["y"]["text"] == "accuracy (%)"
    assert not [m for m in charts if m.endswith("_per_s")]  # throughput is a table, never a curve
    legend = {key["text"] for key in found["legends"]
              if key["width"] > 5 and key["height"] > 5 and key["visible"]}
    assert {"given (from the input)", "filled in right", "a given changed by the model (wrong)"} <= legend


def test_an_arc_eval_report_has_its_legends_in_chromium(official_eval_small, official_arc_build_small,
                                                        tmp_path):
    out = tmp_path / "eval"
    assert main(["score", str(official_arc_build_small / "output"),
                 str(official_eval_small / "raw_predictions.npz"), f"out={out}"]) == 0
    assert main(["report", str(out)]) == 0
    found = probe(out / "report.html", tmp_path)
    legend = {key["text"] for key in found["legends"] if key["width"] > 5 and key["visible"]}
    assert {"the target", "a prediction equal to the target (✔)", "a wrong prediction (✘)"} <= legend
    assert {str(colour) for colour in range(10)} <= legend  # the ARC palette, numbered


def test_chromium_draws_the_report(sudoku_run, tmp_path):
    shot = tmp_path / "report.png"
    done = render(sudoku_run / "report.html", tmp_path / "profile", "--window-size=1200,1600",
                  f"--screenshot={shot}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000  # not a blank page
