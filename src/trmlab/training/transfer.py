"""``init_from=CHECKPOINT``: start a new run from a trmlab or official checkpoint (transfer).

Two phases around ``build_model``: :func:`reconcile_init_config` makes the run's architecture the
checkpoint's (``trmlab.interop.reconcile_architecture``: unset keys follow the checkpoint, conflicting ones
are refused unless ``allow_arch_mismatch``); :func:`load_init_weights` then copies the weights (EMA when the
bundle has them) and checks the puzzle table against the dataset (row count and, for trmlab bundles, the
dataset fingerprint).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from trmlab.errors import CheckpointError

TABLE_KEY = "puzzle_embedding.weights"


def _is_bundle(path: Path) -> bool:
    from trmlab.checkpoints import is_trmlab_checkpoint

    return path.is_dir() and is_trmlab_checkpoint(path)


def reconcile_init_config(resolved: Any, path: str | Path, *, fetched: Path | None = None) -> tuple[Any, str]:
    """(the run's ResolvedConfig with the checkpoint's architecture, the checkpoint's variant name).

    ``fetched``: the local copy of an ``hf://`` ``path`` that the caller already resolved (so the config and
    the weights come from one fetch, one commit); resolved here when omitted.
    """
    from trmlab.interop.hub import describe_origin, resolve_path
    from trmlab.interop.loading import official_config, reconcile_architecture

    asked, path = path, Path(fetched if fetched is not None else resolve_path(path))  # hf://: the cached copy
    if (origin := describe_origin(path)) is not None:  # the run's provenance names repository and commit
        resolved = type(resolved)(resolved.config, {**resolved.provenance, "init_from": (
            f"{resolved.provenance.get('init_from', 'given')} — {asked} fetched as {origin}")})
    if not path.exists():
        raise CheckpointError(f"init_from={path}: no such file or directory")
    if _is_bundle(path):
        from trmlab.checkpoints import read_checkpoint

        # Only config.yaml is needed here: load_init_weights verifies every file's checksum when it reads
        # the weights (before the first step), so the checkpoint is hashed once, not once per reader.
        stored = read_checkpoint(path, verify=False).config()
        reconciled = reconcile_architecture(stored, resolved, resolved.config.allow_arch_mismatch, str(path))
        return reconciled, stored.config.arch.name
    if path.is_dir():
        raise CheckpointError(f"init_from={path}: a directory without manifest.json; give a trmlab step_N/ "
                              f"directory or an official step_N file")
    from trmlab.interop.loading import checked_state_dict, research_config
    from trmlab.interop.research_keys import is_research_state
    from trmlab.interop.safe_load import safe_torch_load

    if is_research_state(list(checked_state_dict(safe_torch_load(path, mmap=True), path))):
        # A research ETRM/ETRMTRM: its own variant and numerics (the L_cycles guard: reconcile_architecture).
        reconciled = research_config(path, resolved)
        return reconciled, reconciled.config.arch.name
    return official_config(path, resolved), "trm"  # otherwise official checkpoints are TRMs


def _checkpoint_state(path: Path, arch: Any) -> tuple[dict[str, torch.Tensor], str | None, str]:
    """(canonical state dict incl. the table, dataset fingerprint or None, description of the weights)."""
    if _is_bundle(path):
        from trmlab.checkpoints import read_checkpoint

        bundle = read_checkpoint(path, verify=True)
        name = "ema.safetensors" if bundle.has("ema.safetensors") else "model.safetensors"
        state = dict(bundle.tensors(name))
        if bundle.has("puzzle_embedding.safetensors"):
            state[TABLE_KEY] = bundle.tensors("puzzle_embedding.safetensors")["weights"]
        return state, bundle.manifest.get("dataset_fingerprint"), f"{path}/{name}"
    from trmlab.interop.loading import checked_state_dict
    from trmlab.interop.official_keys import strip_official
    from trmlab.interop.research_keys import family_of, is_research_state, strip_research
    from trmlab.interop.safe_load import safe_torch_load

    raw = checked_state_dict(safe_torch_load(path, mmap=True), path)
    if is_research_state(list(raw)):  # the run's architecture was reconciled with the checkpoint's
        return dict(strip_research(raw, family_of(arch), str(path))), None, str(path)
    return dict(strip_official(raw, str(path))), None, str(path)


def load_init_weights(trainer: Any, path: str | Path) -> dict[str, Any]:
    """Copy the checkpoint's weights into ``trainer.model``; returns a report (also printed on rank 0)."""
    from trmlab.interop.hub import resolve_path

    path = Path(resolve_path(path))  # hf://: the cached copy (the trainer passes the one it fetched)
    model, config = trainer.model, trainer.config
    state, fingerprint, source = _checkpoint_state(path, config.arch)
    table = state.pop(TABLE_KEY, None)
    report: dict[str, Any] = {"init_from": source}
    same_data = fingerprint is not None and fingerprint == trainer.dataset.fingerprint()
    has_table = getattr(model, "puzzle_embedding", None) is not None
    if table is not None and has_table:
        table = _checked_table(table, trainer, path, fingerprint, same_data)
        model.puzzle_embedding.weights.copy_(table.to(model.puzzle_embedding.weights.dtype))
        report["puzzle_table"] = "loaded"
    else:
        report["puzzle_table"] = "not in checkpoint" if has_table else "dropped (model has no table)"
        if fingerprint is not None and not same_data:
            warnings.warn(f"init_from={path}: trained on another dataset (fingerprint differs); the puzzle "
                          f"table is not used, so this is only a reminder", stacklevel=2)
    own = model.state_dict()
    own_keys = {k for k in own if not k.startswith("puzzle_embedding.")}
    loaded = {k: v for k, v in state.items() if k in own_keys}
    bad_shapes = [f"{k} {list(v.shape)} vs {list(own[k].shape)}" for k, v in loaded.items()
                  if v.shape != own[k].shape]
    if bad_shapes:
        raise CheckpointError(f"init_from={path}: tensor shapes differ from the model: {bad_shapes[:3]}")
    unexpected = sorted(set(state) - own_keys)
    missing = sorted(own_keys - set(state))
    if (unexpected or missing) and trainer.init_variant == config.arch.name:
        raise CheckpointError(f"init_from={path}: same variant {config.arch.name!r} but keys differ "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    with torch.no_grad():
        for key, value in loaded.items():
            own[key].copy_(value.to(own[key].dtype))
    report.update(loaded=len(loaded), missing=missing, unexpected=unexpected)
    trainer._say(f"init_from: {len(loaded)} tensors from {source}; puzzle table {report['puzzle_table']}"
                 + (f"; {len(missing)} model tensors keep their fresh init ({', '.join(missing[:4])}"
                    f"{' ...' if len(missing) > 4 else ''})" if missing else "")
                 + (f"; {len(unexpected)} checkpoint tensors unused" if unexpected else ""))
    return report


def _checked_table(table: torch.Tensor, trainer: Any, path: Path, fingerprint: str | None,
                   same_data: bool) -> torch.Tensor:
    from trmlab.interop.loading import check_puzzle_table

    config = trainer.config
    rows = trainer.dataset.num_puzzle_identifiers
    if fingerprint is not None and not same_data and int(table.shape[0]) == rows:
        if config.puzzle_emb_reinit == "error":
            raise CheckpointError(
                f"init_from={path}: its puzzle table was trained on another dataset (fingerprint "
                f"{fingerprint[:12]} vs {trainer.dataset.fingerprint()[:12]} of {list(config.data_paths)}), "
                f"so identifiers would address the wrong rows. Use the same dataset, or set "
                f"puzzle_emb_reinit=mean|zeros to re-initialise the table")
        shape = (rows, table.shape[1])
        if config.puzzle_emb_reinit == "mean":
            return table.mean(0).expand(shape).clone()
        return torch.zeros(shape)
    if fingerprint is None and config.puzzle_emb_reinit != "extend":  # extend: the old rows are not looked up
        warnings.warn(f"init_from={path}: an official checkpoint records no dataset fingerprint; its puzzle "
                      f"table is only checked by row count, so build the dataset exactly as the official "
                      f"builder did", stacklevel=2)
    return check_puzzle_table(table, rows, config.puzzle_emb_reinit, str(path))
