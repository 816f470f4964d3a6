"""Lossless conversion between the official ``step_N`` layout and the trmlab checkpoint bundle.

official → trmlab: a bundle with ``model.safetensors`` (every tensor but the table, canonical keys, dtypes
kept), ``puzzle_embedding.safetensors``, ``config.yaml`` (provenance "checkpoint SRC") and the original
``all_config.yaml`` bytes (``official_all_config.yaml``). trmlab → official: the ``torch.save`` file of the
official trainer (``_orig_mod.model.inner.`` keys, official order, module metadata) plus ``all_config.yaml``;
a converted official checkpoint comes back byte for byte.

ETRM research-code checkpoints (ETRM/ETRMTRM with ``arch.encoder_numerics = research``) convert the same
way, through :mod:`trmlab.interop.research_keys`; the manifest records the file's own layout (key prefix, key
order, container, module metadata) so that the research file comes back byte for byte too.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import yaml

from trmlab.checkpoints.bundle import (
    CONFIG_FILE,
    EMA_FILE,
    MODEL_FILE,
    TABLE_FILE,
    _config_document,
    read_checkpoint,
    write_checkpoint,
)
from trmlab.errors import CheckpointError, write_errors_as_os_error
from trmlab.interop.hub import hub_origin, resolve_path
from trmlab.interop.loading import (
    infer_dims,
    read_step_file,
    seq_len_from_datasets,
    seq_len_from_shapes,
)
from trmlab.interop.official_keys import OFFICIAL_PREFIXES, TABLE_KEY, canonical_to_official, official_order
from trmlab.interop.research_keys import (
    RESEARCH_PREFIXES,
    canonical_to_research,
    family_of,
    research_order,
    research_prefix,
)
from trmlab.staging import make_parents, remove_created

OFFICIAL_CONFIG_COPY = "official_all_config.yaml"
OFFICIAL_MODEL_CLASS = "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"
OFFICIAL_LOSS = "losses@ACTLossHead"
RESEARCH_MODEL_CLASSES = {"etrm": "recursive_reasoning.etrm@TRMWithEncoder",
                          "etrmtrm": "recursive_reasoning.etrmtrm@TRMWithRecurrentEncoder"}


def _step_from_name(path: Path) -> int | None:
    match = re.fullmatch(r"step_(\d+)", path.name)
    return int(match.group(1)) if match else None


def official_to_trmlab(src: str | Path, dst: str | Path, *, config: Any = None, seq_len: int | None = None
                       ) -> Path:
    """Convert an official ``step_N`` file into a trmlab bundle directory ``dst`` (written atomically)."""
    from trmlab.models.core import prefix_length

    src = Path(resolve_path(src))  # an hf:// path: fetched through the Hugging Face cache
    refuse_inconsistent(src, config, seq_len)
    state, resolved = read_step_file(src, config)
    research = resolved.config.arch.name != "trm"
    prefix_len = prefix_length(resolved.config.arch)
    length = seq_len or seq_len_from_shapes(state, prefix_len) or seq_len_from_datasets(resolved.config)
    provenance = {key: f"checkpoint {src}" + (f" ({text})" if text else "")
                  for key, text in resolved.provenance.items()}
    document = _config_document(type(resolved)(resolved.config, provenance))
    dims = infer_dims(state)
    table = state.pop(TABLE_KEY, None)
    parts: dict[str, Any] = {MODEL_FILE: state}
    if table is not None:
        parts[TABLE_FILE] = {"weights": table}
    parts[CONFIG_FILE] = document
    sibling = src.parent / "all_config.yaml"
    if sibling.is_file():
        parts[OFFICIAL_CONFIG_COPY] = sibling.read_bytes()
    manifest = {
        "step": _step_from_name(src),
        "contents": {"raw": True, "ema": False, "table": table is not None, "train_state": False},
        "dataset_fingerprint": None,
        "model": {"seq_len": length, "vocab_size": dims["vocab_size"],
                  "num_puzzle_identifiers": dims["num_puzzle_identifiers"]},
        "source": {"format": "research" if research else "official", "path": str(src),
                   "bytes": src.stat().st_size,
                   "note": "official files hold the EMA weights when the run had ema: true; the step counts "
                           "yielded batches"},
    }
    if research:
        manifest["source"]["research_layout"] = research_layout(src)
    if (origin := hub_origin(src)) is not None:  # fetched from the Hub: repository and commit
        manifest["source"]["hub"] = origin
    return write_checkpoint(dst, parts, manifest)


def refuse_inconsistent(src: Path, config: Any = None, seq_len: int | None = None) -> None:
    """Refuse to convert what ``trmlab checkpoint inspect`` flags (a tensor the config does not build...)."""
    from trmlab.interop.inspect import inspect_checkpoint

    problems = inspect_checkpoint(src, config, seq_len).inconsistencies
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        first = " ".join(problems[0].split())
        raise CheckpointError(f"{src}: {first}{more}; refusing to convert an inconsistent checkpoint (see "
                              f"trmlab checkpoint inspect {src})")


def research_layout(path: Path) -> dict[str, Any]:
    """How a research file stores its state dict (key order, container, module metadata): what export
    needs to write it again byte for byte."""
    from trmlab.interop.safe_load import safe_torch_load

    raw = safe_torch_load(path, mmap=True)
    metadata = getattr(raw, "_metadata", None)
    keys = list(raw)
    modules = None if metadata is None else [[name, dict(value)] for name, value in metadata.items()]
    return {"container": type(raw).__name__, "keys": keys, "prefix": research_prefix(keys, str(path)),
            "metadata": modules}


def research_state_dict(state: dict[str, torch.Tensor], arch: Any, layout: dict[str, Any] | None,
                        source: str) -> dict[str, torch.Tensor]:
    """trmlab tensors → the research state dict: the recorded ``layout`` when the bundle came from a research
    file (same keys required), else the research table order under ``_orig_mod.model.``."""
    family = family_of(arch)
    prefix = layout["prefix"] if layout else RESEARCH_PREFIXES[0]
    named = {}
    for key in research_order(list(state), family):
        research = canonical_to_research(key, family)
        if research is None:
            raise CheckpointError(f"{source}: tensor {key!r} has no research-code name ({family}): the "
                                  "research code has no such module")
        named[prefix + research] = state[key].detach().to("cpu").contiguous()
    if layout is None:
        return OrderedDict(named)
    if set(layout["keys"]) != set(named):
        extra = sorted(set(named) ^ set(layout["keys"]))
        raise CheckpointError(f"{source}: the weights no longer match the recorded research layout (keys "
                              f"{', '.join(extra[:5])}); convert without the layout record")
    out: dict[str, torch.Tensor] = OrderedDict() if layout["container"] == "OrderedDict" else {}
    for key in layout["keys"]:
        out[key] = named[key]
    if layout["metadata"] is not None:
        metadata = OrderedDict((name, dict(value)) for name, value in layout["metadata"])
        out._metadata = metadata  # type: ignore[attr-defined]
    return out


def official_metadata(arch: Any, num_layers: int, prefix: str = OFFICIAL_PREFIXES[0]) -> OrderedDict:
    """The module-version metadata ``state_dict()`` attaches in the official trainer (for identical bytes)."""
    outer = prefix.rstrip(".").split(".") if prefix else []
    names = [".".join(outer[:n]) for n in range(len(outer) + 1)]
    inner = prefix
    children = ["embed_tokens", "lm_head", "q_head"]
    if arch.puzzle_emb_ndim > 0:
        children.append("puzzle_emb")
    if arch.pos_encodings == "rope":
        children.append("rotary_emb")
    elif arch.pos_encodings == "learned":
        children.append("embed_pos")
    children += ["L_level", "L_level.layers"]
    for i in range(num_layers):
        layer = f"L_level.layers.{i}"
        if arch.mlp_t:
            mixer = ("mlp_t", ("gate_up_proj", "down_proj"))
        else:
            mixer = ("self_attn", ("qkv_proj", "o_proj"))
        children.append(layer)
        for module, subs in (mixer, ("mlp", ("gate_up_proj", "down_proj"))):
            children += [f"{layer}.{module}"] + [f"{layer}.{module}.{sub}" for sub in subs]
    names += [inner + child for child in children]
    return OrderedDict((name, {"version": 1}) for name in names)


def official_state_dict(state: dict[str, torch.Tensor], arch: Any) -> OrderedDict:
    """Canonical tensors → the official state dict (prefixed keys, official order, metadata attached)."""
    prefix = OFFICIAL_PREFIXES[0]
    out = OrderedDict()
    for key in official_order(list(state)):
        official = canonical_to_official(key)
        if official is None:
            raise CheckpointError(f"tensor {key!r} has no official name: only TRM checkpoints can be "
                                  "exported to the official layout")
        out[prefix + official] = state[key].detach().to("cpu").contiguous()
    num_layers = len({m.group(1) for k in state if (m := re.match(r"core\.blocks\.(\d+)\.", k))})
    out._metadata = official_metadata(arch, num_layers, prefix)
    return out


def official_all_config(config: Any, init_dtype: torch.dtype) -> dict[str, Any]:
    """A trmlab Config as the official trainer's all_config.yaml (what the official evaluator reads)."""
    arch = config.arch
    forward = arch.forward_dtype if arch.forward_dtype != "auto" else str(init_dtype).removeprefix("torch.")
    arch_block = {
        "name": RESEARCH_MODEL_CLASSES.get(arch.name, OFFICIAL_MODEL_CLASS),
        "loss": {"name": OFFICIAL_LOSS, "loss_type": arch.loss_type},
        "H_cycles": arch.H_cycles, "L_cycles": arch.L_cycles, "H_layers": arch.H_layers,
        "L_layers": arch.L_layers,
        "hidden_size": arch.hidden_size, "num_heads": arch.num_heads, "expansion": arch.expansion,
        "pos_encodings": arch.pos_encodings, "rms_norm_eps": arch.rms_norm_eps, "rope_theta": arch.rope_theta,
        "puzzle_emb_ndim": arch.puzzle_emb_ndim, "puzzle_emb_len": arch.puzzle_emb_len,
        "halt_max_steps": arch.halt_max_steps, "halt_exploration_prob": arch.halt_exploration_prob,
        "forward_dtype": forward, "mlp_t": arch.mlp_t, "no_ACT_continue": arch.no_ACT_continue,
    }
    if arch.name != "trm":  # the research model's encoder keys (etrm-reference §4.1, §5)
        arch_block["loss"]["kl_weight"] = arch.kl_weight
        arch_block.update({f"encoder_{key}": getattr(arch, f"encoder_{key}") for key in (
            "num_layers", "pooling_method", "set_layers", "layer_scale_init", "norm_style")})
        if arch.name == "etrm":
            arch_block["encoder_type"] = arch.encoder_type
        else:
            arch_block.update({key: getattr(arch, key) for key in (
                "recurrent_encoder_type", "encoder_h_cycles", "encoder_l_cycles", "encoder_l_layers")})
    top = {key: getattr(config, key) for key in (
        "data_paths", "data_paths_test", "global_batch_size", "epochs", "lr", "lr_min_ratio",
        "lr_warmup_steps", "beta1", "beta2", "weight_decay", "puzzle_emb_lr", "puzzle_emb_weight_decay",
        "ema", "ema_rate", "seed", "eval_interval", "min_eval_interval", "project_name", "run_name")}
    top.update({"arch": arch_block, "checkpoint_every_eval": True, "checkpoint_path": None,
                "evaluators": [{"name": "arc@ARC"}], "freeze_weights": False, "load_checkpoint": None})
    return top


def trmlab_to_official(src: str | Path, dst: str | Path, *, use_ema: bool = True,
                       require_research: bool = False) -> Path:
    """Export a trmlab TRM bundle as an official folder ``dst``: ``step_N`` + ``all_config.yaml`` (a
    research-numerics ETRM/ETRMTRM bundle: in the research code's layout).

    Uses ``ema.safetensors`` when present (the official files hold the EMA weights), unless ``use_ema`` is
    False. H_init/L_init are written in the forward dtype, as the official trainer stores them.
    ``require_research``: refuse a TRM (``checkpoint convert to=research``).
    """
    src, dst = Path(resolve_path(src)), Path(dst)
    if dst.exists():
        raise CheckpointError(f"{dst} already exists; choose a new output folder")
    bundle = read_checkpoint(src, verify=True)
    refuse_inconsistent(src)
    resolved = bundle.config()
    arch = resolved.config.arch
    if require_research and arch.name == "trm":
        raise CheckpointError(f"{src} holds a TRM, which has no research-code layout; use to=official")
    if arch.name != "trm" and arch.encoder_numerics != "research":
        raise CheckpointError(f"{src} holds a {arch.name} model with trmlab's own encoder numerics; only TRM "
                              "(official layout) and research-numerics ETRM/ETRMTRM (arch.encoder_numerics="
                              "research, the research code's layout) can be exported")
    state = dict(bundle.tensors(EMA_FILE if use_ema and bundle.has(EMA_FILE) else MODEL_FILE))
    if bundle.has(TABLE_FILE):
        state[TABLE_KEY] = bundle.tensors(TABLE_FILE)["weights"]
    state = _init_buffers_in_forward_dtype(state, resolved.config.arch.forward_dtype, src)
    step = bundle.manifest.get("step")
    name = f"step_{step if step is not None else 0}"
    created = make_parents(dst)
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
        tmp.chmod(0o755)
        if arch.name == "trm":
            official = official_state_dict(state, arch)
        else:
            layout = (bundle.manifest.get("source") or {}).get("research_layout")
            official = research_state_dict(state, arch, layout, str(src))
        with write_errors_as_os_error(tmp / name):  # torch's zip writer: a full disk is a bare RuntimeError
            torch.save(official, tmp / name)
        if bundle.has(OFFICIAL_CONFIG_COPY):
            shutil.copyfile(src / OFFICIAL_CONFIG_COPY, tmp / "all_config.yaml")
        else:
            document = official_all_config(resolved.config, state["core.h_init"].dtype)
            (tmp / "all_config.yaml").write_text(yaml.safe_dump(document, sort_keys=True))
        tmp.rename(dst)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        remove_created(created)
        raise
    return dst / name


def _init_buffers_in_forward_dtype(state: dict[str, torch.Tensor], forward_dtype: str, src: Path
                                   ) -> dict[str, torch.Tensor]:
    if forward_dtype == "auto":
        # auto = bf16 on the GPUs the official code runs on; keep fp32 only if bf16 cannot hold the values.
        exact = all(torch.equal(state[k].to(torch.bfloat16).to(state[k].dtype), state[k])
                    for k in ("core.h_init", "core.l_init"))
        if not exact:
            return state
        forward_dtype = "bfloat16"
    target = torch.bfloat16 if forward_dtype == "bfloat16" else torch.float32
    for key in ("core.h_init", "core.l_init"):
        tensor = state[key]
        if tensor.dtype != target:
            cast = tensor.to(target)
            if not torch.equal(cast.to(tensor.dtype), tensor):
                raise CheckpointError(f"{src}: {key} is stored as {tensor.dtype} with values {target} cannot "
                                      "hold exactly; refusing a lossy export")
            state[key] = cast
    return state
