"""Loading checkpoints (official ``step_N`` files and trmlab bundles) into ready models, with the guards every
loader must apply: the architecture comes from the checkpoint (:func:`reconcile_architecture`), and a puzzle
table must match the dataset (:func:`check_puzzle_table`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trmlab.errors import CheckpointError, ConfigError, TrmlabError
from trmlab.interop.official_keys import TABLE_KEY, canonical_to_official, strip_official

ENCODER_ARCH_KEYS = ("arch.encoder_type", "arch.encoder_num_layers", "arch.encoder_pooling_method",
                     "arch.encoder_set_layers", "arch.encoder_layer_scale_init", "arch.encoder_norm_style",
                     "arch.encoder_qk_norm", "arch.encoder_latent_dim", "arch.recurrent_encoder_type",
                     "arch.encoder_h_cycles", "arch.encoder_l_cycles", "arch.encoder_l_layers")
# Compared only between checkpoints of the same variant: the encoder's keys, and the puzzle-table width (TRM's
# table is dropped when its decoder moves into an ETRM, whose prefix comes from the encoder).
VARIANT_ARCH_KEYS = (*ENCODER_ARCH_KEYS, "arch.puzzle_emb_ndim")
# Not compared: the variant name (TRM → ETRM transfer is legitimate) and the activation dtype (a deployment
# choice: load_checkpoint(dtype=...) records it as an override).
NOT_RECONCILED = ("arch.name", "arch.forward_dtype")
DTYPE_NAMES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
               "bf16": torch.bfloat16}


# ----------------------------------------------------------------------------------------------- guards


def reconcile_architecture(checkpoint_config: Any, user_config: Any, allow_mismatch: bool = False,
                           source: str = "checkpoint") -> Any:
    """The config to run a checkpoint with: its own architecture, the user's everything else.

    Architecture keys the user did not set (provenance "schema default") silently take the checkpoint's value.
    A user value that differs from the checkpoint's raises CheckpointError with the ``config diff`` table,
    unless ``allow_mismatch`` (config ``allow_arch_mismatch``): then the user's value wins and its provenance
    records the override. Encoder keys are compared only when both sides are the same variant.

    Args:
        checkpoint_config, user_config: ``ResolvedConfig`` (a bare ``Config`` counts as all-defaults).
        source: the checkpoint's path, for messages and provenance.

    Returns:
        A ``ResolvedConfig``.
    """
    from trmlab.config.diff import format_diff_table
    from trmlab.config.fields import get_value, schema_fields
    from trmlab.config.loader import ResolvedConfig

    ckpt, ckpt_prov = _config_and_provenance(checkpoint_config)
    user, user_prov = _config_and_provenance(user_config)
    same_variant = ckpt.arch.name == user.arch.name
    keys = [key for key, info in schema_fields().items() if info.arch and key not in NOT_RECONCILED
            and (same_variant or key not in VARIANT_ARCH_KEYS)]
    values, provenance, conflicts, overridden = {}, dict(user_prov), [], []
    for key in keys:
        mine, theirs = get_value(user, key), get_value(ckpt, key)
        user_set = not user_prov.get(key, "schema default").startswith("schema default")
        if mine == theirs or not user_set:
            values[key] = theirs
            provenance[key] = f"checkpoint {source}" + (f" ({ckpt_prov[key]})" if key in ckpt_prov else "")
        elif allow_mismatch:
            overridden.append(key)
            provenance[key] = (f"{user_prov.get(key)} — overrides checkpoint value {theirs!r} "
                               "(allow_arch_mismatch)")
        else:
            conflicts.append(key)
    differing = conflicts or overridden
    wanted = {k.removeprefix("arch."): get_value(user, k) for k in differing}
    reshaped = shape_changes(ckpt.arch, dataclasses.replace(ckpt.arch, **wanted)) if differing else []
    if reshaped:
        # No opt-in can load weights into tensors of another shape: say so instead of crashing later.
        settings = ", ".join(f"{k}={get_value(user, k)!r} (checkpoint: {get_value(ckpt, k)!r})"
                             for k in differing)
        more = "; …" if len(reshaped) > 3 else ""
        raise CheckpointError(
            f"{source}: your config sets {settings}, which changes tensor shapes ({'; '.join(reshaped[:3])}"
            f"{more}), so these weights cannot be loaded into that model; remove the setting(s) to use the "
            "checkpoint's architecture (allow_arch_mismatch only covers values that keep every shape)")
    if conflicts:
        # Only the conflicting values differ between the two columns, so the table shows just the problem.
        yours = dataclasses.replace(ckpt, arch=dataclasses.replace(ckpt.arch, **wanted))
        table = format_diff_table([(f"checkpoint {source}", ckpt), ("your config", yours)])
        raise CheckpointError(
            f"{source} was trained with a different architecture than your config sets "
            f"({', '.join(conflicts)}). These values change what the weights compute without changing any "
            f"tensor shape, so the checkpoint's own values must be used.\n{table}\nRemove the conflicting "
            "setting(s), or set allow_arch_mismatch=true to run with yours (recorded in provenance).")
    arch = dataclasses.replace(user.arch, **{k.removeprefix("arch."): v for k, v in values.items()})
    return ResolvedConfig(dataclasses.replace(user, arch=arch), provenance)


def shape_changes(arch: Any, other: Any) -> list[str]:
    """How the tensors of the model ``other`` describes differ from ``arch``'s (``"key [a] → [b]"``, and
    tensors only one has); empty when every shape agrees. Both are built on the meta device (no memory)."""
    from trmlab.models import build_model

    def shapes(config: Any) -> dict[str, list[int]]:
        with torch.device("meta"):
            model = build_model(config, seq_len=16, vocab_size=12, num_puzzle_identifiers=2)
        return {key: list(value.shape) for key, value in model.state_dict().items()}

    try:
        before, after = shapes(arch), shapes(other)
    except TrmlabError as error:
        return [f"the resulting architecture cannot be built: {error}"]
    changes = [f"{key} {before[key]} → {after[key]}" for key in before.keys() & after.keys()
               if before[key] != after[key]]
    changes += [f"{key} only in the checkpoint" for key in before.keys() - after.keys()]
    changes += [f"{key} not in the checkpoint" for key in after.keys() - before.keys()]
    return sorted(changes)


def _config_and_provenance(config: Any) -> tuple[Any, dict[str, str]]:
    if hasattr(config, "provenance"):
        return config.config, dict(config.provenance)
    resolved = _as_resolved(config)
    return resolved.config, resolved.provenance


def check_puzzle_table(table: torch.Tensor, num_identifiers: int, mode: str = "error",
                       source: str = "checkpoint") -> torch.Tensor:
    """The puzzle table to use with a dataset of ``num_identifiers`` identifiers.

    Same row count: returned unchanged. Otherwise ``mode`` (config ``puzzle_emb_reinit``) decides: "error"
    raises CheckpointError (the official code silently substitutes the mean row, which destroys accuracy);
    "mean" / "zeros" return a new [num_identifiers, ndim] table with a warning; "extend" (the dataset appends
    new identifiers after the checkpoint's, as ``trmlab adapt`` builds it) keeps every row and appends the
    new ones, each set to the mean of the checkpoint's rows.
    """
    rows = int(table.shape[0])
    if rows == num_identifiers:
        return table
    if mode == "extend":
        if num_identifiers < rows:
            raise CheckpointError(f"{source}: puzzle_emb_reinit=extend appends rows, but the dataset has "
                                  f"{num_identifiers} puzzle identifiers, fewer than the table's {rows} rows")
        fresh = table.mean(0, keepdim=True).expand(num_identifiers - rows, -1)
        return torch.cat([table, fresh.to(table.dtype)], dim=0)
    if mode == "error":
        raise CheckpointError(
            f"{source}: the puzzle-embedding table has {rows} rows but the dataset has {num_identifiers} "
            "puzzle identifiers, so identifiers would address the wrong rows. Use the dataset this "
            "checkpoint was trained on (rebuilt with the same builder and inputs), or set "
            "puzzle_emb_reinit=mean|zeros to re-initialise the table (what it learned is lost).")
    if mode not in ("mean", "zeros"):
        raise ConfigError(f"puzzle_emb_reinit={mode!r}: expected error, mean, zeros or extend")
    warnings.warn(f"{source}: puzzle table re-initialised ({mode}) from {rows} to {num_identifiers} rows "
                  "(puzzle_emb_reinit); the learned per-puzzle embeddings are discarded", stacklevel=2)
    if mode == "zeros":
        return torch.zeros(num_identifiers, table.shape[1], dtype=table.dtype, device=table.device)
    return table.mean(0, keepdim=True).expand(num_identifiers, -1).clone()


def fit_puzzle_table(model: nn.Module, num_identifiers: int, mode: str = "error",
                     source: str = "checkpoint") -> nn.Module:
    """Apply :func:`check_puzzle_table` to ``model.puzzle_embedding`` in place (no-op without a table).

    Call it whenever a loaded model meets a dataset (evaluation, ``init_from``), with the dataset's
    ``num_puzzle_identifiers`` and the config's ``puzzle_emb_reinit``; a re-initialisation is recorded in
    ``model.provenance["puzzle_embedding"]``.
    """
    table_module = getattr(model, "puzzle_embedding", None)
    if table_module is None:
        return model
    table = table_module.weights
    new = check_puzzle_table(table, num_identifiers, mode, source)
    if new is not table:
        table_module.weights = new
        model.num_puzzle_identifiers = num_identifiers
        provenance = getattr(model, "provenance", None)
        if provenance is None:
            provenance = model.provenance = {}
        provenance["puzzle_embedding"] = (f"re-initialised ({mode}) from {table.shape[0]} to "
                                          f"{num_identifiers} rows (puzzle_emb_reinit), checkpoint {source}")
    return model


# ----------------------------------------------------------------------------------------------- reading


def read_official_state(path: str | Path) -> dict[str, torch.Tensor]:
    """An official ``step_N`` file as {canonical key: tensor}, loaded weights-only (memory-mapped)."""
    from trmlab.interop.safe_load import safe_torch_load

    return strip_official(checked_state_dict(safe_torch_load(path, mmap=True), path), str(path))


def read_step_file(path: str | Path, config: Any = None) -> tuple[dict[str, torch.Tensor], Any]:
    """An official TRM or research ETRM/ETRMTRM ``step_N`` file: ({canonical key: tensor}, ResolvedConfig).

    The research layout is recognised by its keys (``<prefix>encoder.*``) and its config's model class
    (``recursive_reasoning.etrm@TRMWithEncoder``, ``…etrmtrm@TRMWithRecurrentEncoder``); its keys are mapped
    with :mod:`trmlab.interop.research_keys` and the model is built with ``arch.encoder_numerics=research``.
    """
    from trmlab.interop.research_keys import family_of, is_research_state, strip_research
    from trmlab.interop.safe_load import safe_torch_load

    raw = checked_state_dict(safe_torch_load(path, mmap=True), path)
    if not is_research_state(list(raw)):
        return strip_official(raw, str(path)), official_config(path, config)
    resolved = research_config(path, config)
    return strip_research(raw, family_of(resolved.config.arch), str(path)), resolved


def research_config(path: str | Path, config: Any = None) -> Any:
    """The ResolvedConfig of a research ``step_N`` (:func:`official_config` with ``config``): it must name
    the checkpoint's own encoder model (a user config that leaves arch.name unset takes it), and it gets
    arch.encoder_numerics = research."""
    sibling = Path(path).parent / "all_config.yaml"
    if config is not None and sibling.is_file():
        from trmlab.config.official import read_official_all_config

        own = read_official_all_config(sibling)[0].config.arch.name
        user = config if hasattr(config, "provenance") else _as_resolved(config)
        if (user.config.arch.name != own and own != "trm"
                and user.provenance.get("arch.name", "schema default").startswith("schema default")):
            arch = dataclasses.replace(user.config.arch, name=own)
            provenance = {**user.provenance, "arch.name": f"research checkpoint {path}"}
            config = type(user)(dataclasses.replace(user.config, arch=arch), provenance)
    resolved = official_config(path, config)
    name = resolved.config.arch.name
    if sibling.is_file():
        from trmlab.config.official import read_official_all_config

        own = read_official_all_config(sibling)[0].config.arch.name
        if own == "trm":
            raise CheckpointError(f"{path} holds a demonstration encoder (keys *encoder.*) but its "
                                  "all_config.yaml names a TRM: give the research run's all_config.yaml "
                                  "(arch.name recursive_reasoning.etrm@TRMWithEncoder or "
                                  "…etrmtrm@TRMWithRecurrentEncoder)")
        if name != own:
            raise CheckpointError(f"{path} is a research {own} checkpoint; it cannot be used as arch.name="
                                  f"{name} (set arch.name={own})")
    elif name == "trm":
        raise CheckpointError(f"{path} holds a demonstration encoder (keys *encoder.*), but the config "
                              "names a TRM: name the research model (arch.name=etrm or etrmtrm, and its "
                              "encoder keys)")
    return _research_numerics(resolved, path)


def _research_numerics(resolved: Any, path: str | Path) -> Any:
    """``resolved`` with arch.encoder_numerics = research (a research checkpoint computes nothing else)."""
    arch = resolved.config.arch
    if arch.encoder_numerics == "research":
        return resolved
    if not resolved.provenance.get("arch.encoder_numerics", "schema default").startswith("schema default"):
        raise CheckpointError(f"{path} is a research-code checkpoint, but arch.encoder_numerics="
                              f"{arch.encoder_numerics!r} was asked for; its weights only compute the "
                              "research model (remove the setting)")
    config = dataclasses.replace(resolved.config,
                                 arch=dataclasses.replace(arch, encoder_numerics="research"))
    provenance = {**resolved.provenance, "arch.encoder_numerics": f"research checkpoint {path} (its keys)"}
    return type(resolved)(config, provenance)


def checked_state_dict(state: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """``state`` if it is a {str: Tensor} mapping, else CheckpointError naming ``path``."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path} is not a state dict of tensors (found {type(state).__name__})")
    return state


def official_config(path: str | Path, config: Any = None) -> Any:
    """The ResolvedConfig of an official checkpoint: its sibling all_config.yaml, reconciled with ``config``.

    Without all_config.yaml the architecture must come from ``config`` (a preset or explicit overrides):
    shapes cannot tell H_cycles, L_cycles, num_heads, halt_max_steps ... and no default is substituted.
    """
    from trmlab.config.official import read_official_all_config

    sibling = Path(path).parent / "all_config.yaml"
    if sibling.is_file():
        resolved, _unknown = read_official_all_config(sibling)
        if config is None:
            return resolved
        user = config if hasattr(config, "provenance") else _as_resolved(config)
        return reconcile_architecture(resolved, user, user.config.allow_arch_mismatch, str(path))
    if config is None:
        raise CheckpointError(
            f"{path} has no all_config.yaml beside it, and the architecture cannot be read from the "
            "weights (H_cycles, L_cycles, num_heads, halt_max_steps, ... change no tensor shape). Name it "
            "explicitly: e.g. `preset=trm-arc1` (plus `arch.L_cycles=...`) on the command line, or "
            "load_checkpoint(path, config=load_config('trm-arc1')).")
    return config if hasattr(config, "provenance") else _as_resolved(config)


def _as_resolved(config: Any) -> Any:
    from trmlab.config.fields import schema_fields
    from trmlab.config.loader import ResolvedConfig
    from trmlab.config.schema import ArchConfig, Config

    if isinstance(config, ArchConfig):
        config = Config(arch=config)
    # A config object handed over in code counts as deliberate in every key (nothing is a silent default).
    return ResolvedConfig(config, dict.fromkeys(schema_fields(), "given by the caller"))


def infer_dims(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What the tensor shapes say: vocab_size, hidden_size, num_puzzle_identifiers, puzzle_emb_ndim,
    L_layers, mlp_t, learned positions."""
    if "core.token_embedding.weight" not in state:
        raise CheckpointError("checkpoint has no token embedding (embed_tokens.embedding_weight)")
    vocab, hidden = state["core.token_embedding.weight"].shape
    table = state.get(TABLE_KEY)
    layers = {int(m.group(1)) for k in state if (m := re.match(r"core\.blocks\.(\d+)\.", k))}
    return {"vocab_size": int(vocab), "hidden_size": int(hidden),
            "num_puzzle_identifiers": int(table.shape[0]) if table is not None else 0,
            "puzzle_emb_ndim": int(table.shape[1]) if table is not None else 0,
            "L_layers": len(layers), "mlp_t": any(".token_mixer." in k for k in state),
            "learned_positions": "core.position_embedding.weight" in state}


def seq_len_from_shapes(state: dict[str, torch.Tensor], prefix_len: int) -> int | None:
    """seq_len when a tensor's shape fixes it (learned positions, mlp_t), else None."""
    if "core.position_embedding.weight" in state:
        return int(state["core.position_embedding.weight"].shape[0]) - prefix_len
    if "core.blocks.0.token_mixer.down.weight" in state:
        return int(state["core.blocks.0.token_mixer.down.weight"].shape[0]) - prefix_len
    return None


def seq_len_from_datasets(config: Any) -> int | None:
    """seq_len of the first dataset of ``config.data_paths`` / ``data_paths_test`` found on disk."""
    for root in [*config.data_paths_test, *config.data_paths]:
        for split in ("test", "train"):
            meta = Path(root) / split / "dataset.json"
            if meta.is_file():
                try:
                    return int(json.loads(meta.read_text())["seq_len"])
                except (ValueError, KeyError, TypeError):
                    continue
    return None


def resolve_seq_len(seq_len: int | None, state: dict[str, torch.Tensor], config: Any, prefix_len: int,
                    source: str) -> int:
    """seq_len from the argument, else the shapes, else the config's datasets; conflicts are errors."""
    from_shapes = seq_len_from_shapes(state, prefix_len)
    if seq_len is not None and from_shapes is not None and seq_len != from_shapes:
        raise CheckpointError(f"{source}: seq_len={seq_len} was requested but the weights fix it at "
                              f"{from_shapes} (learned positions / mlp_t)")
    value = seq_len or from_shapes or seq_len_from_datasets(config)
    if value is None:
        raise CheckpointError(f"{source}: seq_len is not stored in the checkpoint and no dataset of the "
                              "config is on disk; pass seq_len (900 for ARC: "
                              "load_checkpoint(path, seq_len=900), seq_len=900 on the command line)")
    return int(value)


# ----------------------------------------------------------------------------------------------- building


def shape_problems(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Every missing/unexpected key and shape mismatch between ``model`` and a canonical ``state``."""
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        problems.append("missing tensors: " + ", ".join(_both_names(k) for k in missing))
    if unexpected:
        problems.append("unexpected tensors: " + ", ".join(_both_names(k) for k in unexpected))
    for key, tensor in state.items():
        if key in expected and tuple(tensor.shape) != tuple(expected[key].shape):
            problems.append(f"{_both_names(key)}: checkpoint shape {list(tensor.shape)}, the config gives "
                            f"{list(expected[key].shape)}")
    return problems


def _both_names(key: str) -> str:
    official = canonical_to_official(key)
    return f"{key} (official {official})" if official else key


def _research_names(problems: list[str], arch: Any) -> list[str]:
    """``problems`` with a line naming the research keys of the trmlab keys they mention."""
    from trmlab.interop.research_keys import canonical_to_research, family_of

    family = family_of(arch)
    names = sorted({f"{key} = research {research}" for line in problems
                    for key in re.findall(r"encoder\.[\w.]+", line)
                    if (research := canonical_to_research(key, family))})
    return problems + ([f"research names: {'; '.join(names)}"] if names else [])


def instantiate(config: Any, state: dict[str, torch.Tensor], *, seq_len: int, source: str) -> nn.Module:
    """Build the model of ``config`` on the meta device and adopt ``state``'s tensors (no double memory)."""
    from trmlab.models import build_model

    dims = infer_dims(state)
    with torch.device("meta"):
        model = build_model(config.config, seq_len=seq_len, vocab_size=dims["vocab_size"],
                            num_puzzle_identifiers=max(dims["num_puzzle_identifiers"], 1))
    problems = shape_problems(model, state)
    if problems and config.config.arch.encoder_numerics == "research" and config.config.arch.name != "trm":
        problems = _research_names(problems, config.config.arch)
    if problems:
        raise CheckpointError(f"{source} does not match its architecture:\n  - " + "\n  - ".join(problems))
    params = {name for name, _ in model.named_parameters()}
    # Parameters are fp32 masters (bf16 → fp32 is exact); buffers keep their stored dtype (H_init/L_init).
    adopted = {k: (v.float() if k in params and v.dtype != torch.float32 else v) for k, v in state.items()}
    model.load_state_dict(adopted, strict=True, assign=True)
    model.config = config
    model.provenance = {}
    return model


def _parse_dtype(dtype: Any) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype in DTYPE_NAMES:
        return DTYPE_NAMES[dtype]
    raise ConfigError(f"dtype={dtype!r}: expected torch.float32, torch.bfloat16, 'float32' or 'bfloat16'")


def _finish(model: nn.Module, *, device: Any, dtype: Any, source: str) -> nn.Module:
    forced = _parse_dtype(dtype)
    if forced is not None:
        stored = model.config.config.arch.forward_dtype
        model.core.forward_dtype_override = forced
        name = str(forced).removeprefix("torch.")
        model.provenance["arch.forward_dtype"] = (f"load_checkpoint(dtype={name}) — deliberate override "
                                                  f"of {stored!r} from {source}")
    if device is not None:
        model.to(device)
    on_cpu = model.core.lm_head.weight.device.type == "cpu"
    if forced is None and on_cpu and model.core.forward_dtype == torch.bfloat16:
        warnings.warn(f"{source} runs in bfloat16 (its forward_dtype) on CPU, where bf16 matmuls are 7-100x "
                      "slower than fp32; pass dtype=torch.float32 (--dtype float32) for speed", stacklevel=3)
    return model.eval()


def load_checkpoint(path: str | Path, *, seq_len: int | None = None, device: Any = None, dtype: Any = None,
                    config: Any = None, use_ema: bool = True) -> nn.Module:
    """Load an official ``step_N`` file or a trmlab checkpoint directory as a model in eval mode.

    Args:
        path: an official file (architecture from the sibling ``all_config.yaml``, or ``config``) or a trmlab
            ``step_N/`` directory (checksums verified); either may be ``hf://ORG/REPO[@REVISION]/PATH``.
        seq_len: grid tokens (official files do not store it; 900 for ARC). Default: the weights' shapes, the
            trmlab manifest, or the config's dataset on disk; otherwise an error.
        device: where to put the model (default: CPU).
        dtype: forward dtype override (``torch.float32``/``torch.bfloat16`` or their names), recorded in
            ``model.provenance``.
        config: a ``ResolvedConfig`` / ``Config`` the user asked for; its architecture must agree with the
            checkpoint's (see :func:`reconcile_architecture`), or name it when the checkpoint has none.
        use_ema: trmlab bundles: evaluate ``ema.safetensors`` when present (default), else the raw weights.

    Returns:
        The model (``model.config`` = the ResolvedConfig it was built from, ``model.provenance`` = overrides).
    """
    from trmlab.checkpoints.bundle import is_trmlab_checkpoint
    from trmlab.interop.hub import describe_origin, resolve_path

    path = Path(resolve_path(path))  # an hf:// path: fetched through the Hugging Face cache
    if path.is_dir():
        if not is_trmlab_checkpoint(path):
            raise CheckpointError(f"{path} is a directory without manifest.json: not a (complete) trmlab "
                                  "checkpoint. Give an official step_N file or a trmlab step_N/ directory.")
        model = load_trmlab_checkpoint(path, seq_len=seq_len, device=device, dtype=dtype, config=config,
                                       use_ema=use_ema)
    else:
        state, resolved = read_step_file(path, config)
        prefix_len = _prefix_len(resolved)
        length = resolve_seq_len(seq_len, state, resolved.config, prefix_len, str(path))
        model = instantiate(resolved, state, seq_len=length, source=str(path))
        model = _finish(model, device=device, dtype=dtype, source=str(path))
    if (origin := describe_origin(path)) is not None:
        model.provenance["hub"] = origin  # repository and commit the weights came from
    return model


def _prefix_len(resolved: Any) -> int:
    from trmlab.models.core import prefix_length

    return prefix_length(resolved.config.arch)


def load_trmlab_checkpoint(path: str | Path, *, seq_len: int | None = None, device: Any = None,
                           dtype: Any = None, config: Any = None, use_ema: bool = True) -> nn.Module:
    """Load a trmlab checkpoint directory (see :func:`load_checkpoint`)."""
    from trmlab.checkpoints.bundle import EMA_FILE, MODEL_FILE, TABLE_FILE, read_checkpoint

    bundle = read_checkpoint(path, verify=True)
    stored = bundle.config()
    resolved = stored if config is None else reconcile_architecture(
        stored, config if hasattr(config, "provenance") else _as_resolved(config),
        _user_allows(config), str(path))
    weights = EMA_FILE if use_ema and bundle.has(EMA_FILE) else MODEL_FILE
    state = dict(bundle.tensors(weights))
    if bundle.has(TABLE_FILE):
        state[TABLE_KEY] = bundle.tensors(TABLE_FILE)["weights"]
    stored_len = (bundle.manifest.get("model") or {}).get("seq_len")
    if seq_len is not None and stored_len is not None and seq_len != stored_len:
        raise CheckpointError(f"{path}: seq_len={seq_len} requested but the checkpoint was trained with "
                              f"seq_len={stored_len}")
    length = resolve_seq_len(seq_len or stored_len, state, resolved.config, _prefix_len(resolved), str(path))
    model = instantiate(resolved, state, seq_len=length, source=f"{path}/{weights}")
    model.provenance["weights"] = f"{path}/{weights}"
    return _finish(model, device=device, dtype=dtype, source=str(path))


def _user_allows(config: Any) -> bool:
    inner = getattr(config, "config", config)
    return bool(getattr(inner, "allow_arch_mismatch", False))
