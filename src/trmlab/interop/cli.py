"""``trmlab checkpoint inspect | convert``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from trmlab.grammar import Setting, add_settings, parse_words, raise_usage, require_subcommand

PRESET = Setting("preset", "NAME", "architecture for an official file without all_config.yaml (or to check "
                 "against); a preset name or YAML file")
SEQ_LEN = Setting("seq_len", "N", "grid tokens per sample (900 for ARC); official files do not store it", int,
                  minimum=1)
OVERRIDES = "config override on top of preset= (e.g. arch.L_cycles=4)"
INSPECT_SETTINGS = (PRESET, SEQ_LEN)
CONVERT_SETTINGS = (
    Setting("to", "trmlab|official|research", "target layout: trmlab; official (TRM: the official layout; "
            "a research-numerics ETRM/ETRMTRM: the research code's layout); research (the latter, refused "
            "for a TRM)", choices=("trmlab", "official", "research"), required=True),
    Setting("weights", "ema|raw", "to=official/research: the weights exported (default ema)",
            choices=("ema", "raw")),
    PRESET, SEQ_LEN)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``checkpoint`` with its ``inspect`` and ``convert`` subcommands."""
    parser = subparsers.add_parser("checkpoint", help="inspect or convert official / trmlab checkpoints",
                                   description="Inspect or convert official TRM step_N files and trmlab "
                                   "checkpoint directories. Nothing found beside a checkpoint (trm.py, "
                                   "losses.py) is ever imported.")
    commands = parser.add_subparsers(dest="checkpoint_command", metavar="<subcommand>")
    parser.set_defaults(func=require_subcommand(parser))

    inspect = commands.add_parser("inspect", help="tensors, parameter counts, architecture, inconsistencies",
                                  description="Show what a checkpoint holds and every inconsistency between "
                                  "its tensor shapes and its config. Exit status: 0 none found, 1 "
                                  "inconsistencies found, 2 bad input.")
    inspect.add_argument("path", metavar="CKPT", help="an official step_N file or a trmlab step_N/ directory "
                         "(or hf://ORG/REPO[@REVISION]/PATH)")
    add_settings(inspect, INSPECT_SETTINGS, overrides=OVERRIDES)
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    inspect.set_defaults(func=_inspect)

    convert = commands.add_parser("convert", help="official ⇄ trmlab, lossless",
                                  description="Convert between the official layout (step_N + "
                                  "all_config.yaml), the ETRM research code's layout, and a trmlab "
                                  "checkpoint directory. Round trips are lossless.")
    convert.add_argument("src", metavar="SRC", help="official step_N file, or trmlab step_N/ directory (or "
                         "hf://...)")
    convert.add_argument("dst", metavar="DST", help="to=trmlab: the checkpoint directory to create; "
                         "to=official/research: the folder to create (gets step_N and all_config.yaml)")
    add_settings(convert, CONVERT_SETTINGS, overrides=OVERRIDES + "; to=trmlab only")
    convert.set_defaults(func=_convert)
    from trmlab.interop.hub_cli import register_hub_commands

    register_hub_commands(commands)  # known, push


def _user_config(settings: dict[str, Any], overrides: list[str]) -> Any:
    if "preset" not in settings and not overrides:
        return None
    from trmlab.config.loader import load_config

    return load_config(settings.get("preset"), overrides)


def _inspect(args: argparse.Namespace) -> int:
    import dataclasses

    from trmlab.interop.inspect import format_inspection, inspect_checkpoint

    settings, overrides = parse_words(args.settings, INSPECT_SETTINGS, "trmlab checkpoint inspect",
                                      overrides=True)
    report = inspect_checkpoint(args.path, _user_config(settings, overrides), settings.get("seq_len"))
    if args.json:
        print(json.dumps(dataclasses.asdict(report), indent=2, default=str))
    else:
        print(format_inspection(report))
    return 1 if report.inconsistencies else 0


def _convert(args: argparse.Namespace) -> int:
    from trmlab.interop.convert import official_to_trmlab, trmlab_to_official

    command = "trmlab checkpoint convert"
    settings, overrides = parse_words(args.settings, CONVERT_SETTINGS, command, overrides=True)
    if settings["to"] == "trmlab":
        if "weights" in settings:
            raise_usage(["weights= applies to to=official/research (a trmlab checkpoint keeps both sets)"],
                        command)
        out = official_to_trmlab(args.src, args.dst, config=_user_config(settings, overrides),
                                 seq_len=settings.get("seq_len"))
    else:
        given = [w.split("=", 1)[0] + "=" for w in overrides] + [f"{k}=" for k in ("preset", "seq_len")
                                                                 if k in settings]
        if given:
            raise_usage([f"{', '.join(given)} do not apply to to={settings['to']}: the trmlab checkpoint's "
                         f"own config is exported"], command)
        out = trmlab_to_official(args.src, args.dst, use_ema=settings.get("weights", "ema") == "ema",
                                 require_research=settings["to"] == "research")
    print(f"wrote {out}")
    return 0
