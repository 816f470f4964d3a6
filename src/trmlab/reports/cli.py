"""``trmlab report DIR``: a self-contained HTML page for a run directory or an eval directory."""

from __future__ import annotations

import argparse
from pathlib import Path

REPORT_KEYS = {"out": str, "max_tasks": int, "top": int}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``report``."""
    parser = subparsers.add_parser(
        "report", help="write a self-contained HTML report of a run or eval directory",
        description="Metrics, learning curves and, per task, the demo pairs, test inputs, targets and top "
        "predictions drawn in the ARC palette (solved/unsolved marked), in one HTML file with inlined "
        "images.",
        epilog="settings: out=FILE (default: DIR/report.html), max_tasks=K (show the first K tasks; default "
        "all), top=K (predictions shown per test input; default 3)")
    parser.add_argument("directory", help="run directory (config.yaml, metrics.jsonl, eval/step_N/) or eval "
                        "directory (metrics.json, predictions.json)")
    parser.add_argument("settings", nargs="*", metavar="key=value", help="see below")
    parser.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from trmlab.evaluation.cli import parse_settings
    from trmlab.reports.html import write_report
    from trmlab.reports.test_time import is_settings_directory, render_settings_report
    from trmlab.training.run_dir import atomic_write_text

    settings = parse_settings(args.settings, REPORT_KEYS, "report")
    if is_settings_directory(args.directory):  # several evaluations of one model: accuracy vs compute
        out = Path(settings.get("out") or Path(args.directory) / "report.html")
        atomic_write_text(out, render_settings_report(args.directory))
        print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
        return 0
    out = write_report(args.directory, settings.get("out"), max_tasks=settings.get("max_tasks"),
                       top=settings.get("top", 3))
    size = Path(out).stat().st_size
    print(f"wrote {out} ({size / 1024:.0f} KiB)")
    return 0
