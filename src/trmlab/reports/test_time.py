"""``trmlab report`` for a directory of evaluations of one checkpoint under several settings (for example
``benchmarks/bench_test_time.py``'s ``OUT/evals/test``, or several ``trmlab eval ... out=DIR/NAME``): a table
of every setting with its exact accuracy and compute, and one accuracy-versus-compute chart.

Compute is what each metrics.json records: ``counts.act_steps`` (ACT steps summed over every trajectory of
every row) relative to the official protocol (rows × halt_max_steps); an official evaluation counts 1.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from trmlab.errors import DataError


def is_settings_directory(path: str | Path) -> bool:
    """A directory without its own metrics.json / run files whose subdirectories hold evaluations."""
    root = Path(path)
    own = ("metrics.json", "config.yaml", "metrics.jsonl")
    return (root.is_dir() and not any((root / name).is_file() for name in own)
            and any((d / "metrics.json").is_file() for d in root.iterdir() if d.is_dir()))


def _score(metrics: dict[str, Any]) -> tuple[str, float] | None:
    """The headline score of one evaluation: the test-time exact accuracy, else the official one, else
    ARC pass@2."""
    for suffix in ("/test_time/exact_accuracy", "/exact_accuracy"):
        for key, value in metrics.items():
            if key.endswith(suffix) and isinstance(value, float):
                return key, value
    if isinstance(metrics.get("ARC/pass@2"), float):
        return "ARC/pass@2", metrics["ARC/pass@2"]
    return None


def settings_points(path: str | Path) -> list[dict[str, Any]]:
    """One entry per evaluation under ``path``: name, settings, score, relative compute and model seconds."""
    points = []
    for directory in sorted(d for d in Path(path).iterdir() if (d / "metrics.json").is_file()):
        try:
            metrics = json.loads((directory / "metrics.json").read_text())
        except (OSError, ValueError) as error:
            raise DataError(f"{directory / 'metrics.json'}: unreadable ({error}); re-run that "
                            f"evaluation") from None
        score = _score(metrics)
        if score is None:
            continue
        counts = metrics.get("counts", {})
        points.append({"name": directory.name, "metric": score[0], "score": score[1],
                       "settings": metrics.get("test_time") or "official protocol",
                       "relative_compute": counts.get("relative_compute", 1.0),
                       "act_steps": counts.get("act_steps")})
    if not points:
        raise DataError(f"{path}: no evaluation with a score under it; pass an eval or run directory")
    return points


def _chart(points: list[dict[str, Any]]) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "<p class=note>matplotlib is not installed: chart skipped (pip install matplotlib)</p>"
    figure, axis = plt.subplots(figsize=(6.5, 4))
    axis.scatter([p["relative_compute"] for p in points], [p["score"] * 100 for p in points], s=20)
    for p in points:
        axis.annotate(p["name"], (p["relative_compute"], p["score"] * 100), fontsize=6, alpha=0.8)
    axis.set_xscale("log")
    axis.set_xlabel("compute: ACT steps × rows (official protocol = 1)")
    axis.set_ylabel("score %")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return f'<img class=curves alt="accuracy versus compute" src="data:image/png;base64,' \
           f'{base64.b64encode(buffer.getvalue()).decode()}">'


def render_settings_report(path: str | Path) -> str:
    """The HTML page: the settings table (sorted by compute) and the accuracy-versus-compute chart."""
    points = sorted(settings_points(path), key=lambda p: (p["relative_compute"], p["name"]))
    rows = "".join(
        f"<tr><td>{html.escape(p['name'])}</td><td><code>{html.escape(json.dumps(p['settings']))}</code></td>"
        f"<td>{html.escape(p['metric'])}</td><td>{p['score'] * 100:.2f}</td>"
        f"<td>{p['relative_compute']:.2f}×</td></tr>" for p in points)
    title = f"trmlab report: {Path(path).name} (accuracy versus compute)"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}} "
            f"td,th{{border:1px solid #ccc;padding:.2em .5em;font-size:90%}} img{{max-width:100%}}</style>"
            f"</head><body><h1>{html.escape(title)}</h1><p>{len(points)} evaluations under "
            f"<code>{html.escape(str(Path(path).resolve()))}</code>; compute = ACT steps × rows relative to "
            f"the official protocol.</p><h2>Accuracy versus compute</h2>{_chart(points)}"
            f"<h2>Settings</h2><table><tr><th>evaluation</th><th>settings</th><th>metric</th><th>score %</th>"
            f"<th>compute</th></tr>{rows}</table></body></html>\n")
