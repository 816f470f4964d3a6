"""``trmlab checkpoint inspect | convert``."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``checkpoint`` with its ``inspect`` and ``convert`` subcommands."""
    parser = subparsers.add_parser("checkpoint", help="inspect or convert official / trmlab checkpoints",
                                   description="Inspect or convert official TRM step_N files and trmlab "
                                   "checkpoint directories. Nothing found beside a checkpoint (trm.py, "
                                   "losses.py) is ever imported.")
    commands = parser.add_subparsers(dest="checkpoint_command", metavar="<subcommand>")
    parser.set_defaults(func=lambda _args: parser.print_help() or 2)

    inspect = commands.add_parser("inspect", help="tensors, parameter counts, architecture, inconsistencies",
                                  description="Show what a checkpoint holds and every inconsistency between "
                                  "its tensor shapes and its config.")
    inspect.add_argument("path", help="an official step_N file or a trmlab step_N/ directory (or "
                         "hf://ORG/REPO[@REVISION]/PATH)")
    _config_arguments(inspect)
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    inspect.set_defaults(func=_inspect)

    convert = commands.add_parser("convert", help="official ⇄ trmlab, lossless",
                                  description="Convert between the official layout (step_N + "
                                  "all_config.yaml), the ETRM research code's layout, and a trmlab "
                                  "checkpoint directory. Round trips are lossless.")
    convert.add_argument("src", help="official step_N file, or trmlab step_N/ directory (or hf://...)")
    convert.add_argument("dst", help="--to trmlab: the checkpoint directory to create; --to official: the "
                         "folder to create (gets step_N and all_config.yaml)")
    convert.add_argument("--to", required=True, choices=("official", "research", "trmlab"),
                         help="target layout: trmlab; official (TRM: the official layout; a "
                         "research-numerics ETRM/ETRMTRM: the research code's layout); research (the "
                         "latter, refused for a TRM)")
    convert.add_argument("--raw", action="store_true",
                         help="--to official: export the raw weights instead of the EMA weights")
    _config_arguments(convert)
    convert.set_defaults(func=_convert)
    from trmlab.interop.hub_cli import register_hub_commands

    register_hub_commands(commands)  # known, push


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="architecture for an official file without all_config.yaml (or to "
                        "check against)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, repeatable (e.g. --set arch.L_cycles=4)")
    parser.add_argument("--seq-len", type=int, help="grid tokens per sample (900 for ARC); official files "
                        "do not store it")


def _user_config(args: argparse.Namespace) -> Any:
    if not args.preset and not args.overrides:
        return None
    from trmlab.config.loader import load_config

    return load_config(args.preset, args.overrides)


def _inspect(args: argparse.Namespace) -> int:
    import dataclasses

    from trmlab.interop.inspect import format_inspection, inspect_checkpoint

    report = inspect_checkpoint(args.path, _user_config(args), args.seq_len)
    if args.json:
        print(json.dumps(dataclasses.asdict(report), indent=2, default=str))
    else:
        print(format_inspection(report))
    return 1 if report.inconsistencies else 0


def _convert(args: argparse.Namespace) -> int:
    from trmlab.interop.convert import official_to_trmlab, trmlab_to_official

    if args.to == "trmlab":
        out = official_to_trmlab(args.src, args.dst, config=_user_config(args), seq_len=args.seq_len)
    else:
        if args.preset or args.overrides:
            from trmlab.errors import ConfigError

            raise ConfigError("--preset/--set do not apply to --to official: the trmlab checkpoint's own "
                              "config is exported")
        out = trmlab_to_official(args.src, args.dst, use_ema=not args.raw,
                                 require_research=args.to == "research")
    print(f"wrote {out}")
    return 0
