"""The schema seen as a flat table of dotted keys, with strict type checking of values."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

from trmlab.config.schema import ArchConfig, Config, EvalConfig

# Sections of Config: a mapping under one of these keys is descended into.
SECTIONS: dict[str, type] = {"arch": ArchConfig, "eval": EvalConfig}

# Names users bring from the official/ETRM configs, mapped to the trmlab key that means the same thing.
KNOWN_ALIASES: dict[str, str] = {
    "arch.loss.loss_type": "arch.loss_type",
    "arch.loss.kl_weight": "arch.kl_weight",
    "load_pretrained_decoder": "init_from",
    "load_checkpoint": "init_from",
    "max_eval_groups": "eval.max_tasks",
    "arch.lpn_latent_dim": "arch.encoder_latent_dim",
}


@dataclass(frozen=True)
class FieldInfo:
    """One schema field under its dotted key."""

    key: str
    hint: Any
    default: Any
    help: str
    arch: bool
    choices: tuple | None
    ge: float | None
    gt: float | None
    le: float | None


@cache
def schema_fields() -> dict[str, FieldInfo]:
    """Every leaf field of :class:`Config` by dotted key, in order: ``arch.*``, ``eval.*``, the rest."""
    table: dict[str, FieldInfo] = {}
    for section, cls in SECTIONS.items():
        table.update(_fields_of(cls, section + "."))
    table.update(_fields_of(Config, ""))
    return table


def _fields_of(cls: type, prefix: str) -> dict[str, FieldInfo]:
    hints = typing.get_type_hints(cls)
    table = {}
    for f in dataclasses.fields(cls):
        if f.name in SECTIONS and not prefix:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        meta = f.metadata
        table[prefix + f.name] = FieldInfo(prefix + f.name, hints[f.name], default, meta.get("help", ""),
                                           bool(meta.get("arch")), meta.get("choices"), meta.get("ge"),
                                           meta.get("gt"), meta.get("le"))
    return table


def default_values() -> dict[str, Any]:
    """Fresh copies of every schema default by dotted key."""
    return {key: copy.deepcopy(info.default) for key, info in schema_fields().items()}


def get_value(config: Config, key: str) -> Any:
    """Value of dotted ``key`` in ``config``."""
    obj: Any = config
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def build_config(values: dict[str, Any]) -> Config:
    """A :class:`Config` from a complete dotted-key dict."""
    sections = {name: cls(**{k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(name + ".")})
                for name, cls in SECTIONS.items()}
    top = {k: v for k, v in values.items() if "." not in k}
    return Config(**sections, **top)


def flat_values(config: Config) -> dict[str, Any]:
    """Dotted key → value of every field of ``config``."""
    return {key: get_value(config, key) for key in schema_fields()}


def check_type(value: Any, hint: Any) -> tuple[bool, Any]:
    """``(ok, value)``: strict match against a field's type; an int is accepted (as float) for a float."""
    if hint is Any:
        return True, value
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in typing.get_args(hint):
            return True, None
        for option in typing.get_args(hint):
            if option is not type(None):
                ok, converted = check_type(value, option)
                if ok:
                    return True, converted
        return False, value
    if origin is list:
        if not isinstance(value, list):
            return False, value
        (item_hint,) = typing.get_args(hint)
        checked = [check_type(item, item_hint) for item in value]
        return all(ok for ok, _ in checked), [item for _, item in checked]
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if hint is str:
        return isinstance(value, str), value
    raise TypeError(f"unsupported schema type {hint!r}")


def type_name(hint: Any) -> str:
    """Human name of a field type, for error messages."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        options = [type_name(h) for h in typing.get_args(hint) if h is not type(None)]
        return "null or " + " or ".join(options)
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        return f"a list of {_plural(item_hint)} (e.g. [a, b])"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _plural(hint: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(hint, str(hint))


def suggest(key: str) -> list[str]:
    """Closest valid keys for a mistyped one (official aliases first, then same leaf name, then difflib)."""
    keys = list(schema_fields())
    found = []
    if key in KNOWN_ALIASES:
        found.append(KNOWN_ALIASES[key])
    leaf = key.rsplit(".", 1)[-1]
    found += [k for k in keys if k.rsplit(".", 1)[-1] == leaf]
    found += difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    leaves = {k.rsplit(".", 1)[-1] for k in keys}
    close_leaves = difflib.get_close_matches(leaf, sorted(leaves), n=3, cutoff=0.75)
    found += [k for k in keys if k.rsplit(".", 1)[-1] in close_leaves]
    unique = []
    for candidate in found:
        if candidate != key and candidate not in unique:
            unique.append(candidate)
    return unique[:3]


def unknown_key_message(key: str, source: str) -> str:
    """The error text for an unknown key: where it came from and what was probably meant."""
    if key in SECTIONS:
        return (f"{key} ({source}) is a section, not a value: set its keys, e.g. "
                f"{next(k for k in schema_fields() if k.startswith(key + '.'))}=...")
    candidates = suggest(key)
    hint = (f"did you mean {' or '.join(candidates)}?" if candidates
            else "run `trmlab config show` to list every key")
    return f"unknown key {key!r} ({source}): {hint}"
