"""Resolving a config from layers, with the source of every value.

Precedence (later wins): schema default < preset chain (base first) < override files (in the order given)
< command-line overrides. Every value remembers which layer set it (:attr:`ResolvedConfig.provenance`).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from trmlab.config.fields import (
    SECTIONS,
    build_config,
    check_type,
    default_values,
    flat_values,
    schema_fields,
    type_name,
    unknown_key_message,
)
from trmlab.config.schema import Config
from trmlab.config.validate import collect_problems, format_value, raise_problems
from trmlab.config.yamlio import (
    compose_file,
    construct,
    dump_yaml,
    flatten_dict,
    flatten_nodes,
    mapping_items,
    parse_scalar,
)
from trmlab.errors import ConfigError

SCHEMA_DEFAULT = "schema default"
COMMAND_LINE = "command line"
PRESET_META_KEYS = ("base",)
_SECTION_NAMES = set(SECTIONS)


@dataclass
class ResolvedConfig:
    """A validated :class:`Config` and, for every dotted key, where its value came from."""

    config: Config
    provenance: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """One value set by one layer: dotted key, raw value, source text."""

    key: str
    value: Any
    source: str


# ----------------------------------------------------------------------------------------------- presets


def presets_dir() -> Path:
    """The folder of the shipped preset YAML files."""
    return Path(str(resources.files("trmlab.config") / "presets"))


def preset_names() -> list[str]:
    """Names of the shipped presets, sorted."""
    return sorted(path.stem for path in presets_dir().glob("*.yaml"))


def preset_path(name: str) -> Path:
    """File of preset ``name``; ConfigError listing the presets when there is none."""
    path = presets_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(preset_names())}, "
                          "or give a path to a .yaml file")
    return path


def is_preset_file_spec(spec: str) -> bool:
    """True when ``spec`` names a YAML file rather than a shipped preset."""
    return spec.endswith((".yaml", ".yml")) or os.sep in spec


def preset_layers(spec: str, _chain: tuple[str, ...] = ()) -> list[list[Entry]]:
    """The layers of preset (or preset-like YAML file) ``spec`` and its ``base:`` chain, base first."""
    if spec in _chain:
        raise ConfigError(f"preset {spec!r} builds on itself: base chain {' -> '.join((*_chain, spec))}")
    if is_preset_file_spec(spec):
        path, label = Path(spec), lambda line: f"file {spec}:{line}"
    else:
        path = preset_path(spec)
        label = (lambda name: lambda line: f"preset {name} ({name}.yaml:{line})")(spec)
    meta, entries = _read_layer_file(path, label, allow_meta=True)
    layers = []
    if "base" in meta:
        base, line = meta["base"]
        if not isinstance(base, str) or not base:
            raise ConfigError(f"{label(line)}: base must be a preset name or a .yaml path, got {base!r}")
        if is_preset_file_spec(base) and not Path(base).is_absolute():
            base = str(path.parent / base)
        layers = preset_layers(base, (*_chain, spec))
    return [*layers, entries]


def _read_layer_file(path: Path, label: Any, allow_meta: bool
                     ) -> tuple[dict[str, tuple[Any, int]], list[Entry]]:
    """Entries of a nested/dotted YAML file; ``base:`` is returned separately when ``allow_meta``."""
    node, loader = compose_file(path)
    if node is None:
        return {}, []
    meta: dict[str, tuple[Any, int]] = {}
    entries = []
    for key, value_node, line in mapping_items(loader, node, str(path)):
        if key in PRESET_META_KEYS:
            if not allow_meta:
                raise ConfigError(f"{label(line)}: 'base:' belongs in a preset file; in an override file "
                                  "(config=FILE.yaml) pass the preset as the first argument instead")
            meta[key] = (construct(loader, value_node, str(path)), line)
            continue
        single = yaml.MappingNode("tag:yaml.org,2002:map", [(_key_node(key, line), value_node)])
        for dotted, value, inner_line in flatten_nodes(loader, single, str(path), _SECTION_NAMES):
            entries.append(Entry(dotted, value, label(inner_line)))
    _check_repeats(entries)
    return meta, entries


def _key_node(key: str, line: int) -> yaml.ScalarNode:
    mark = yaml.Mark("", 0, line - 1, 0, None, None)
    return yaml.ScalarNode("tag:yaml.org,2002:str", key, mark, mark)


def _check_repeats(entries: Sequence[Entry]) -> None:
    """A key set twice in one layer (nested and dotted) is an error, not 'last one wins'."""
    seen: dict[str, Entry] = {}
    problems = []
    for entry in entries:
        if entry.key in seen:
            problems.append(f"{entry.key} is set twice: {seen[entry.key].source} and {entry.source}; "
                            "keep one")
        seen[entry.key] = entry
    raise_problems(problems)


# ----------------------------------------------------------------------------------------------- overrides


def parse_overrides(items: Iterable[str]) -> list[tuple[str, Any]]:
    """Parse ``key=value`` strings; values are YAML scalars or flow lists (``[a, b]``, ``null``, ``3e-4``).

    Types are checked later against the schema; nothing is converted here except by YAML itself.
    """
    parsed: list[tuple[str, Any]] = []
    problems = []
    seen = set()
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"override {item!r} (command line): expected key=value, e.g. arch.L_cycles=4")
            continue
        if not text.strip():
            problems.append(f"override {item!r} (command line): empty value; write {key}=null to unset it")
            continue
        if key in seen:
            problems.append(f"{key} is given twice on the command line; keep one")
            continue
        seen.add(key)
        try:
            parsed.append((key, parse_scalar(text, f"override {item!r} (command line)")))
        except ConfigError as error:
            problems.append(str(error))
    raise_problems(problems)
    return parsed


def override_file_layer(path: str | Path) -> list[Entry]:
    """Entries of an override file (``config=FILE.yaml``): nested or dotted keys, no ``base:``."""
    _, entries = _read_layer_file(Path(path), lambda line: f"file {path}:{line}", allow_meta=False)
    return entries


# ----------------------------------------------------------------------------------------------- resolving


def resolve(layers: Iterable[Sequence[Entry]], start: ResolvedConfig | None = None) -> ResolvedConfig:
    """Apply ``layers`` in order over ``start`` (None: schema defaults); validate; collect every problem."""
    fields = schema_fields()
    if start is None:
        values, provenance = default_values(), dict.fromkeys(fields, SCHEMA_DEFAULT)
    else:
        values, provenance = flat_values(start.config), dict(start.provenance)
    problems = []
    for layer in layers:
        for entry in layer:
            if entry.key not in fields:
                problems.append(unknown_key_message(entry.key, entry.source))
                continue
            ok, value = check_type(entry.value, fields[entry.key].hint)
            if not ok:
                problems.append(f"{entry.key} = {_quoted(entry.value)} ({entry.source}): expected "
                                f"{type_name(fields[entry.key].hint)}")
                continue
            values[entry.key], provenance[entry.key] = value, entry.source
    config = build_config(values)
    # With entries rejected above, cross-field rules would judge a config the user did not ask for.
    raise_problems(problems + collect_problems(config, provenance, cross_field=not problems))
    return ResolvedConfig(config, provenance)


def _quoted(value: Any) -> str:
    return repr(value) if isinstance(value, str) else format_value(value)


def load_config(preset: str | None, overrides: Sequence[str] = (), files: Sequence[str | Path] = ()
                ) -> ResolvedConfig:
    """Resolve a config: ``preset`` (a shipped name or a YAML path, None = schema defaults), then override
    ``files`` in order, then command-line ``overrides`` (``key=value`` strings)."""
    layers: list[list[Entry]] = preset_layers(str(preset)) if preset else []
    layers += [override_file_layer(path) for path in files]
    layers.append([Entry(key, value, COMMAND_LINE) for key, value in parse_overrides(overrides)])
    return resolve(layers)


# ----------------------------------------------------------------------------------------- (de)serialising


def config_to_dict(config: Config) -> dict[str, Any]:
    """Nested plain dict of ``config`` (``arch`` and ``eval`` first), as stored in ``config.yaml``."""
    data = dataclasses.asdict(config)
    return {name: data.pop(name) for name in SECTIONS} | data


def config_from_dict(data: dict[str, Any], source: str) -> ResolvedConfig:
    """Strictly rebuild a config from :func:`config_to_dict` output; every value's provenance is ``source``.

    Unknown keys are errors. A missing architecture key is an error too (never substitute a default for what a
    checkpoint computes); a missing non-architecture key takes the schema default, marked as such.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of config keys, found {type(data).__name__}")
    if isinstance(data.get("config"), dict):
        raise ConfigError(f"{source}: this is a whole config.yaml document; pass its 'config' mapping "
                          "(or use load_resolved(path))")
    entries = [Entry(key, value, source) for key, value in flatten_dict(data, _SECTION_NAMES)]
    return _resolve_complete(entries, source)


def _resolve_complete(entries: list[Entry], source: str) -> ResolvedConfig:
    _check_repeats(entries)
    fields = schema_fields()
    given = {entry.key for entry in entries}
    missing_arch = [key for key, info in fields.items() if info.arch and key not in given]
    if missing_arch:
        raise ConfigError(f"{source} lacks architecture key(s) {', '.join(missing_arch)}: a stored config "
                          "must say what the model computes; refusing to substitute defaults")
    resolved = resolve([entries])
    for key in fields.keys() - given:
        resolved.provenance[key] = f"{SCHEMA_DEFAULT} (not in {source})"
    return resolved


def save_resolved(resolved: ResolvedConfig, path: str | Path) -> None:
    """Write ``{config, provenance}`` YAML atomically (temporary file, then rename)."""
    path = Path(path)
    document = {"config": config_to_dict(resolved.config),
                "provenance": {key: resolved.provenance.get(key, "unknown") for key in schema_fields()}}
    text = dump_yaml(document)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a config is meant to be read by collaborators
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_resolved(path: str | Path) -> ResolvedConfig:
    """Read a ``config.yaml`` written by :func:`save_resolved`, strictly; errors cite file and line.

    The stored provenance is kept (it says where each value originally came from); keys without one are
    attributed to ``file PATH:LINE``.
    """
    path = Path(path)
    node, loader = compose_file(path)
    if node is None:
        raise ConfigError(f"{path} is empty; expected a trmlab config.yaml with 'config:' and 'provenance:'")
    top = {key: (value_node, line) for key, value_node, line in mapping_items(loader, node, str(path))}
    extra = sorted(set(top) - {"config", "provenance"})
    if "config" not in top or extra:
        raise ConfigError(f"{path} is not a trmlab config.yaml: expected top-level keys config and provenance"
                          + (f", found {', '.join(extra)}" if extra else ""))
    config_node, _ = top["config"]
    entries = [Entry(key, value, f"file {path}:{line}")
               for key, value, line in flatten_nodes(loader, config_node, str(path), _SECTION_NAMES)]
    resolved = _resolve_complete(entries, f"file {path}")
    if "provenance" in top:
        stored = _checked_provenance(construct(loader, top["provenance"][0], str(path)), path)
        given = {entry.key for entry in entries}
        resolved.provenance.update({key: text for key, text in stored.items() if key in given})
    return resolved


def _checked_provenance(stored: Any, path: Path) -> dict[str, str]:
    if not isinstance(stored, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in stored.items()):
        raise ConfigError(f"{path}: provenance must map dotted keys to source strings")
    unknown = sorted(set(stored) - set(schema_fields()))
    if unknown:
        raise ConfigError(f"{path}: provenance names unknown key(s) {', '.join(unknown)}")
    return stored
