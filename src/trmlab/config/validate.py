"""Validation of a whole config: types, ranges, choices and the rules that tie fields together.

Every problem is collected and reported in one :class:`~trmlab.errors.ConfigError`, each naming the key, its
value and (when known) where the value came from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from trmlab.config.fields import check_type, get_value, schema_fields, type_name
from trmlab.config.schema import Config
from trmlab.config.yamlio import quote_if_needed
from trmlab.errors import ConfigError

ENCODER_VARIANTS = ("etrm", "etrmtrm")
VARIATIONAL_ENCODERS = ("lpn_variational", "hybrid_variational", "lpn_var")
LOGGERS = ("tensorboard", "wandb")

# Fields only one family of variants reads. Setting one to a non-default value for a variant that ignores it
# is an error: the reference code silently ignored such fields (etrm-reference §9.11).
_USED_BY: dict[str, tuple[str, ...]] = {
    "puzzle_emb_lr": ("trm",),
    "puzzle_emb_weight_decay": ("trm",),
    "puzzle_emb_reinit": ("trm",),
    "freeze_weights": ("trm",),
    "arch.encoder_num_layers": ENCODER_VARIANTS,
    "arch.encoder_pooling_method": ENCODER_VARIANTS,
    "arch.encoder_set_layers": ENCODER_VARIANTS,
    "arch.encoder_layer_scale_init": ENCODER_VARIANTS,
    "arch.encoder_norm_style": ENCODER_VARIANTS,
    "arch.encoder_qk_norm": ENCODER_VARIANTS,
    "encoder_lr_scale": ENCODER_VARIANTS,
    "encoder_weight_decay_scale": ENCODER_VARIANTS,
    "freeze_decoder_steps": ENCODER_VARIANTS,
    "demo_sampling": ENCODER_VARIANTS,
    "arch.contrastive_weight": ENCODER_VARIANTS,
    "arch.contrastive_temperature": ENCODER_VARIANTS,
    "arch.encoder_type": ("etrm",),
    "arch.encoder_set_memory": ("etrm",),
    "arch.context_refine_steps": ("etrm",),
    "arch.context_refine_lr": ("etrm",),
    "arch.encoder_token_layout": ENCODER_VARIANTS,
    "arch.encoder_numerics": ENCODER_VARIANTS,
    "arch.recurrent_encoder_type": ("etrmtrm",),
    "arch.encoder_h_cycles": ("etrmtrm",),
    "arch.encoder_l_cycles": ("etrmtrm",),
    "arch.encoder_l_layers": ("etrmtrm",),
}
_TRM_STYLE_ONLY = ("arch.encoder_h_cycles", "arch.encoder_l_cycles", "arch.encoder_l_layers")
_VARIATIONAL_ONLY = ("arch.kl_weight", "arch.encoder_latent_dim")


def validate(config: Config, provenance: Mapping[str, str] | None = None) -> None:
    """Check ``config``; raise one :class:`ConfigError` listing every problem (with sources when given)."""
    raise_problems(collect_problems(config, provenance))


def raise_problems(problems: list[str]) -> None:
    """Raise one ConfigError for ``problems`` (nothing when empty); the list is kept as ``error.problems``."""
    if not problems:
        return
    if len(problems) == 1:
        error = ConfigError(problems[0])
    else:
        error = ConfigError(f"{len(problems)} config problems:\n  - " + "\n  - ".join(problems))
    error.problems = list(problems)
    raise error


def collect_problems(config: Config, provenance: Mapping[str, str] | None = None,
                     cross_field: bool = True) -> list[str]:
    """Every problem of ``config`` as a message naming key, value and source (``cross_field``: also the rules
    tying fields together)."""
    where = _Where(config, provenance or {})
    problems = []
    bad_type = set()
    for key, info in schema_fields().items():
        value = get_value(config, key)
        ok, _ = check_type(value, info.hint)
        if not ok:
            problems.append(f"{where(key, quote=True)}: expected {type_name(info.hint)}, got {_kind(value)}")
            bad_type.add(key)
            continue
        problems += [f"{where(key)}: {text}" for text in _field_problems(value, info)]
    if bad_type or not cross_field:  # cross-field rules would only repeat the type errors
        return problems
    return problems + _cross_field_problems(config, where)


class _Where:
    """Formats ``key = value (source)`` for messages."""

    def __init__(self, config: Config, provenance: Mapping[str, str]) -> None:
        self.config = config
        self.provenance = provenance

    def __call__(self, key: str, quote: bool = False) -> str:
        value = get_value(self.config, key)
        text = f"{key} = {value!r}" if quote and isinstance(value, str) else f"{key} = {format_value(value)}"
        source = self.provenance.get(key)
        return f"{text} ({source})" if source else text


def _field_problems(value: Any, info: Any) -> list[str]:
    if value is None:
        return []
    if info.choices is not None and value not in info.choices:
        return [f"must be one of {', '.join(map(str, info.choices))}"]
    items = value if isinstance(value, list) else [value]
    numbers = [v for v in items if isinstance(v, int | float) and not isinstance(v, bool)]
    problems = []
    for number in numbers:
        # "not (a >= b)" also catches NaN.
        if info.ge is not None and not number >= info.ge:
            problems.append(f"must be ≥ {format_value(info.ge)}")
        if info.gt is not None and not number > info.gt:
            problems.append(f"must be > {format_value(info.gt)}")
        if info.le is not None and not number <= info.le:
            problems.append(f"must be ≤ {format_value(info.le)}")
    return problems[:1]


def _cross_field_problems(config: Config, where: _Where) -> list[str]:
    return (_shape_problems(config, where) + _variant_problems(config, where)
            + _schedule_problems(config, where) + _misc_problems(config, where))


def _shape_problems(config: Config, where: _Where) -> list[str]:
    arch = config.arch
    problems = []
    if arch.hidden_size % arch.num_heads:
        problems.append(f"{where('arch.hidden_size')} is not divisible by {where('arch.num_heads')}: "
                        "the head width must be an integer")
    elif arch.pos_encodings == "rope" and (arch.hidden_size // arch.num_heads) % 2:
        problems.append(f"{where('arch.hidden_size')} / {where('arch.num_heads')} gives an odd head width, "
                        "which RoPE cannot rotate: use an even head width")
    prefix_width = arch.puzzle_emb_len * arch.hidden_size
    if arch.name == "trm" and arch.puzzle_emb_len > 0 and arch.puzzle_emb_ndim > prefix_width:
        problems.append(f"{where('arch.puzzle_emb_ndim')} does not fit in {where('arch.puzzle_emb_len')} "
                        f"prefix positions of width {arch.hidden_size}: raise puzzle_emb_len or set it to 0 "
                        "(auto)")
    return problems


def _variant_problems(config: Config, where: _Where) -> list[str]:
    arch = config.arch
    problems = []
    if arch.name in ENCODER_VARIANTS:
        if arch.puzzle_emb_len == 0:
            problems.append(f"{where('arch.puzzle_emb_len')}: {arch.name} needs puzzle_emb_len > 0 "
                            "(the number of context tokens the encoder writes into the prefix)")
        if arch.puzzle_emb_ndim != 0:
            problems.append(f"{where('arch.puzzle_emb_ndim')}: {arch.name} has no puzzle-id table (the "
                            "encoder replaces it); set arch.puzzle_emb_ndim=0")
        if arch.encoder_type in ("lpn", "lpn_var") and arch.encoder_numerics != "research":
            problems.append(f"{where('arch.encoder_type')}: {arch.encoder_type} exists only to load "
                            "research checkpoints (arch.encoder_numerics=research); use lpn_standard or "
                            "lpn_variational")
        if arch.name == "etrm" and arch.encoder_set_memory == "tokens" and arch.encoder_type != "standard":
            problems.append(f"{where('arch.encoder_set_memory')}: 'tokens' needs arch.encoder_type=standard "
                            f"(got {arch.encoder_type!r}, which pools each demo to one vector by design)")
    return problems + [f"{where(key)} {reason}: remove it" for key, reason in unused_fields(config).items()]


def unused_fields(config: Config) -> dict[str, str]:
    """Fields set away from their schema default although the chosen variant ignores them → why."""
    arch, defaults = config.arch, schema_fields()

    def changed(key: str) -> bool:
        return get_value(config, key) != defaults[key].default

    unused = {key: f"has no effect with arch.name = {arch.name} (only {'/'.join(variants)} use it)"
              for key, variants in _USED_BY.items() if arch.name not in variants and changed(key)}
    if arch.name == "etrmtrm" and arch.recurrent_encoder_type != "trm_style":
        unused |= {key: "only acts with arch.recurrent_encoder_type = trm_style"
                   for key in _TRM_STYLE_ONLY if changed(key)}
    if arch.name == "etrm" and arch.encoder_set_memory == "tokens" and changed("arch.encoder_pooling_method"):
        unused["arch.encoder_pooling_method"] = ("has no effect with arch.encoder_set_memory = tokens (the "
                                                 "context queries read the tokens, nothing is pooled)")
    if arch.name != "etrm" or arch.encoder_type not in VARIATIONAL_ENCODERS:
        unused |= {key: "only acts with a variational encoder (arch.name = etrm and encoder_type "
                        f"{' or '.join(VARIATIONAL_ENCODERS)})" for key in _VARIATIONAL_ONLY if changed(key)}
    return unused


def _schedule_problems(config: Config, where: _Where) -> list[str]:
    problems = []
    if config.eval_interval is not None and config.epochs % config.eval_interval:
        problems.append(f"{where('eval_interval')} must divide {where('epochs')} (the official loop runs "
                        "epochs / eval_interval iterations)")
    if config.init_from is not None and config.resume is not None:
        problems.append(f"{where('init_from')} and {where('resume')} are both set: resume continues a run, "
                        "init_from starts a new one from weights; set only one")
    if config.freeze_weights and config.ema:
        problems.append(f"{where('freeze_weights')} holds every averaged weight still: set ema=false (the "
                        "puzzle table is never averaged)")
    return problems


def _misc_problems(config: Config, where: _Where) -> list[str]:
    problems = []
    if not re.fullmatch(r"auto|cpu|cuda|cuda:\d+", config.device):
        problems.append(f"{where('device')}: must be auto, cpu, cuda or cuda:N")
    unknown = [name for name in config.loggers if name not in LOGGERS]
    if unknown:
        problems.append(f"{where('loggers')}: unknown logger(s) {', '.join(unknown)}; "
                        f"choose from {', '.join(LOGGERS)}")
    if len(set(config.loggers)) != len(config.loggers):
        problems.append(f"{where('loggers')}: a logger is listed twice")
    ks = config.eval.pass_ks
    if not ks:
        problems.append(f"{where('eval.pass_ks')}: give at least one K")
    elif any(k < 1 for k in ks):
        problems.append(f"{where('eval.pass_ks')}: every K must be a positive integer")
    elif len(set(ks)) != len(ks):
        problems.append(f"{where('eval.pass_ks')}: a K is listed twice")
    for key in ("data_paths", "data_paths_test"):
        if any(not path.strip() for path in get_value(config, key)):
            problems.append(f"{where(key)}: contains an empty path")
    return problems


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "a string (remove the quotes)" if re.fullmatch(r"[-+.\de]+|true|false", value) else "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float (write it without .0)" if value.is_integer() else "a number with a fraction"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def format_value(value: Any) -> str:
    """A value as a user would type it (YAML style: true, null, [a, b])."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return quote_if_needed(value)
    return repr(value)
