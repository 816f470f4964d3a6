"""``trmlab config show``: a resolved config rendered with the source of every value."""

from __future__ import annotations

import json
from typing import Any

from trmlab.config.fields import get_value, schema_fields
from trmlab.config.loader import ResolvedConfig, config_to_dict
from trmlab.config.validate import format_value
from trmlab.config.yamlio import dump_yaml


def stored_document(resolved: ResolvedConfig) -> dict[str, Any]:
    """``{config, provenance}``: the layout of ``config.yaml`` in run and checkpoint directories."""
    return {"config": config_to_dict(resolved.config),
            "provenance": {key: resolved.provenance.get(key, "unknown") for key in schema_fields()}}


def render_show(name: str, resolved: ResolvedConfig, unknown: dict[str, Any] | None = None,
                fmt: str = "text") -> str:
    """``resolved`` as an aligned text table (key, value, source; architecture keys marked), YAML or JSON."""
    unknown = unknown or {}
    if fmt == "json":
        document = stored_document(resolved) | ({"unknown": unknown} if unknown else {})
        return json.dumps(document, indent=2) + "\n"
    if fmt == "yaml":
        document = stored_document(resolved) | ({"unknown": unknown} if unknown else {})
        return dump_yaml(document)
    return _text_table(name, resolved, unknown)


def _text_table(name: str, resolved: ResolvedConfig, unknown: dict[str, Any]) -> str:
    config = resolved.config
    rows = [(("*" if info.arch else " "), key, format_value(get_value(config, key)),
             resolved.provenance.get(key, "unknown")) for key, info in schema_fields().items()]
    key_width = max(len(row[1]) for row in rows)
    value_width = min(max(len(row[2]) for row in rows), 40)
    title = f"# {name}" + (f": {config.description}" if config.description else "")
    lines = [title, "# * = architecture: changes what a checkpoint computes", "",
             f"  {'key':<{key_width}}  {'value':<{value_width}}  source"]
    lines += [f"{mark} {key:<{key_width}}  {value:<{value_width}}  {source}"
              for mark, key, value, source in rows]
    if unknown:
        lines += ["", "keys trmlab does not use (reported, not applied):"]
        lines += [f"  {key}: {format_value(value)}" for key, value in unknown.items()]
    return "\n".join(lines) + "\n"
