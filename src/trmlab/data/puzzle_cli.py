"""``trmlab data build-sudoku`` and ``trmlab data build-maze`` (thin wrappers over the builders)."""

from __future__ import annotations

import argparse

from trmlab.progress import add_no_progress_flag

_INPUT_EPILOG = ("input: --input-dir DIR holds train.csv and test.csv (header source,question,answer,\n"
                 "rating), or --source hf:OWNER/NAME downloads them (optional extra:\n"
                 "pip install 'trmlab[hub]'). --seed S gives the official builder's draws after\n"
                 "np.random.seed(S) (the official builder is unseeded).\n")


def register_data_command(data_subparsers: argparse._SubParsersAction) -> None:
    """Add ``trmlab data build-sudoku`` and ``trmlab data build-maze``."""
    sudoku = data_subparsers.add_parser(
        "build-sudoku", help="build a Sudoku dataset from CSV (bit-compatible with the official builder)",
        description="Build a Sudoku dataset in the official layout, byte-identical to the official\n"
        "dataset/build_sudoku_dataset.py for the same rows, options and seed. 4x4, 6x6 and 9x9 puzzles\n"
        "(size inferred from the rows): seq_len = n*n, vocab_size = n + 2 (11 for 9x9).",
        epilog=_INPUT_EPILOG + "examples:\n"
        "  the published recipe's data (Sudoku-Extreme, 1,000 puzzles x 1,001 copies):\n"
        "    trmlab data build-sudoku --source hf:sapientinc/sudoku-extreme --subsample-size 1000 \\\n"
        "      --num-aug 1000 --seed 0 --output-dir data/sudoku-extreme-1k-aug-1000\n"
        "  no network: --input-dir DIR instead of --source",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common_arguments(sudoku)
    sudoku.add_argument("--min-difficulty", type=int, default=None, metavar="D",
                        help="use only rows with rating >= D (in both files, as the official builder)")
    sudoku.add_argument("--num-aug", type=int, default=0, metavar="K",
                        help="augmented copies per training puzzle: digit permutation, transpose, band/row "
                        "and stack/column shuffles (default 0)")
    sudoku.set_defaults(func=_run_sudoku)

    maze = data_subparsers.add_parser(
        "build-maze", help="build a Maze dataset from CSV (bit-compatible with the official builder)",
        description="Build a Maze dataset in the official layout, byte-identical to the official\n"
        "dataset/build_maze_dataset.py for the same rows, options and seed. Any square side (inferred\n"
        "from the rows): seq_len = side*side (900 for 30x30), vocab_size 6.",
        epilog=_INPUT_EPILOG + "examples:\n"
        "  the published recipe's data (Maze-Hard 30x30, 1,000 mazes):\n"
        "    trmlab data build-maze --source hf:sapientinc/maze-30x30-hard-1k --seed 0 \\\n"
        "      --output-dir data/maze-30x30-hard-1k",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common_arguments(maze)
    maze.add_argument("--aug", action="store_true",
                      help="add the 8 dihedral transforms of each training maze (off, as in the official "
                      "builder's default)")
    maze.set_defaults(func=_run_maze)


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("input (exactly one of --input-dir / --source)")
    source.add_argument("--input-dir", default=None, metavar="DIR",
                        help="directory holding train.csv and test.csv")
    source.add_argument("--source", default=None, metavar="hf:REPO",
                        help="download train.csv and test.csv from a Hugging Face dataset repository")
    parser.add_argument("--output-dir", required=True, metavar="OUT", help="dataset directory to create")
    parser.add_argument("--subsample-size", type=int, default=None, metavar="N",
                        help="use N training puzzles drawn without replacement (the official choice)")
    parser.add_argument("--seed", type=int, required=True, metavar="S",
                        help="the official builder's draws after np.random.seed(S)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --output-dir")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    add_no_progress_flag(parser)


def _common_options(args: argparse.Namespace) -> dict:
    return {"input_dir": args.input_dir, "source": args.source, "output_dir": args.output_dir,
            "subsample_size": args.subsample_size, "seed": args.seed, "overwrite": args.overwrite}


def _log(args: argparse.Namespace):
    return (lambda _message: None) if args.quiet else print


def _run_sudoku(args: argparse.Namespace) -> int:
    from trmlab.data.build_sudoku import SudokuBuildOptions, build_sudoku

    build_sudoku(SudokuBuildOptions(**_common_options(args), min_difficulty=args.min_difficulty,
                                    num_aug=args.num_aug), log=_log(args))
    return 0


def _run_maze(args: argparse.Namespace) -> int:
    from trmlab.data.build_maze import MazeBuildOptions, build_maze

    build_maze(MazeBuildOptions(**_common_options(args), aug=args.aug), log=_log(args))
    return 0
