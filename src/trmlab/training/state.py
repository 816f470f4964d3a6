"""Resumable training state as checkpoint parts (design.md "Checkpoints").

:func:`checkpoint_parts` turns the live training objects into the files of ``step_<N>/``;
:func:`restore_training_state` puts them back. Everything in ``train_state.pt`` is plain tensors, numbers,
strings, lists and dicts so ``torch.load(..., weights_only=True)`` reads it: the numpy RNG state and the carry
(whatever nested dataclass/dict the model uses) are flattened to those.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

TABLE_PREFIX = "puzzle_embedding."
STATE_FORMAT = 1


# ---------------------------------------------------------------------------------------------- weights


def raw_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and persistent buffer except the puzzle table, with the model's (canonical) keys."""
    state = model.state_dict()
    return {k: v.detach().contiguous() for k, v in state.items() if not k.startswith(TABLE_PREFIX)}


def ema_weights(model: torch.nn.Module, shadow: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``raw_weights`` with the averaged parameters in place of the live ones (in the parameter dtype)."""
    weights = raw_weights(model)
    for name, value in shadow.items():
        weights[name] = value.to(weights[name].dtype).contiguous()
    return weights


# ---------------------------------------------------------------------------------------------- RNG


def capture_rng(exploration: torch.Generator | None) -> dict[str, Any]:
    """Python, numpy (global), torch CPU and CUDA RNG states and the exploration generator's state."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [np_name, torch.from_numpy(np.asarray(np_keys, dtype=np.int64)), int(np_pos),
                  int(np_has_gauss), float(np_gauss)],
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if exploration is not None:
        state["exploration"] = exploration.get_state()
    return state


def restore_rng(state: dict[str, Any], exploration: torch.Generator | None) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch_cpu"])
    if state["torch_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])
    if exploration is not None and "exploration" in state:
        exploration.set_state(state["exploration"])


# ---------------------------------------------------------------------------------------------- carry


def flatten_carry(carry: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": tensor-or-scalar}`` for a nested dataclass / dict / tuple / list carry (on CPU)."""
    if carry is None:
        return {}
    if isinstance(carry, torch.Tensor):
        return {prefix: carry.detach().cpu().clone()}
    if dataclasses.is_dataclass(carry):
        items = [(f.name, getattr(carry, f.name)) for f in dataclasses.fields(carry)]
    elif isinstance(carry, dict):
        items = list(carry.items())
    elif isinstance(carry, list | tuple):
        items = [(str(i), v) for i, v in enumerate(carry)]
    else:
        return {prefix: carry}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten_carry(value, f"{prefix}.{key}" if prefix else str(key)))
    if not items:
        flat[prefix + "._empty"] = type(carry).__name__
    return flat


def unflatten_into(template: Any, flat: dict[str, Any], device: torch.device) -> Any:
    """Rebuild a carry shaped like ``template`` (a fresh ``model.initial_carry``) from :func:`flatten_carry`.

    Leaves are replaced by the saved values (moved to ``device``); dict entries the template lacks (e.g. the
    ``current_data`` of the initial carry, empty until the first step) are added from the saved keys.
    """
    def build(node: Any, prefix: str) -> Any:
        if isinstance(node, torch.Tensor) or not _is_container(node):
            value = flat.get(prefix, node)
            return value.to(device) if isinstance(value, torch.Tensor) else value
        if dataclasses.is_dataclass(node):
            names = [f.name for f in dataclasses.fields(node)]
            values = {name: build(getattr(node, name), _join(prefix, name)) for name in names}
            return dataclasses.replace(node, **values)
        if isinstance(node, dict):
            keys = list(node) + [k for k in _children(flat, prefix) if k not in node]
            return {k: build(node.get(k), _join(prefix, k)) for k in keys}
        return type(node)(build(v, _join(prefix, str(i))) for i, v in enumerate(node))

    return build(template, "")


def _is_container(node: Any) -> bool:
    return dataclasses.is_dataclass(node) or isinstance(node, dict | list | tuple)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _children(flat: dict[str, Any], prefix: str) -> list[str]:
    """Direct child names under ``prefix`` among the flat keys (leaves only: nested dicts are not rebuilt)."""
    start = f"{prefix}." if prefix else ""
    names = []
    for key in flat:
        if key.startswith(start):
            rest = key[len(start):]
            if "." not in rest and rest != "_empty" and rest not in names:
                names.append(rest)
    return names


# ---------------------------------------------------------------------------------------------- save / resume


def _rank_state(trainer: Any) -> dict[str, Any]:
    return {"carry": flatten_carry(trainer.carry), "rng": capture_rng(trainer.exploration)}


def save_training_checkpoint(trainer: Any) -> Path:
    """Write ``checkpoints/step_<N>/`` for the trainer's current state; every rank must call it."""
    from trmlab.checkpoints import save_model_checkpoint
    from trmlab.training.distributed import barrier, gather_objects

    ranks = gather_objects(_rank_state(trainer), trainer.ctx)
    path = trainer.run_dir.checkpoint_path(trainer.step)
    if trainer.ctx.is_main:
        ema = trainer.ema
        state = {
            "format": STATE_FORMAT,
            "step": trainer.step,
            "total_steps": trainer.total_steps,
            "world_size": trainer.ctx.world_size,
            "sampler": trainer.sampler.state_dict(),
            "adam": trainer.adam.state_dict(),
            "sparse": trainer.sparse.state_dict() if trainer.sparse is not None else None,
            "ema": {"rate": ema.rate, "num_updates": ema.num_updates} if ema is not None else None,
            "ranks": ranks,
        }
        ema_state = ema_weights(trainer.model, ema.shadow) if ema is not None else None
        if ema_state is not None:
            ema_state = {name: ema_state[name] for name in ema.names}
        # overwrite: a step directory can only pre-exist here when an earlier process died after writing it
        # and resume fell back past it (it was set aside as corrupt) — never a good checkpoint of this run.
        save_model_checkpoint(path, trainer.model, config=trainer.resolved, step=trainer.step,
                              ema_state=ema_state, train_state=state,
                              dataset_fingerprint=trainer.dataset.fingerprint(), overwrite=True,
                              extra={"arch": trainer.config.arch.name, "total_steps": trainer.total_steps})
        trainer.run_dir.prune(trainer.config.keep_last)
    barrier(trainer.ctx)
    return path


def newest_valid_checkpoint(run_dir: Any, say: Any = print) -> Any:
    """The newest checkpoint of ``run_dir`` whose checksums verify, reporting (and setting aside) bad ones."""
    from trmlab.errors import CheckpointError

    def set_aside(path: Path, error: Exception) -> None:
        aside = path.with_name(f"{path.name}.corrupt")
        say(f"trmlab train: checkpoint {path} is unusable ({error}); moved it to {aside.name} and "
            f"falling back to the previous checkpoint")
        if aside.exists():
            import shutil

            shutil.rmtree(aside)
        path.rename(aside)

    found = len(run_dir.checkpoint_steps())  # counted before any is set aside
    bundle = _newest_readable(run_dir, set_aside)
    if bundle is None:
        raise CheckpointError(f"{run_dir.checkpoints_path}: no complete checkpoint to resume from "
                              f"({found} found, none valid); start a new run instead")
    return bundle


def _newest_readable(run_dir: Any, on_unusable: Any) -> Any:
    """The newest checkpoint of ``run_dir`` that verifies and whose training state reads (None if none);
    ``on_unusable(path, error)`` is called for each newer one that does not."""
    from trmlab.checkpoints import read_checkpoint
    from trmlab.errors import CheckpointError

    for step in run_dir.checkpoint_steps():
        path = run_dir.checkpoint_path(step)
        try:
            bundle = read_checkpoint(path, verify=True)
            bundle.train_state()  # a readable state is part of "valid"
            return bundle
        except CheckpointError as error:
            on_unusable(path, error)
    return None


def load_latest_checkpoint(trainer: Any) -> Path:
    """Restore the trainer from the newest valid checkpoint of its run directory (every rank)."""
    bundle = newest_valid_checkpoint(trainer.run_dir, trainer._say)
    path = bundle.path
    state = checked_resume_state(bundle, trainer)
    trainer.adam.load_state_dict(state["adam"])
    trainer.step = int(state["step"])
    trainer.sampler.load_state_dict(state["sampler"])
    own = state["ranks"][trainer.ctx.rank]
    restore_rng(own["rng"], trainer.exploration)
    trainer._saved_carry = own["carry"] or None
    trainer._say(f"trmlab train: resuming {trainer.run_dir.path} from {path.name} (step {trainer.step:,} of "
                 f"{trainer.total_steps:,})")
    return path


def check_resumable(trainer: Any) -> str:
    """What ``resume=`` would do, checked without changing the run directory (``train --dry-run``): the
    newest checkpoint that verifies must match the run (processes, data, step count) and load into the
    model. Returns a line describing it."""
    from trmlab.errors import CheckpointError

    steps = trainer.run_dir.checkpoint_steps()
    if not steps:
        return f"resume: {trainer.run_dir.path} has no checkpoint yet; the run would start over from step 0"
    skipped: list[str] = []
    bundle = _newest_readable(trainer.run_dir, lambda path, error: skipped.append(f"{path.name} ({error})"))
    if bundle is None:
        raise CheckpointError(f"{trainer.run_dir.checkpoints_path}: no complete checkpoint to resume from "
                              f"({len(steps)} found, none valid: {'; '.join(skipped)})")
    checked_resume_state(bundle, trainer)
    aside = f"; unusable, would be set aside: {', '.join(skipped)}" if skipped else ""
    return f"resume: from {bundle.path.name} of {trainer.run_dir.path}{aside}"


def checked_resume_state(bundle: Any, trainer: Any) -> dict[str, Any]:
    """The training state of ``bundle`` after checking it against the trainer; the weights (and EMA) are
    loaded into the trainer's model (strict: every tensor's key and shape)."""
    from trmlab.errors import CheckpointError

    path = bundle.path
    state = bundle.train_state()
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}/train_state.pt: not a trmlab training state of format {STATE_FORMAT}")
    if state["world_size"] != trainer.ctx.world_size:
        raise CheckpointError(f"{path}: written by {state['world_size']} process(es) but resumed with "
                              f"{trainer.ctx.world_size}; resume with the same number of processes (each "
                              f"holds its own ACT carry)")
    _check_same_dataset(bundle, trainer)
    if state["total_steps"] != trainer.total_steps:
        raise CheckpointError(f"{path}: the run had {state['total_steps']} optimizer steps but the config "
                              f"now gives {trainer.total_steps}; epochs, eval_interval, max_steps, data and "
                              f"batch size must not change on resume")
    weights = bundle.tensors("model.safetensors")
    if bundle.has("puzzle_embedding.safetensors"):
        weights[TABLE_PREFIX + "weights"] = bundle.tensors("puzzle_embedding.safetensors")["weights"]
    try:
        trainer.model.load_state_dict(weights, strict=True)
        if trainer.ema is not None:
            ema_file = bundle.tensors("ema.safetensors")
            trainer.ema.load_state_dict({"shadow": {n: ema_file[n] for n in trainer.ema.names},
                                         "num_updates": state["ema"]["num_updates"]})
    except (RuntimeError, KeyError) as error:  # a tensor missing, extra or of another shape
        first = " ".join(str(error).split())[:300]
        raise CheckpointError(f"{path}: its weights do not fit the run's model ({first}); see trmlab "
                              f"checkpoint inspect {path}") from None
    return state


def _check_same_dataset(bundle: Any, trainer: Any) -> None:
    """Refuse to resume on data other than the checkpoint's (e.g. ``data_paths=`` naming another dataset)."""
    from trmlab.errors import CheckpointError

    recorded = bundle.manifest.get("dataset_fingerprint")
    current = trainer.dataset.fingerprint()
    if recorded is not None and recorded != current:
        raise CheckpointError(
            f"{bundle.path}: trained on a dataset with fingerprint {recorded[:12]}, but data_paths="
            f"[{', '.join(trainer.config.data_paths)}] has fingerprint {current[:12]} (their "
            f"train/dataset.json or identifiers.json differ); resume with data_paths= naming its dataset")
