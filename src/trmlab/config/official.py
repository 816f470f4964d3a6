"""Reading the official TRM / ETRM ``all_config.yaml`` layout onto the trmlab schema.

The official trainer dumps its whole config: an ``arch:`` block (with ``name: module@Class`` and a ``loss:``
block ``{name, loss_type}``) plus top-level training keys (trm-reference §5.5). Keys with the same meaning map
one to one; keys trmlab has no equivalent for are returned, never dropped; keys the official model class fills
in itself when absent take that class default, and their provenance says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from trmlab.config.fields import build_config, check_type, default_values, schema_fields
from trmlab.config.loader import Entry, ResolvedConfig, resolve
from trmlab.config.validate import unused_fields
from trmlab.config.yamlio import compose_file, construct, mapping_items
from trmlab.errors import ConfigError

# Class name after '@' in arch.name -> trmlab model variant.
OFFICIAL_MODEL_CLASSES = {
    "TinyRecursiveReasoningModel_ACTV1": "trm",
    "TRMWithEncoder": "etrm",
    "TRMWithRecurrentEncoder": "etrmtrm",
}
OFFICIAL_LOSS_HEADS = ("ACTLossHead",)
# The ETRM research code's model classes: trmlab builds them with arch.encoder_numerics = research.
RESEARCH_MODEL_CLASSES = ("TRMWithEncoder", "TRMWithRecurrentEncoder")
# Research class defaults of the encoder keys (etrm-reference §4.1, §5), applied when a dump lacks them.
_RESEARCH_ARCH_DEFAULTS = {"encoder_type": "standard", "encoder_num_layers": 2,
                           "encoder_pooling_method": "mean", "encoder_set_layers": 1,
                           "encoder_layer_scale_init": 0.0, "encoder_norm_style": "post"}
_RESEARCH_RECURRENT_DEFAULTS = {"recurrent_encoder_type": "recurrent_standard", "encoder_h_cycles": 3,
                                "encoder_l_cycles": 1, "encoder_l_layers": 2}

# arch.* keys the official model class requires (an all_config.yaml without them is not a complete dump).
_REQUIRED_ARCH = ("H_cycles", "L_cycles", "H_layers", "L_layers", "hidden_size", "expansion", "num_heads",
                  "pos_encodings", "halt_max_steps", "halt_exploration_prob")
# Official class defaults for arch keys that may be absent (trm-reference §2.1). They differ from trmlab's
# schema defaults in places (puzzle_emb_ndim 0, forward_dtype bfloat16), so they are applied explicitly.
_OFFICIAL_ARCH_DEFAULTS = {"puzzle_emb_ndim": 0, "puzzle_emb_len": 16, "rms_norm_eps": 1e-5,
                           "rope_theta": 10000.0, "forward_dtype": "bfloat16", "mlp_t": False,
                           "no_ACT_continue": True}
# Top-level official keys whose trmlab name differs.
_RENAMED_TOP = {"load_pretrained_decoder": "init_from", "max_eval_groups": "eval.max_tasks"}
# Keys with the same name and meaning in both. Anything else is reported as unknown, including official arch
# keys the official code accepted but ignored (arch.kl_weight, lpn_latent_dim: etrm-reference §9.11).
_TOP_LEVEL_SAME = ("data_paths", "data_paths_test", "global_batch_size", "epochs", "lr", "lr_min_ratio",
                   "lr_warmup_steps", "beta1", "beta2", "weight_decay", "puzzle_emb_lr",
                   "puzzle_emb_weight_decay", "ema", "ema_rate", "seed", "eval_interval", "min_eval_interval",
                   "project_name", "run_name", "max_demos", "max_train_groups", "grad_clip_norm",
                   "freeze_decoder_steps", "encoder_lr_scale", "freeze_weights")
_ARCH_SAME = ("H_cycles", "L_cycles", "H_layers", "L_layers", "hidden_size", "num_heads", "expansion",
              "pos_encodings", "rms_norm_eps", "rope_theta", "puzzle_emb_ndim", "puzzle_emb_len",
              "halt_max_steps", "halt_exploration_prob", "forward_dtype", "mlp_t", "no_ACT_continue",
              "encoder_type", "encoder_num_layers", "encoder_pooling_method", "encoder_set_layers",
              "encoder_layer_scale_init", "encoder_norm_style", "recurrent_encoder_type", "encoder_h_cycles",
              "encoder_l_cycles", "encoder_l_layers")


def is_official_layout(data: Any) -> bool:
    """True for the official layout: ``arch.name`` of the form ``module@Class``, or an ``arch.loss`` block."""
    arch = data.get("arch") if isinstance(data, dict) else None
    if not isinstance(arch, dict):
        return False
    return (isinstance(arch.get("name"), str) and "@" in arch["name"]) or isinstance(arch.get("loss"), dict)


def read_official_all_config(path: str | Path) -> tuple[ResolvedConfig, dict[str, Any]]:
    """Map an official ``all_config.yaml`` onto the schema.

    Returns the resolved config (provenance ``official PATH:LINE``, or
    ``official class default (not in PATH)``) and ``{dotted official key: value}`` for every key trmlab does
    not know, so callers can report them.
    """
    path = Path(path)
    node, loader = compose_file(path)
    if node is None:
        raise ConfigError(f"{path} is empty; expected an official all_config.yaml")
    items = {key: (value_node, line) for key, value_node, line in mapping_items(loader, node, str(path))}
    if "arch" not in items:
        raise ConfigError(f"{path} has no 'arch:' block, so it is not an official all_config.yaml")
    label = f"official {path}"
    entries: list[Entry] = []
    unknown: dict[str, Any] = {}
    _map_arch(loader, items.pop("arch"), path, label, entries, unknown)
    for key, (value_node, line) in items.items():
        value = construct(loader, value_node, f"{path}:{line}")
        source = f"{label}:{line}"
        if key in _TOP_LEVEL_SAME:
            entries.append(_top_entry(key, value, source))
            if key == "encoder_lr_scale" and isinstance(value, int | float) and value > 0:
                # The research code's own encoder optimizer decays by 0.1 × weight_decay (§6.2).
                entries.append(Entry("encoder_weight_decay_scale", 0.1,
                                     f"{source} (official encoder_lr_scale > 0: encoder weight decay 0.1 × "
                                     f"weight_decay)"))
        elif key in _RENAMED_TOP:
            entries.append(Entry(_RENAMED_TOP[key], value, f"{source} ({key})"))
        else:
            unknown[key] = value
    return resolve([_without_unused(entries, unknown)]), unknown


def _without_unused(entries: list[Entry], unknown: dict[str, Any]) -> list[Entry]:
    """Move values the official model ignored for this variant (e.g. trm_style knobs beside
    recurrent_standard) to ``unknown``: they had no effect there, and trmlab refuses to take them silently."""
    fields, values = schema_fields(), default_values()
    for entry in entries:
        if entry.key in fields:
            ok, value = check_type(entry.value, fields[entry.key].hint)
            if ok:
                values[entry.key] = value
    unused = unused_fields(build_config(values))
    for entry in entries:
        if entry.key in unused:
            unknown[f"{entry.key} (no effect: {unused[entry.key]})"] = entry.value
    return [entry for entry in entries if entry.key not in unused]


def _top_entry(key: str, value: Any, source: str) -> Entry:
    if key == "encoder_lr_scale" and value == 0:
        # Official 0 = one optimizer for everything at lr; trmlab's equivalent learning rate is scale 1.0.
        return Entry(key, 1.0, f"{source} (official 0 = one optimizer at lr; trmlab 1.0)")
    return Entry(key, value, source)


def _map_arch(loader: Any, arch: tuple[yaml.Node, int], path: Path, label: str, entries: list[Entry],
              unknown: dict[str, Any]) -> None:
    arch_node, _ = arch
    items = {key: (value_node, line) for key, value_node, line in mapping_items(loader, arch_node, str(path))}
    missing = [key for key in (*_REQUIRED_ARCH, "name") if key not in items]
    if missing:
        raise ConfigError(f"{path} lacks arch.{', arch.'.join(missing)}, which the official model requires: "
                          "this is not a complete all_config.yaml")
    research_class = None
    for key, (value_node, line) in items.items():
        value = construct(loader, value_node, f"{path}:{line}")
        source = f"{label}:{line}"
        if key == "name":
            entries.append(Entry("arch.name", _model_name(value, f"{path}:{line}"), source))
            if value.rsplit("@", 1)[-1] in RESEARCH_MODEL_CLASSES:
                research_class = value
                entries.append(Entry("arch.encoder_numerics", "research",
                                     f"{source} (arch.name {value}: the ETRM research code's numerics)"))
        elif key == "loss":
            _map_loss(value, source, entries, unknown)
        elif key in _ARCH_SAME:
            entries.append(Entry(f"arch.{key}", value, source))
        elif key == "encoder_qk_norm" and research_class is not None:
            unknown[f"arch.{key} (accepted but never read by the research encoders)"] = value
        else:
            unknown[f"arch.{key}"] = value
    defaults = dict(_OFFICIAL_ARCH_DEFAULTS)
    if research_class is not None:
        defaults |= _RESEARCH_ARCH_DEFAULTS
        if research_class.endswith("TRMWithRecurrentEncoder"):
            defaults |= _RESEARCH_RECURRENT_DEFAULTS
    for key, value in defaults.items():
        if key not in items:
            entries.append(Entry(f"arch.{key}", value, f"official class default (not in {path})"))


def _model_name(value: Any, where: str) -> str:
    class_name = value.rsplit("@", 1)[-1] if isinstance(value, str) else None
    if class_name not in OFFICIAL_MODEL_CLASSES:
        raise ConfigError(f"{where}: arch.name {value!r} is not a model trmlab implements (known classes: "
                          f"{', '.join(OFFICIAL_MODEL_CLASSES)})")
    return OFFICIAL_MODEL_CLASSES[class_name]


def _map_loss(loss: Any, source: str, entries: list[Entry], unknown: dict[str, Any]) -> None:
    if not isinstance(loss, dict):
        unknown["arch.loss"] = loss
        return
    for key, value in loss.items():
        if key == "loss_type":
            entries.append(Entry("arch.loss_type", value, source))
        elif key == "kl_weight":  # the loss head's kl_weight is the one the official ETRM used
            entries.append(Entry("arch.kl_weight", value, source))
        elif key == "name" and isinstance(value, str) and value.rsplit("@", 1)[-1] in OFFICIAL_LOSS_HEADS:
            continue  # the loss head trmlab implements; nothing to map
        else:
            unknown[f"arch.loss.{key}"] = value

