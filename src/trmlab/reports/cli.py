"""``trmlab report DIR``: a self-contained HTML page for a run directory or an eval directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from trmlab.grammar import Setting, add_settings, parse_words

REPORT_SETTINGS = (
    Setting("out", "FILE", "the HTML file to write (default: DIR/report.html)"),
    Setting("max_tasks", "K", "show the first K tasks (default all)", int, minimum=1),
    Setting("top", "K", "predictions shown per test input (default 3)", int, minimum=1),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``report``."""
    parser = subparsers.add_parser(
        "report", help="write a self-contained HTML report of a run or eval directory",
        description="Metrics, learning curves and, per task, the demo pairs, test inputs, targets and top "
        "predictions drawn in the ARC palette (solved/unsolved marked), in one HTML file with inlined "
        "images.")
    parser.add_argument("directory", metavar="DIR", help="run directory (config.yaml, metrics.jsonl, "
                        "eval/step_N/) or eval directory (metrics.json, predictions.json)")
    add_settings(parser, REPORT_SETTINGS)
    parser.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from trmlab.reports.html import write_report

    settings, _ = parse_words(args.settings, REPORT_SETTINGS, "trmlab report")
    out = write_report(args.directory, settings.get("out"), max_tasks=settings.get("max_tasks"),
                       top=settings.get("top", 3))
    size = Path(out).stat().st_size
    print(f"wrote {out} ({size / 1024:.0f} KiB)")
    return 0
