"""Comparing configs: the architecture diff used when loading checkpoints, and ``trmlab config diff`` tables.

A source is any of: a shipped preset name, a YAML file (trmlab ``config.yaml``, a preset-like or override
file, or an official ``all_config.yaml``), a run or checkpoint directory holding ``config.yaml``, or an
official checkpoint folder / file with ``all_config.yaml`` beside it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trmlab.config.fields import flat_values, get_value, schema_fields
from trmlab.config.loader import (
    COMMAND_LINE,
    Entry,
    ResolvedConfig,
    is_preset_file_spec,
    load_config,
    load_resolved,
    override_file_layer,
    parse_overrides,
    preset_names,
    resolve,
)
from trmlab.config.official import is_official_layout, read_official_all_config
from trmlab.config.schema import Config
from trmlab.config.validate import format_value
from trmlab.config.yamlio import compose_file, construct
from trmlab.errors import ConfigError

# Not a setting: a label that differs between any two presets.
NOT_COMPARED = ("description",)
# Where ETRM research runs drifted from the reference (etrm-reference §7, §9.1; seed
# OFFICIAL_TRM_CONFIG_DISCREPANCY.md): key → why it matters. Shown beside a research config.
RESEARCH_DRIFT = {
    "arch.L_cycles": "the released TRM decoder was trained with 4; the research presets ship 6 (4 needed "
                     "with a pretrained decoder: at 6 it computes something else), the ETRMTRM preset 4",
    "arch.halt_exploration_prob": "0.1 in TRM and in the ETRM preset since 2026-01-21; the final research "
                                  "runs used 0.5",
    "global_batch_size": "the ETRM preset is 384 (256 until 2026-01-21, 128 for 4-layer encoders); TRM "
                         "used 768",
    "ema": "the released TRM run used EMA; the official repository's default is off",
    "grad_clip_norm": "1.0 in the ETRM presets (the research code clipped each rank's partial gradient)",
}
# The pinned trmlab preset a research config of each variant is compared with.
RESEARCH_REFERENCE_PRESETS = {"etrm": "etrm-arc1", "etrmtrm": "etrmtrm-arc1"}


def is_research_config(config: Config) -> bool:
    """True for the config of a research-code ETRM/ETRMTRM (read from its all_config.yaml)."""
    return config.arch.name in RESEARCH_REFERENCE_PRESETS and config.arch.encoder_numerics == "research"


def research_drift(config: Config) -> list[str]:
    """One line per known drift value where a research config differs from the pinned trmlab preset."""
    preset = RESEARCH_REFERENCE_PRESETS[config.arch.name]
    reference = load_config(preset).config
    lines = []
    for key, why in RESEARCH_DRIFT.items():
        mine, pinned = get_value(config, key), get_value(reference, key)
        if mine != pinned:
            lines.append(f"{key}: {format_value(mine)} here, {format_value(pinned)} in {preset} — {why}")
    return lines


@dataclass
class Source:
    """A config to compare: its column name, the resolved config, and official keys trmlab does not know."""

    name: str
    resolved: ResolvedConfig
    unknown: dict[str, Any] = field(default_factory=dict)
    layered: bool = False  # overrides were already applied while reading


@dataclass
class DiffRow:
    """One parameter across sources."""

    key: str
    arch: bool
    values: list[Any]
    differs: bool


def arch_diff(a: Config, b: Config) -> list[tuple[str, Any, Any]]:
    """``(key, a_value, b_value)`` for every architecture field (``arch=True``) whose values differ."""
    return [(key, get_value(a, key), get_value(b, key)) for key, info in schema_fields().items()
            if info.arch and get_value(a, key) != get_value(b, key)]


def diff_table(sources: Mapping[str, Config] | Sequence[tuple[str, Config]], all_rows: bool = False
               ) -> list[DiffRow]:
    """Rows of the comparison: every differing parameter (``all_rows``: every parameter), schema order."""
    configs = [config for _, config in _pairs(sources)]
    flats = [flat_values(config) for config in configs]
    rows = []
    for key, info in schema_fields().items():
        if key in NOT_COMPARED:
            continue
        values = [flat[key] for flat in flats]
        differs = any(value != values[0] for value in values[1:])
        if differs or all_rows:
            rows.append(DiffRow(key, info.arch, values, differs))
    return rows


def format_diff_table(sources: Mapping[str, Config] | Sequence[tuple[str, Config]], *, all_rows: bool = False,
                      unknown: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The markdown comparison table (one column per named source), a summary line and unknown official keys.

    Values that differ from the first source are in bold; architecture rows are flagged ("⚠ arch"), because a
    checkpoint does not compute the same thing under another value.
    """
    pairs = _pairs(sources)
    names = [name for name, _ in pairs]
    rows = diff_table(pairs, all_rows=all_rows)
    lines = ["| parameter | kind | " + " | ".join(_cell(name) for name in names) + " | match |",
             "|---|---|" + "---|" * len(names) + "---|"]
    for row in rows:
        cells = [_cell(format_value(v), bold=row.differs and i > 0 and v != row.values[0])
                 for i, v in enumerate(row.values)]
        kind = "⚠ arch" if row.arch else "setting"
        lines.append(f"| {row.key} | {kind} | " + " | ".join(cells) + f" | {'❌' if row.differs else '✅'} |")
    lines.append("")
    lines.append(_summary(rows))
    drifted = [row for row in rows if row.differs and row.key in RESEARCH_DRIFT]
    if drifted and any(is_research_config(config) for _, config in pairs):
        lines += ["", "Known drift of the ETRM research runs (etrm-reference §7, §9.1):"]
        lines += [f"- {row.key}: {RESEARCH_DRIFT[row.key]}" for row in drifted]
    lines += _unknown_lines(unknown or {})
    return "\n".join(lines)


def diff_json(sources: Sequence[Source], all_rows: bool = False) -> str:
    """The comparison as JSON: sources, rows (key, arch, values, differs), unknown keys, differ flag."""
    rows = diff_table([(s.name, s.resolved.config) for s in sources], all_rows=all_rows)
    document = {
        "sources": [s.name for s in sources],
        "rows": [{"key": r.key, "arch": r.arch, "values": r.values, "differs": r.differs} for r in rows],
        "unknown": {s.name: s.unknown for s in sources if s.unknown},
        "differ": any(r.differs for r in rows),
    }
    return json.dumps(document, indent=2)


def _pairs(sources: Mapping[str, Config] | Sequence[tuple[str, Config]]) -> list[tuple[str, Config]]:
    pairs = list(sources.items()) if isinstance(sources, Mapping) else list(sources)
    if len(pairs) < 2:
        raise ConfigError(f"a comparison needs at least two sources, got {len(pairs)}")
    return pairs


def _summary(rows: list[DiffRow]) -> str:
    differing = [row for row in rows if row.differs]
    if not differing:
        return "All sources agree on every compared parameter."
    arch = [row.key for row in differing if row.arch]
    text = f"{len(differing)} parameter(s) differ"
    if arch:
        text += (f", {len(arch)} of them architecture ({', '.join(arch)}): a checkpoint trained under one "
                 "does not compute the same thing under the other")
    return text + "."


def _unknown_lines(unknown: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = []
    for name, keys in unknown.items():
        if keys:
            lines += ["", f"Keys in {name} that trmlab does not use (reported, not compared):"]
            lines += [f"- `{key}`: {format_value(value)}" for key, value in keys.items()]
    return lines


def _cell(text: str, bold: bool = False) -> str:
    text = text.replace("|", "\\|")
    return f"**{text}**" if bold else text


# ----------------------------------------------------------------------------------------------- sources


def read_source(spec: str, overrides: Sequence[str] = (), files: Sequence[str | Path] = ()) -> Source:
    """Read one ``config diff`` / ``config show`` source (see the module docstring for what ``spec`` may be),
    then apply override ``files`` and command-line ``overrides`` on top (same precedence as load_config)."""
    path = Path(spec)
    if path.is_dir():
        source = _read_directory(spec, path)
    elif path.is_file():
        if path.suffix in (".yaml", ".yml"):
            source = _read_yaml_source(spec, path, overrides, files)
            if source.layered:
                return source
        else:
            sibling = path.parent / "all_config.yaml"
            if not sibling.is_file():
                raise ConfigError(f"{spec} is a file but neither YAML nor an official checkpoint with "
                                  "all_config.yaml beside it")
            # An official checkpoint file: its config lives beside it.
            resolved, unknown = read_official_all_config(sibling)
            source = Source(f"{spec} (all_config.yaml beside it)", resolved, unknown)
    elif is_preset_file_spec(spec):
        raise ConfigError(f"{spec}: no such file or directory")
    elif spec in preset_names():
        return Source(spec, load_config(spec, overrides, files), layered=True)
    else:
        raise ConfigError(f"{spec!r} is neither a preset ({', '.join(preset_names())}) nor an existing "
                          "file or directory")
    if overrides or files:
        layers = [override_file_layer(path) for path in files]
        layers.append([Entry(key, value, COMMAND_LINE) for key, value in parse_overrides(overrides)])
        source.resolved = resolve(layers, start=source.resolved)
    return source


def _read_directory(spec: str, path: Path) -> Source:
    if (path / "config.yaml").is_file():
        return Source(spec, load_resolved(path / "config.yaml"))
    if (path / "all_config.yaml").is_file():
        resolved, unknown = read_official_all_config(path / "all_config.yaml")
        return Source(spec, resolved, unknown)
    raise ConfigError(f"{spec} holds neither config.yaml (a trmlab run or checkpoint directory) nor "
                      "all_config.yaml (an official checkpoint folder)")


def _read_yaml_source(spec: str, path: Path, overrides: Sequence[str], files: Sequence[str | Path]) -> Source:
    node, loader = compose_file(path)
    data = construct(loader, node, spec) if node is not None else None
    if is_official_layout(data):
        resolved, unknown = read_official_all_config(path)
        return Source(spec, resolved, unknown)
    if isinstance(data, dict) and "config" in data and isinstance(data["config"], dict):
        return Source(spec, load_resolved(path))
    # A preset-like or override file over the schema defaults.
    return Source(spec, load_config(spec, overrides, files), layered=True)
