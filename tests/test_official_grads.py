"""trmlab's training gradients equal the official code's bit for bit (max |Δ| = 0 for every parameter).

The fixtures in tests/fixtures/official-grads/ hold the official model's gradients (its TRM ACT model inside
its ``ACTLossHead``), computed by ``generate.py`` there against the official code on the CPU in fp32: the
batch, the architecture, the weights' recipe (seed, and a SHA-256 of every weight), and per ACT step the loss,
the metrics and every parameter's gradient plus the puzzle-embedding gradient. Here trmlab's model and its
training loss (what ``trmlab train`` runs per step: ``model(carry, batch)``, the loop's loss,
``(loss / rows).backward()``) run on the same weights and batch, and every gradient must be identical.

Both sides run in a child process with the numerics pinned (``PINNED_ENV`` of generate.py: one thread, MKL's
portable code path, ATen's non-vectorised kernels), so the figures do not depend on the CPU's vector units.

Run: .venv/bin/python -m pytest -q tests/test_official_grads.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official-grads"
CASES = sorted(p.stem for p in FIXTURES.glob("*.npz"))
# Official config keys given to build_model rather than as arch.* settings; batch_size is the official
# puzzle table's row buffer (trmlab's table needs none).
MODEL_ARGS = ("seq_len", "vocab_size", "num_puzzle_identifiers")
NOT_TRMLAB_ARCH = ("batch_size",)
TABLE_GRADIENT = "puzzle_emb.local_weights"


def _generator_module() -> Any:
    spec = importlib.util.spec_from_file_location("official_grads_generate", FIXTURES / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_trmlab(arch: dict[str, Any]) -> Any:
    """trmlab's model for an official architecture dict (every key consumed)."""
    from trmlab.config.loader import load_config
    from trmlab.models import build_model

    overrides = [f"arch.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in sorted(arch.items())
                 if k not in MODEL_ARGS + NOT_TRMLAB_ARCH]
    resolved = load_config("tiny", overrides)
    return resolved.config, build_model(resolved, **{k: arch[k] for k in MODEL_ARGS})


def trmlab_arrays(fixture: Path) -> dict[str, np.ndarray]:
    """trmlab's weights' digests, and per ACT step its loss, halted flags, metrics and gradients (official
    key names), for the fixture's architecture, weight recipe and batch. Runs in the pinned child process."""
    import torch

    from trmlab.interop.official_keys import canonical_to_official
    from trmlab.training.loop import _default_loss

    torch.set_num_threads(1)
    generator = _generator_module()
    data = np.load(fixture)
    arch = json.loads(str(data["arch"]))
    config, model = build_trmlab(arch)
    weights = {canonical_to_official(k): v for k, v in model.state_dict(keep_vars=True).items()}
    generator.fill_weights(weights, int(data["weight_seed"]))
    out = {"weight_keys": np.array(sorted(weights)),
           "weight_sha256": np.array([generator.weight_digest(weights[k]) for k in sorted(weights)])}
    batch = {k: torch.from_numpy(data[k]) for k in ("inputs", "labels", "puzzle_identifiers")}
    loss_fn, rows = _default_loss(config), batch["inputs"].shape[0]
    model.train()
    carry = model.initial_carry(batch)
    for step in range(1, int(data["steps"]) + 1):
        carry, outputs = model(carry, batch)
        loss, metrics = loss_fn(outputs)
        (loss / rows).backward()
        out[f"s{step}_loss"] = loss.detach().numpy()
        out[f"s{step}_halted"] = carry.halted.numpy().copy()
        out.update({f"s{step}_metric_{k}": v.detach().numpy() for k, v in metrics.items()})
        named = {canonical_to_official(k): p for k, p in model.named_parameters()}
        named[TABLE_GRADIENT] = model.puzzle_embedding.local_weights
        for key, tensor in named.items():
            out[f"s{step}_grad_{key}"] = tensor.grad.detach().numpy().copy()
            tensor.grad = None
    return out


def _child(fixture: str, out: str) -> None:
    np.savez(out, **trmlab_arrays(Path(fixture)))


@pytest.fixture(scope="module")
def pinned_env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    path = os.pathsep.join([src, str(Path(__file__).resolve().parent)])
    return {**os.environ, **_generator_module().PINNED_ENV, "PYTHONPATH": path}


def run_trmlab(fixture: Path, tmp_path: Path, env: dict[str, str]) -> dict[str, np.ndarray]:
    out = tmp_path / "trmlab.npz"
    code = f"from test_official_grads import _child; _child({str(fixture)!r}, {str(out)!r})"
    process = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             timeout=300)
    assert process.returncode == 0, process.stderr
    return dict(np.load(out))


def test_the_fixtures_are_there():
    assert CASES == ["hidden256-seq100", "tiny", "tiny-mlp-t"]
    assert sum(p.stat().st_size for p in FIXTURES.glob("*.npz")) < 10e6


@pytest.mark.parametrize("case", CASES)
def test_gradients_equal_the_official_ones_bit_for_bit(case: str, tmp_path: Path, pinned_env):
    import torch

    official = dict(np.load(FIXTURES / f"{case}.npz"))
    if str(official["torch_version"]).split(".")[:2] != torch.__version__.split(".")[:2]:
        pytest.skip(f"fixture computed with torch {official['torch_version']}, this is {torch.__version__}: "
                    "kernels may differ; regenerate with generate.py")
    ours = run_trmlab(FIXTURES / f"{case}.npz", tmp_path, pinned_env)
    # The same weights: every official weight key rebuilt by the recipe with the same bytes.
    assert ours["weight_keys"].tolist() == official["weight_keys"].tolist()
    assert ours["weight_sha256"].tolist() == official["weight_sha256"].tolist()
    for step in range(1, int(official["steps"]) + 1):
        assert np.array_equal(ours[f"s{step}_halted"], official[f"s{step}_halted"]), f"step {step} halting"
        assert ours[f"s{step}_loss"] == official[f"s{step}_loss"], f"step {step} loss"
        metrics = [k for k in official if k.startswith(f"s{step}_metric_")]
        assert len(metrics) == 7
        assert {k: official[k].item() for k in metrics} == {k: ours[k].item() for k in metrics}
        gradients = sorted(k for k in official if k.startswith(f"s{step}_grad_"))
        assert gradients == sorted(k for k in ours if k.startswith(f"s{step}_grad_"))
        differences = {k.removeprefix(f"s{step}_grad_"): float(np.abs(ours[k] - official[k]).max())
                       for k in gradients}
        assert all(np.any(official[k] != 0) for k in gradients), "every gradient must carry signal"
        differing = {key: value for key, value in differences.items() if value != 0}
        assert not differing, f"step {step}: max |Δ gradient| of {len(differing)} tensors: {differing}"
        assert f"s{step}_grad_{TABLE_GRADIENT}" in gradients
