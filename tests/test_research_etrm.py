"""ETRM research-code checkpoints (bdsaglam/etrm): loading, numerics, key map.

The shared fixture ``fixtures/etrm-research/small`` holds a research ``step_0``, its all_config.yaml and the
research code's outputs (encoder context, every step of an evaluation rollout, one training step's losses and
gradient norms), produced by the research code itself. The generated cases of ``tests/fixtures/etrm-research``
(``research_cases``) hold the same outputs for every other encoder configuration, at realistic sizes, and the
research key names and seed their weights are rebuilt from. Run with ``-s`` to see the measured maxima.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import trmlab
from research_cases import CASES, GENERATED, build_checkpoint, case_vectors
from trmlab.errors import CheckpointError
from trmlab.interop.research_keys import KEY_TABLES, canonical_to_research, research_to_canonical

BATCH_KEYS = ("inputs", "labels", "puzzle_identifiers", "demo_inputs", "demo_labels", "demo_mask")
# Every ACT step's logits, halting logits and context agree within TOLERANCE relative to the reference's scale
# (max |Δ| / max |reference|). Realistic sizes make a decoder at initialisation amplify a difference about
# tenfold per ACT step, so an absolute bound at hidden 8 (the earlier cases) hid a real difference (issue 21).
TOLERANCE = 1e-4
OUTPUT_KEYS = {"logits": "eval_logits_s{}", "q_halt_logits": "eval_q_halt_s{}",
               "q_continue_logits": "eval_q_continue_s{}"}


@pytest.fixture
def research_small(research_etrm_small: Path) -> Path:
    return research_etrm_small


def _vectors(folder: Path) -> dict[str, np.ndarray]:
    return case_vectors(folder)


def _batch(vectors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(vectors[key]) for key in BATCH_KEYS if key in vectors}


def _load(folder: Path, name: str = "step_0") -> torch.nn.Module:
    seq_len = _vectors(folder)["inputs"].shape[1]
    return trmlab.load_checkpoint(folder / name, seq_len=seq_len, dtype=torch.float32)


def _load_case(case: str, tmp_path: Path) -> torch.nn.Module:
    """A generated case's model: its research step_0 rebuilt from the seed, then loaded as a user would."""
    seq_len = _vectors(GENERATED / case)["inputs"].shape[1]
    return trmlab.load_checkpoint(build_checkpoint(case, tmp_path / case), seq_len=seq_len,
                                  dtype=torch.float32)


def _max_diff(a: torch.Tensor, b: np.ndarray) -> float:
    return float((a.detach().float() - torch.from_numpy(b).float()).abs().max())


def rollout_differences(model: torch.nn.Module, vectors: dict[str, np.ndarray]) -> list[dict[str, float]]:
    """Per ACT step of an evaluation rollout: ``{name: max |Δ|}`` and ``{name + "_scale": max |reference|}``
    for the logits (the positions the reference stored), both halting logits and the context when recorded
    (ETRM: one context, compared at step 1; ETRMTRM: one per step)."""
    batch = _batch(vectors)
    steps = sorted(int(k.removeprefix("eval_logits_s")) for k in vectors if k.startswith("eval_logits_s"))
    outputs = model.rollout(batch["inputs"], batch["puzzle_identifiers"], steps=len(steps),
                            demo_inputs=batch["demo_inputs"], demo_labels=batch["demo_labels"],
                            demo_mask=batch["demo_mask"])
    measured = []
    for step, out in zip(steps, outputs, strict=True):
        pairs = {name: (out[name], vectors[key.format(step)]) for name, key in OUTPUT_KEYS.items()}
        pairs["logits"] = (out["logits"][:, :pairs["logits"][1].shape[1]], pairs["logits"][1])
        context = vectors.get(f"context_s{step}", vectors.get("context") if step == steps[0] else None)
        if context is not None:
            pairs["context"] = (out["context"], context)
        row = {}
        for name, (ours, reference) in pairs.items():
            row[name] = _max_diff(ours, reference)
            row[f"{name}_scale"] = float(np.abs(reference).max())
        measured.append(row)
    return measured


def check_rollout(model: torch.nn.Module, vectors: dict[str, np.ndarray], label: str = "",
                  record=None) -> list[dict[str, float]]:
    """Every step within TOLERANCE relative to the reference's scale; prints (and records) the maxima."""
    measured = rollout_differences(model, vectors)
    for step, row in enumerate(measured, start=1):
        relative = {name: row[name] / row[f"{name}_scale"] for name in row if not name.endswith("_scale")}
        print(f"{label} step {step}: " + ", ".join(f"{name} max|Δ| {row[name]:.3g} (relative {value:.3g})"
                                                   for name, value in relative.items()))
        if record is not None:
            for name, value in relative.items():
                record(f"step{step}_{name}_relative", value)
        for name, value in relative.items():
            assert value < TOLERANCE, (label, step, name, row[name], row[f"{name}_scale"])
    return measured


def training_step(model: torch.nn.Module, vectors: dict[str, np.ndarray]) -> dict[str, float]:
    """One training step from a fresh carry: the losses and {research parameter name: gradient norm}."""
    batch = _batch(vectors)
    model.train()
    _, outputs = model(model.initial_carry(batch), batch)
    loss, metrics = model.compute_loss(outputs)
    loss.backward()
    family = _family(model)
    norms = {f"grad_norm_model.{canonical_to_research(name, family)}":
             (0.0 if p.grad is None else float(p.grad.norm())) for name, p in model.named_parameters()}
    return {"train_loss": float(loss.detach()), "train_lm_loss": float(metrics["lm_loss"]),
            "train_q_halt_loss": float(metrics["q_halt_loss"]), **norms}


def _family(model: torch.nn.Module) -> str:
    from trmlab.interop.research_keys import family_of

    return family_of(model.config.config.arch)


def test_the_research_fixture_loads_as_a_research_etrm(research_small):
    model = _load(research_small)
    arch = model.config.config.arch
    assert type(model).__name__ == "ETRM"
    assert (arch.encoder_numerics, arch.encoder_type, arch.encoder_num_layers, arch.L_cycles,
            arch.puzzle_emb_len) == ("research", "standard", 2, 3, 8)
    assert "TRMWithEncoder" in model.config.provenance["arch.encoder_numerics"]
    assert not model.training


def test_rollout_reproduces_the_research_context_and_every_step(research_small):
    check_rollout(_load(research_small), _vectors(research_small), "shared small")


def test_trmlab_numerics_would_not_reproduce_it(research_small):
    """The fixture tells the research numerics apart from trmlab's own (the parity test can fail)."""
    from trmlab.models.encoders import GridEncoder

    model = _load(research_small)
    grid: GridEncoder = model.encoder.grid
    grid.research = False  # trmlab's key masking and final norm, same weights
    with pytest.raises(AssertionError):
        check_rollout(model, _vectors(research_small))


def test_one_training_step_matches_losses_and_every_gradient_norm(research_small):
    vectors = _vectors(research_small)
    measured = training_step(_load(research_small), vectors)
    expected = {k: float(v) for k, v in vectors.items() if k.startswith(("train_", "grad_norm_"))}
    assert set(measured) == set(expected)  # every parameter the research code trains, nothing else
    for key, value in expected.items():
        assert measured[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_key_tables_are_bijections_in_both_directions():
    for family, pairs in KEY_TABLES.items():
        research = [r for r, _ in pairs]
        ours = [c for _, c in pairs]
        assert len(set(research)) == len(research) and len(set(ours)) == len(ours), family
        for r, c in pairs:
            r_key, c_key = r.replace("{i}", "3"), c.replace("{i}", "3")
            assert research_to_canonical(r_key, family) == c_key
            assert canonical_to_research(c_key, family) == r_key


def test_an_unmappable_key_is_refused_by_name(research_small, tmp_path):
    state = torch.load(research_small / "step_0", weights_only=True)
    state["_orig_mod.model.encoder.contrastive_head.weight"] = torch.zeros(2, 2)
    (tmp_path / "all_config.yaml").write_bytes((research_small / "all_config.yaml").read_bytes())
    torch.save(state, tmp_path / "step_0")
    with pytest.raises(CheckpointError, match=r"encoder\.contrastive_head\.weight"):
        trmlab.load_checkpoint(tmp_path / "step_0", seq_len=36)


def test_a_research_file_under_a_trm_config_is_refused(research_small, tmp_path):
    config = (research_small / "all_config.yaml").read_text().replace(
        "etrm@TRMWithEncoder", "trm@TinyRecursiveReasoningModel_ACTV1")
    (tmp_path / "all_config.yaml").write_text(config)
    (tmp_path / "step_0").write_bytes((research_small / "step_0").read_bytes())
    with pytest.raises(CheckpointError, match="names a TRM"):
        trmlab.load_checkpoint(tmp_path / "step_0", seq_len=36)


# Drawn at the research init's full weight scale (the others at half of it, see generate.py), where the
# decoder is chaotic: the 6e-7 relative context difference between this CPU's vector kernels and the pinned
# scalar ones that computed the fixture grows to 1.5e-3 of the logits by step 2. Compared exactly under the
# pinned numerics instead (test_under_the_pinned_numerics_every_case_is_bit_identical).
INIT_SCALE_CASES = ("etrm-lpn-standard-gain1",)


@pytest.mark.parametrize("case", [c for c in CASES if c not in INIT_SCALE_CASES])
def test_every_encoder_configuration_reproduces_every_research_rollout_step(case, tmp_path, record_property):
    """Every generated case (every encoder type, pooling and norm style, variational ones in evaluation;
    hidden 64, seq 36 or 900, 3 ACT steps, 3/1/2 real demos): logits, halting logits and context within
    TOLERANCE of the research code's at every step, on any CPU."""
    check_rollout(_load_case(case, tmp_path), _vectors(GENERATED / case), case, record_property)


# The research grid encoder saw every demo slot of the batch, padded ones included (then zeroed). trmlab
# encoded only the real demos until issue 21: the same numbers in exact arithmetic, but a matmul's rounding
# can depend on its row count, and with MKL's reproducible code path (MKL_CBWR=COMPATIBLE) a real demo's
# vector moved by 1.4e-6, which the decoder amplified to 2.3e-4 by step 3. Under the numerics generate.py
# pins (and the same torch build) that difference is the only one: the cases below are bit-identical.
PINNED_NUMERICS = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default"}
# The paper LPN cases (30×30 canvas) take ~10 s of CPU each with the scalar kernels: slow suite.
PAPER_CASES = tuple(c for c in CASES if "paper" in c)


def measure_cases(scratch: Path, cases: list[str]) -> dict[str, list[dict[str, float]]]:
    """Per-step differences of ``cases`` (see :func:`rollout_differences`); run by the pinned-numerics test
    in a subprocess."""
    torch.set_num_threads(1)
    return {case: rollout_differences(_load_case(case, scratch), _vectors(GENERATED / case))
            for case in cases}


def _pinned_numerics_available() -> str | None:
    """Why the exact comparison cannot run here, or None."""
    import platform

    recorded = str(_vectors(GENERATED / CASES[0])["torch_version"])
    if torch.__version__ != recorded:
        return f"the fixtures were computed with torch {recorded}, this is {torch.__version__}"
    if platform.machine() not in ("x86_64", "AMD64") or not torch.backends.mkl.is_available():
        return "MKL's reproducible code path needs an x86-64 build of torch with MKL"
    return None


@pytest.mark.parametrize("cases", [
    pytest.param([c for c in CASES if c not in PAPER_CASES], id="canvas-6x6"),
    pytest.param(list(PAPER_CASES), id="paper-lpn-30x30", marks=pytest.mark.slow)])
def test_under_the_pinned_numerics_every_case_is_bit_identical(cases, tmp_path):
    """Same torch build, MKL's reproducible path and PyTorch's scalar kernels (what generate.py ran under):
    every logit, halting logit and context of every step of every case equals the research code's exactly
    (encoding only the real demo slots made every case differ here, from 2e-7 to 6.7e-4)."""
    import json
    import os
    import subprocess
    import sys

    reason = _pinned_numerics_available()
    if reason:
        pytest.skip(reason)
    tests = Path(__file__).parent
    code = ("import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
            "import test_research_etrm as t; "
            "print(json.dumps(t.measure_cases(Path(sys.argv[2]), sys.argv[3:])))")
    env = {**os.environ, **PINNED_NUMERICS}
    result = subprocess.run([sys.executable, "-c", code, str(tests), str(tmp_path), *cases], env=env,
                            capture_output=True, text=True, timeout=600, check=True)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(measured) == sorted(cases)
    different = {}
    for case in cases:
        for step, row in enumerate(measured[case], start=1):
            differences = {name: value for name, value in row.items() if not name.endswith("_scale")}
            print(case, f"step {step}", differences)
            if any(differences.values()):
                different[f"{case} step {step}"] = differences
    assert not different


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("etrm-") and "variational" not in c
                                  and "paper" not in c and c not in INIT_SCALE_CASES])
def test_other_etrm_configurations_match_the_research_training_step(case, tmp_path):
    vectors = _vectors(GENERATED / case)
    measured = training_step(_load_case(case, tmp_path), vectors)
    expected = {k: float(v) for k, v in vectors.items() if k.startswith(("train_", "grad_norm_"))}
    assert set(measured) == set(expected)
    for key, value in expected.items():
        assert measured[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("etrmtrm-")])
def test_etrmtrm_training_differs_on_purpose_only_in_the_encoder(case, tmp_path):
    """Same losses and decoder gradients as the research code; but where the research code detached the
    encoder's carry (no gradient for any encoder parameter), trmlab trains the encoder (etrm-reference §5)."""
    vectors = _vectors(GENERATED / case)
    measured = training_step(_load_case(case, tmp_path), vectors)
    for key, value in vectors.items():
        if key.startswith(("train_", "grad_norm_")):
            assert measured[key] == pytest.approx(float(value), rel=1e-4, abs=1e-6), key
    untrained = {f"grad_norm_{name}" for name in vectors["no_grad_parameters"]}
    assert untrained and all(".encoder." in name for name in untrained)
    assert untrained == {k for k in measured if ".encoder." in k}
    assert all(measured[name] > 0 for name in untrained)


def test_a_row_without_demos_gets_a_zero_context_not_nan(research_small):
    """The research code's fully masked cross-attention gives NaN there (etrm-reference §3.2); trmlab zero."""
    batch = _batch(_vectors(research_small))
    batch["demo_mask"][2] = False
    demos = {k: batch[k] for k in ("demo_inputs", "demo_labels", "demo_mask")}
    outputs = _load(research_small).rollout(batch["inputs"], batch["puzzle_identifiers"], steps=2, **demos)
    assert torch.equal(outputs[0]["context"][2], torch.zeros_like(outputs[0]["context"][2]))
    assert all(torch.isfinite(out["logits"]).all() for out in outputs)


def test_a_bfloat16_research_checkpoint_loads_and_round_trips(research_small, tmp_path):
    """The research trainer stores H_init, L_init and the set queries in the forward dtype (bf16 in its runs):
    they load as fp32 masters where they are parameters and convert back byte for byte."""
    from trmlab.cli import main

    state = torch.load(research_small / "step_0", weights_only=True)
    for key in ("inner.H_init", "inner.L_init", "encoder.set_encoder.query_tokens"):
        state[f"_orig_mod.model.{key}"] = state[f"_orig_mod.model.{key}"].to(torch.bfloat16)
    folder = tmp_path / "bf16"
    folder.mkdir()
    text = (research_small / "all_config.yaml").read_text().replace("forward_dtype: float32",
                                                                    "forward_dtype: bfloat16")
    (folder / "all_config.yaml").write_text(text)
    torch.save(state, folder / "step_0")
    model = trmlab.load_checkpoint(folder / "step_0", seq_len=36, dtype=torch.float32)
    assert model.encoder.set_encoder.queries.dtype == torch.float32
    assert model.core.h_init.dtype == torch.bfloat16  # buffers keep their stored dtype
    assert main(["checkpoint", "convert", str(folder / "step_0"), str(tmp_path / "ck"), "to=trmlab",
                 "seq_len=36"]) == 0
    assert main(["checkpoint", "convert", str(tmp_path / "ck"), str(tmp_path / "back"),
                 "to=research"]) == 0
    assert (tmp_path / "back" / "step_0").read_bytes() == (folder / "step_0").read_bytes()
