"""trmlab.config: the one typed schema, shipped presets, strict loading with provenance, show and diff.

Precedence (later wins): schema default < preset chain (base first) < override files (in order)
< command line.
"""

from trmlab.config.diff import Source, arch_diff, diff_json, diff_table, format_diff_table, read_source
from trmlab.config.loader import (
    ResolvedConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    load_resolved,
    parse_overrides,
    preset_names,
    save_resolved,
)
from trmlab.config.official import read_official_all_config
from trmlab.config.schema import ArchConfig, Config, EvalConfig
from trmlab.config.validate import validate
from trmlab.config.walkthrough import walkthrough

__all__ = [
    "ArchConfig",
    "Config",
    "EvalConfig",
    "ResolvedConfig",
    "Source",
    "arch_diff",
    "config_from_dict",
    "config_to_dict",
    "diff_json",
    "diff_table",
    "format_diff_table",
    "load_config",
    "load_resolved",
    "parse_overrides",
    "preset_names",
    "read_official_all_config",
    "read_source",
    "save_resolved",
    "validate",
    "walkthrough",
]
