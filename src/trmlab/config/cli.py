"""``trmlab config show`` and ``trmlab config diff``."""

from __future__ import annotations

import argparse
import sys

PRECEDENCE = ("precedence (later wins): schema default < preset (its base chain first) < --config files "
              "(in order) < key=value overrides")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``config show`` and ``config diff``."""
    from trmlab.config.loader import preset_names  # light: lists a package folder

    presets = "shipped presets: " + ", ".join(preset_names())
    config = subparsers.add_parser("config", help="show resolved configs with their sources; diff configs",
                                   description="Inspect and compare configs. " + PRECEDENCE + ".",
                                   epilog=presets)
    commands = config.add_subparsers(dest="config_command", metavar="<subcommand>")
    config.set_defaults(func=lambda args: (config.print_help(), 2)[1])

    show = commands.add_parser(
        "show", help="print a resolved config and where each value comes from",
        description="Print the resolved config with each value's source. " + PRECEDENCE + ".",
        epilog=presets + "\n\nexamples:\n  trmlab config show trm-arc1\n"
               "  trmlab config show trm-arc1 arch.L_cycles=6 ema=false data_paths=[data/a,data/b]\n"
               "  trmlab config show tiny --config my.yaml --format yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("source", nargs="?", default=None,
                      help="preset name, YAML file, run/checkpoint directory or official all_config.yaml "
                           "(omit for the schema defaults)")
    show.add_argument("overrides", nargs="*", metavar="key=value",
                      help="dotted overrides, values in YAML: arch.L_cycles=4 lr=3e-4 max_steps=null")
    show.add_argument("--config", dest="files", action="append", default=[], metavar="FILE.yaml",
                      help="file of overrides (nested or dotted keys); repeatable, applied in order")
    show.add_argument("--format", choices=("text", "yaml", "json"), default="text",
                      help="text: aligned table (default); yaml/json: {config, provenance} as stored in runs")
    show.set_defaults(func=_show)

    diff = commands.add_parser(
        "diff", help="compare configs: presets, YAML files, run/checkpoint dirs, official all_config.yaml",
        description="Print one row per parameter that differs, one column per source. Architecture rows are "
                    "flagged: a checkpoint does not compute the same thing under another value. "
                    "Exit status: 0 when all sources agree, 1 when they differ, 2 on error.",
        epilog="example:\n  trmlab config diff trm-arc1 trm-arc1-repo-default\n"
               "  trmlab config diff trm-arc1 path/to/arc_v1_public/all_config.yaml runs/my-run",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    diff.add_argument("sources", nargs="+", metavar="SOURCE",
                      help="preset name, YAML file, run or checkpoint directory, official all_config.yaml")
    diff.add_argument("--all", action="store_true", help="also list the parameters that agree")
    diff.add_argument("--format", choices=("md", "json"), default="md", help="markdown table or JSON")
    diff.set_defaults(func=_diff)


def _show(args: argparse.Namespace) -> int:
    from trmlab.config.diff import read_source
    from trmlab.config.loader import load_config
    from trmlab.config.show import render_show

    source, overrides = args.source, list(args.overrides)
    if source is not None and "=" in source:  # `config show lr=3`: overrides on the schema defaults
        source, overrides = None, [source, *overrides]
    if source is None:
        name, resolved, unknown = "schema defaults", load_config(None, overrides, args.files), {}
    else:
        read = read_source(source, overrides, args.files)
        name, resolved, unknown = read.name, read.resolved, read.unknown
    sys.stdout.write(render_show(name, resolved, unknown, args.format))
    return 0


def _diff(args: argparse.Namespace) -> int:
    from trmlab.config.diff import diff_json, diff_table, format_diff_table, read_source

    sources = [read_source(spec) for spec in args.sources]
    if len(sources) < 2:
        print("trmlab: error: config diff needs at least two sources", file=sys.stderr)
        return 2
    pairs = [(s.name, s.resolved.config) for s in sources]
    if args.format == "json":
        print(diff_json(sources, all_rows=args.all))
    else:
        print(format_diff_table(pairs, all_rows=args.all, unknown={s.name: s.unknown for s in sources}))
    return 1 if any(row.differs for row in diff_table(pairs)) else 0

