"""Helpers shared by the training tests: a tiny dataset written by hand and a tiny config."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trmlab.config.schema import ArchConfig, Config
from trmlab.data.format import array_path, dataset_json, write_json

SIDE = 3                 # 3×3 canvas: seq_len 9
SEQ_LEN = SIDE * SIDE


def write_tiny_dataset(root: Path, groups: int = 6, puzzles_per_group: int = 2, examples: int = 3,
                       seed: int = 0, seq_len: int = SEQ_LEN, num_ids: int | None = None) -> Path:
    """An official-layout dataset whose label is the input with colours shifted by one (learnable).

    Identifiers: blank, then one per puzzle of both splits, padded with unused names up to ``num_ids``.
    """
    rng = np.random.default_rng(seed)
    names = ["<blank>"]
    for split in ("train", "test"):
        inputs, labels, ids, puzzle_idx, group_idx = [], [], [], [0], [0]
        for g in range(groups):
            for p in range(puzzles_per_group):
                name = f"{split}{g}_{p}"
                names.append(name)
                for _ in range(examples):
                    grid = rng.integers(2, 11, size=seq_len).astype(np.uint8)
                    inputs.append(grid)
                    labels.append(np.where(grid == 10, 2, grid + 1).astype(np.uint8))
                ids.append(len(names) - 1)
                puzzle_idx.append(len(inputs))
            group_idx.append(len(ids))
        split_dir = root / split
        split_dir.mkdir(parents=True, exist_ok=True)
        arrays = {"inputs": np.stack(inputs), "labels": np.stack(labels),
                  "puzzle_identifiers": np.asarray(ids, np.int32),
                  "puzzle_indices": np.asarray(puzzle_idx, np.int32),
                  "group_indices": np.asarray(group_idx, np.int32)}
        for key, value in arrays.items():
            np.save(array_path(split_dir, key), value)
        meta_ids = num_ids or groups * puzzles_per_group * 2 + 1
        write_json(split_dir / "dataset.json", dataset_json(
            seq_len=seq_len, num_puzzle_identifiers=meta_ids, total_groups=groups,
            total_puzzles=groups * puzzles_per_group, total_examples=len(inputs)))
    names += [f"unused{i}" for i in range(len(names), num_ids or len(names))]
    (root / "identifiers.json").write_text(json.dumps(names))
    return root


def tiny_config(data: Path, run_dir: Path, **overrides) -> Config:
    """A CPU-sized TRM run on the tiny dataset (fp32, few cycles)."""
    arch = ArchConfig(H_cycles=1, L_cycles=1, L_layers=1, hidden_size=16, num_heads=2, expansion=2.0,
                      puzzle_emb_ndim=16, puzzle_emb_len=1, halt_max_steps=3, forward_dtype="float32")
    values = dict(arch=arch, data_paths=[str(data)], global_batch_size=4, epochs=4, lr=1e-3,
                  lr_warmup_steps=2,
                  eval_interval=None, checkpoint_every=2, keep_last=2, log_every=2, run_dir=str(run_dir),
                  device="cpu", seed=3)
    for key, value in overrides.items():
        if key.startswith("arch."):
            setattr(arch, key[5:], value)
        else:
            values[key] = value
    return Config(**values)


@dataclass
class Resolved:
    """Stand-in for trmlab.config.ResolvedConfig (config + provenance)."""

    config: Config
    provenance: dict[str, str] = field(default_factory=dict)


def record_optimizer_inputs(trainer) -> dict[str, list[list]]:
    """Wrap ``trainer.adam.step``: record the gradients it receives and the weights after it, step by step."""
    seen: dict[str, list[list]] = {"grads": [], "weights": []}
    step = trainer.adam.step
    params = [p for g in trainer.groups for p in g.params]

    def recording_step(*args, **kwargs):
        seen["grads"].append([p.grad.detach().clone() for p in params])
        out = step(*args, **kwargs)
        seen["weights"].append([p.detach().clone() for p in params])
        return out

    trainer.adam.step = recording_step
    return seen
