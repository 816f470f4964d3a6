"""The generated research-code cases of ``tests/fixtures/etrm-research`` (see its README and generate.py).

A case stores no weights: its research ``step_0`` is rebuilt from the research key names and shapes it records
and the seed every tensor was drawn from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

GENERATED = Path(__file__).parent / "fixtures" / "etrm-research"
CASES = sorted(path.name for path in GENERATED.iterdir() if (path / "vectors.npz").is_file())
RESEARCH_PREFIX = "_orig_mod.model."  # the research trainer saves the compiled loss head


def case_vectors(folder: Path) -> dict[str, np.ndarray]:
    """Every array of the case's vectors.npz (grids stored as uint8 come back as int32)."""
    with np.load(folder / "vectors.npz") as data:
        return {key: data[key].astype(np.int32) if data[key].dtype == np.uint8 else data[key]
                for key in data.files}


def seeded_weights(shapes: dict[str, tuple[int, ...]], seed: int, gain: float) -> dict[str, torch.Tensor]:
    """The weights of a case (generate.py draws them with this function too): in sorted key order,
    randn × gain/√(last dimension) for tensors of two or more dimensions, randn for vectors."""
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for key in sorted(shapes):
        shape = shapes[key]
        scale = gain / shape[-1] ** 0.5 if len(shape) >= 2 else 1.0
        weights[key] = torch.randn(shape, generator=generator) * scale
    return weights


def build_checkpoint(case: str, folder: Path) -> Path:
    """Write the case's research ``step_0`` (research keys, the trainer's prefix) and a copy of its
    all_config.yaml into ``folder``; returns the step_0 path."""
    source = GENERATED / case
    vectors = case_vectors(source)
    shapes = {str(key): tuple(int(n) for n in str(shape).split(","))
              for key, shape in zip(vectors["research_keys"], vectors["research_shapes"], strict=True)}
    state = {RESEARCH_PREFIX + key: value
             for key, value in seeded_weights(shapes, int(vectors["weight_seed"]),
                                                               float(vectors["weight_gain"])).items()}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "all_config.yaml").write_bytes((source / "all_config.yaml").read_bytes())
    torch.save(state, folder / "step_0")
    return folder / "step_0"
