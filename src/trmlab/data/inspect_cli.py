"""``trmlab data inspect`` (the parser; the work is in :mod:`trmlab.data.inspect`)."""

from __future__ import annotations

import argparse


def register_data_command(data_subparsers: argparse._SubParsersAction) -> None:
    """Add ``trmlab data inspect``."""
    parser = data_subparsers.add_parser(
        "inspect", help="counts, grid sizes and a few examples of a built dataset",
        description="Show what a built dataset (official or encoder layout) holds: groups, puzzles, examples "
        "and identifiers per split, the grid-size histogram, and a few examples drawn as text (and as a "
        "PNG).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("directory", metavar="DATA", help="dataset directory (holding train/ and/or test/)")
    parser.add_argument("--examples", type=int, default=2, help="examples drawn per split")
    parser.add_argument("--png", default=None, metavar="OUT.png",
                        help="also draw the examples into this PNG (needs the [viz] extra: matplotlib)")
    parser.add_argument("--max-scan", type=int, default=200_000,
                        help="grid-size histogram over at most this many inputs per split (an evenly spaced "
                        "sample beyond it; the output says so)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from trmlab.data.inspect import draw_png, format_report, inspect_dataset

    report = inspect_dataset(args.directory, examples=args.examples, max_scan=args.max_scan)
    print(format_report(report))
    if args.png:
        print(f"wrote {draw_png(report, args.png)}")
    return 0
