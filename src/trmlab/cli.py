"""The ``trmlab`` command: a thin dispatcher over the pipeline's subcommand modules.

Each module in :data:`SUBCOMMAND_MODULES` exposes ``register(subparsers)``, which adds its parser(s) and sets
``func`` (called with the parsed namespace, returning an exit code). Modules keep heavy imports (torch) inside
their functions so ``trmlab --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from trmlab.errors import TrmlabError

# Order = the pipeline: config → data → models/checkpoints → training → evaluation → reports.
SUBCOMMAND_MODULES = (
    "trmlab.config.cli",       # config show | diff
    "trmlab.data.cli",         # data build-arc | build-synthetic | inspect
    "trmlab.interop.cli",      # checkpoint inspect | convert
    "trmlab.training.cli",     # train, adapt, demo
    "trmlab.evaluation.cli",   # eval, score
    "trmlab.reports.cli",      # report
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trmlab",
        description="Train, evaluate and transfer Tiny Recursive Models (TRM, ETRM, ETRMTRM) on ARC-AGI.",
        epilog="Run `trmlab <command> --help` for each command. `python -m trmlab` works the same "
        "(use it under torchrun).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TrmlabError as error:
        print(f"trmlab: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
