"""Strict YAML reading for configs: safe loading, line numbers, no surprising scalars.

PyYAML's safe loader follows YAML 1.1, which turns ``yes``/``no``/``on``/``off`` into booleans and reads
``1e-4`` (no dot) as a *string*. Both silently change what a user typed, so :class:`StrictLoader` accepts only
``true``/``false`` as booleans and reads exponent floats without a dot as floats. Duplicate keys (which PyYAML
resolves silently by keeping the last one) are errors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from trmlab.errors import ConfigError, not_utf8

_BOOL_TAG = "tag:yaml.org,2002:bool"
_FLOAT_TAG = "tag:yaml.org,2002:float"


class StrictLoader(yaml.SafeLoader):
    """SafeLoader with ``true``/``false``-only booleans and dot-less exponent floats (``1e-4``)."""


StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                   list("tTfF"))
StrictLoader.add_implicit_resolver(
    _FLOAT_TAG, re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def parse_scalar(text: str, where: str) -> Any:
    """Parse one command-line value as YAML (scalar or flow list); ``where`` names it in errors."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # StrictLoader is a SafeLoader
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: cannot parse {text!r} as a YAML value ({_short(error)})") from None


def compose_file(path: str | Path) -> tuple[yaml.Node | None, StrictLoader]:
    """Read ``path`` into a YAML node tree (with line numbers) and the loader that constructs its values."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {not_utf8(path, error)}") from None
    return compose_text(text, str(path))


def compose_text(text: str, name: str) -> tuple[yaml.Node | None, StrictLoader]:
    """Compose YAML ``text`` (named ``name`` in errors) into a node tree and its loader."""
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as error:
        raise ConfigError(f"{name}: invalid YAML ({_short(error)})") from None
    return node, loader


def construct(loader: StrictLoader, node: yaml.Node, name: str) -> Any:
    """Build the Python value of ``node`` (duplicate keys in nested mappings are errors)."""
    for inner in _walk(node):
        if isinstance(inner, yaml.MappingNode):
            _check_duplicates(loader, inner, name)
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as error:
        raise ConfigError(f"{name}: invalid YAML value ({_short(error)})") from None


def mapping_items(loader: StrictLoader, node: yaml.Node, name: str) -> list[tuple[str, yaml.Node, int]]:
    """``(key, value node, 1-based line)`` of a mapping node; keys must be unique strings."""
    if not isinstance(node, yaml.MappingNode):
        line = node.start_mark.line + 1
        raise ConfigError(f"{name}:{line}: expected a mapping of keys to values, found {_kind(node)}")
    _check_duplicates(loader, node, name)
    items = []
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raise ConfigError(f"{name}:{line}: config keys must be strings, found {key!r}")
        items.append((key, value_node, line))
    return items


def flatten_nodes(loader: StrictLoader, node: yaml.Node, name: str, sections: set[str],
                  prefix: str = "") -> Iterator[tuple[str, Any, int]]:
    """Yield ``(dotted key, value, line)`` for every leaf; mappings under a section name are descended into.

    Keys may be nested (``arch: {L_cycles: 4}``) or dotted (``arch.L_cycles: 4``). A mapping under a key that
    is not a section is yielded as a dict, so type checking reports it instead of it being flattened away.
    """
    for key, value_node, line in mapping_items(loader, node, name):
        dotted = f"{prefix}{key}"
        if dotted in sections and isinstance(value_node, yaml.MappingNode):
            yield from flatten_nodes(loader, value_node, name, sections, dotted + ".")
        else:
            yield dotted, construct(loader, value_node, f"{name}:{line}"), line


def flatten_dict(data: dict, sections: set[str], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Like :func:`flatten_nodes` for an already-loaded dict (no line numbers)."""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if dotted in sections and isinstance(value, dict):
            yield from flatten_dict(value, sections, dotted + ".")
        else:
            yield dotted, value


def with_lines(name: str) -> Callable[[int | None], str]:
    """Source formatter ``file NAME:LINE``."""
    return lambda line: f"file {name}:{line}" if line else f"file {name}"


def _check_duplicates(loader: StrictLoader, node: yaml.MappingNode, name: str) -> None:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        key = loader.construct_object(key_node)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(f"{name}:{line}: key {key!r} is given twice (first at line {seen[key]}); "
                              "keep one")
        seen[key] = line


def _walk(node: yaml.Node) -> Iterator[yaml.Node]:
    yield node
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            yield from _walk(key_node)
            yield from _walk(value_node)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _walk(item)


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.ScalarNode):
        return f"the value {node.value!r}"
    return "something else"


def _short(error: yaml.YAMLError) -> str:
    return " ".join(str(error).split())


class _Dumper(yaml.SafeDumper):
    """Block-style mappings (one key per line, so errors can cite lines) with flow-style lists."""


class _StrictResolver(yaml.resolver.Resolver):
    yaml_implicit_resolvers = StrictLoader.yaml_implicit_resolvers


_RESOLVERS = (yaml.resolver.Resolver(), _StrictResolver())


def looks_like_another_type(text: str) -> bool:
    """True when plain YAML 1.1 *or* StrictLoader reads ``text`` unquoted as a non-string ("yes", "1e5")."""
    return any(r.resolve(yaml.ScalarNode, text, (True, False)) != "tag:yaml.org,2002:str" for r in _RESOLVERS)


# Left unquoted only when obviously plain (names, paths, numbers-as-text are caught by the resolvers).
_PLAIN = re.compile(r"[A-Za-z0-9_/.][A-Za-z0-9_./+-]*")


def quote_if_needed(text: str) -> str:
    """``text`` as a YAML flow scalar that reads back as this exact string (single-quoted when needed)."""
    if text == text.strip() and _PLAIN.fullmatch(text) and not looks_like_another_type(text):
        return text
    return "'" + text.replace("'", "''") + "'"


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "'" if looks_like_another_type(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(
    list, lambda dumper, value: dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True))


def dump_yaml(document: Any) -> str:
    """YAML text of ``document`` in key order, mappings one key per line, lists inline."""
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=120)
