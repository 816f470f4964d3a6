"""``trmlab config show`` and ``trmlab config diff``."""

from __future__ import annotations

import argparse
import sys

from trmlab.grammar import Setting, add_settings, parse_words, raise_usage, require_subcommand

PRECEDENCE = ("precedence (later wins): schema default < preset (its base chain first) < config=FILE.yaml "
              "files (in order) < key=value overrides")

CONFIG_FILE = Setting("config", "FILE.yaml", "file of overrides (nested or dotted keys); repeatable, applied "
                      "in order", repeatable=True)
SHOW_SETTINGS = (CONFIG_FILE,
                 Setting("format", "text|yaml|json", "text: aligned table (default); yaml/json: {config, "
                         "provenance} as stored in runs", choices=("text", "yaml", "json")))
DIFF_SETTINGS = (Setting("format", "md|json", "markdown table (default) or JSON", choices=("md", "json")),)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``config show`` and ``config diff``."""
    from trmlab.config.loader import preset_names  # light: lists a package folder

    presets = "shipped presets: " + ", ".join(preset_names())
    config = subparsers.add_parser("config", help="show resolved configs with their sources; diff configs",
                                   description="Inspect and compare configs. " + PRECEDENCE + ".",
                                   epilog=presets)
    commands = config.add_subparsers(dest="config_command", metavar="<subcommand>")
    config.set_defaults(func=require_subcommand(config))

    show = commands.add_parser(
        "show", help="print a resolved config and where each value comes from",
        description="Print the resolved config with each value's source. " + PRECEDENCE + ".",
        epilog=presets + "\n\nexamples:\n  trmlab config show trm-arc1\n"
               "  trmlab config show trm-arc1 arch.L_cycles=6 ema=false data_paths=[data/a,data/b]\n"
               "  trmlab config show tiny config=my.yaml format=yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("source", nargs="?", default=None, metavar="SOURCE",
                      help="preset name, YAML file, run/checkpoint directory or official all_config.yaml "
                           "(omit for the schema defaults)")
    show.add_argument("overrides", nargs="*", metavar="key=value",
                      help="settings (below) and dotted config overrides, values in YAML: arch.L_cycles=4 "
                           "lr=3e-4 max_steps=null")
    add_settings(show, SHOW_SETTINGS, positional=False,
                 overrides="any config key (dotted; `trmlab config show` lists them), values in YAML")
    show.set_defaults(func=_show)

    diff = commands.add_parser(
        "diff", help="compare configs: presets, YAML files, run/checkpoint dirs, official all_config.yaml",
        description="Print one row per parameter that differs, one column per source. Architecture rows are "
                    "flagged: a checkpoint does not compute the same thing under another value. "
                    "Exit status: 0 when all sources agree, 1 when they differ, 2 on bad input.",
        epilog="example:\n  trmlab config diff trm-arc1 trm-arc1-repo-default\n"
               "  trmlab config diff trm-arc1 path/to/arc_v1_public/all_config.yaml runs/my-run",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    diff.add_argument("sources", nargs="+", metavar="SOURCE",
                      help="preset name, YAML file, run or checkpoint directory, official all_config.yaml; "
                           "then the settings (below)")
    diff.add_argument("--all", action="store_true", help="also list the parameters that agree")
    add_settings(diff, DIFF_SETTINGS, positional=False)
    diff.set_defaults(func=_diff)


def _show(args: argparse.Namespace) -> int:
    from trmlab.config.diff import read_source
    from trmlab.config.loader import load_config
    from trmlab.config.show import render_show

    source, words = args.source, list(args.overrides)
    if source is not None and "=" in source:  # `config show lr=3`: overrides on the schema defaults
        source, words = None, [source, *words]
    settings, overrides = parse_words(words, SHOW_SETTINGS, "trmlab config show", overrides=True)
    files = settings.get("config", [])
    if source is None:
        name, resolved, unknown = "schema defaults", load_config(None, overrides, files), {}
    else:
        read = read_source(source, overrides, files)
        name, resolved, unknown = read.name, read.resolved, read.unknown
    sys.stdout.write(render_show(name, resolved, unknown, settings.get("format", "text")))
    return 0


def _diff(args: argparse.Namespace) -> int:
    from trmlab.config.diff import diff_json, diff_table, format_diff_table, read_source

    words = [spec for spec in args.sources if "=" in spec]
    settings, _ = parse_words(words, DIFF_SETTINGS, "trmlab config diff")
    specs = [spec for spec in args.sources if "=" not in spec]
    if len(specs) < 2:
        raise_usage([f"needs at least two sources to compare, got {len(specs)}"], "trmlab config diff")
    sources = [read_source(spec) for spec in specs]
    pairs = [(s.name, s.resolved.config) for s in sources]
    if settings.get("format", "md") == "json":
        print(diff_json(sources, all_rows=args.all))
    else:
        print(format_diff_table(pairs, all_rows=args.all, unknown={s.name: s.unknown for s in sources}))
    return 1 if any(row.differs for row in diff_table(pairs)) else 0

