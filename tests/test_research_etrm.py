"""ETRM research-code checkpoints (bdsaglam/etrm): loading, numerics, key map.

The shared fixture ``fixtures/etrm-research/small`` holds a research ``step_0``, its all_config.yaml and the
research code's outputs (encoder context, every step of an evaluation rollout, one training step's losses and
gradient norms), produced by the research code itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import trmlab
from trmlab.errors import CheckpointError
from trmlab.interop.research_keys import KEY_TABLES, canonical_to_research, research_to_canonical

GENERATED = Path(__file__).parent / "fixtures" / "etrm-research"
CASES = sorted(path.name for path in GENERATED.iterdir() if (path / "step_0").is_file())
# Cases whose weights are drawn from a seed instead of stored (generate.py: the paper LPN encoders).
SEEDED = sorted(path.name for path in GENERATED.iterdir() if path.is_dir() and not (path / "step_0").exists())
BATCH_KEYS = ("inputs", "labels", "puzzle_identifiers", "demo_inputs", "demo_labels", "demo_mask")
TOLERANCE = 1e-4


@pytest.fixture
def research_small(research_etrm_small: Path) -> Path:
    return research_etrm_small


def _vectors(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "vectors.npz") as data:
        return {key: data[key] for key in data.files}


def _batch(vectors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(vectors[key]) for key in BATCH_KEYS}


def _load(folder: Path, name: str = "step_0") -> torch.nn.Module:
    seq_len = _vectors(folder)["inputs"].shape[1]
    return trmlab.load_checkpoint(folder / name, seq_len=seq_len, dtype=torch.float32)


def _max_diff(a: torch.Tensor, b: np.ndarray) -> float:
    return float((a.detach().float() - torch.from_numpy(b).float()).abs().max())


def check_rollout(model: torch.nn.Module, vectors: dict[str, np.ndarray]) -> None:
    """Every step of an evaluation rollout (and the context, when recorded) within TOLERANCE."""
    batch = _batch(vectors)
    steps = sorted(int(k.removeprefix("eval_logits_s")) for k in vectors if k.startswith("eval_logits_s"))
    outputs = model.rollout(batch["inputs"], batch["puzzle_identifiers"], steps=len(steps),
                            demo_inputs=batch["demo_inputs"], demo_labels=batch["demo_labels"],
                            demo_mask=batch["demo_mask"])
    for step, out in zip(steps, outputs, strict=True):
        assert _max_diff(out["logits"], vectors[f"eval_logits_s{step}"]) < TOLERANCE, step
        assert _max_diff(out["q_halt_logits"], vectors[f"eval_q_halt_s{step}"]) < TOLERANCE, step
        assert _max_diff(out["q_continue_logits"], vectors[f"eval_q_continue_s{step}"]) < TOLERANCE, step
        if f"context_s{step}" in vectors:
            assert _max_diff(out["context"], vectors[f"context_s{step}"]) < TOLERANCE, step
    if "context" in vectors:
        assert _max_diff(outputs[0]["context"], vectors["context"]) < TOLERANCE


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
    check_rollout(_load(research_small), _vectors(research_small))


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


@pytest.mark.parametrize("case", CASES)
def test_other_encoder_configurations_reproduce_the_research_rollout(case):
    check_rollout(_load(GENERATED / case), _vectors(GENERATED / case))


# Variational encoders sample in training (the research code draws noise for every slot, padded ones
# included; trmlab for real demos only) and trmlab sums the KL per sample (§9.14): evaluation parity only.
@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("etrm-") and "variational" not in c])
def test_other_etrm_configurations_match_the_research_training_step(case):
    vectors = _vectors(GENERATED / case)
    measured = training_step(_load(GENERATED / case), vectors)
    expected = {k: float(v) for k, v in vectors.items() if k.startswith(("train_", "grad_norm_"))}
    assert set(measured) == set(expected)
    for key, value in expected.items():
        assert measured[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("etrmtrm-")])
def test_etrmtrm_training_differs_on_purpose_only_in_the_encoder(case):
    """Same losses and decoder gradients as the research code; but where the research code detached the
    encoder's carry (no gradient for any encoder parameter), trmlab trains the encoder (etrm-reference §5)."""
    vectors = _vectors(GENERATED / case)
    measured = training_step(_load(GENERATED / case), vectors)
    for key, value in vectors.items():
        if key.startswith(("train_", "grad_norm_")):
            assert measured[key] == pytest.approx(float(value), rel=1e-4, abs=1e-6), key
    untrained = {f"grad_norm_{name}" for name in vectors["no_grad_parameters"]}
    assert untrained and all(".encoder." in name for name in untrained)
    assert untrained == {k for k in measured if ".encoder." in k}
    assert all(measured[name] > 0 for name in untrained)


def _seeded_checkpoint(case: str, folder: Path) -> Path:
    """The research ``step_0`` of a seeded case: every tensor (research keys, sorted) drawn as generate.py
    drew it, written in the research layout beside a copy of its all_config.yaml."""
    from trmlab.config.official import read_official_all_config
    from trmlab.interop.research_keys import family_of
    from trmlab.models import build_model

    source = GENERATED / case
    vectors = _vectors(source)
    config = read_official_all_config(source / "all_config.yaml")[0]
    with torch.device("meta"):
        model = build_model(config, seq_len=vectors["inputs"].shape[1], vocab_size=12,
                            num_puzzle_identifiers=1)
    family = family_of(config.config.arch)
    shapes = {canonical_to_research(key, family): value.shape for key, value in model.state_dict().items()}
    generator = torch.Generator().manual_seed(int(vectors["weight_seed"]))
    state = {f"_orig_mod.model.{key}": torch.randn(shapes[key], generator=generator) * 0.1
             for key in sorted(shapes)}
    folder.mkdir()
    (folder / "all_config.yaml").write_bytes((source / "all_config.yaml").read_bytes())
    torch.save(state, folder / "step_0")
    return folder


@pytest.mark.parametrize("case", SEEDED)
def test_paper_lpn_encoders_reproduce_the_research_rollout(case, tmp_path):
    """lpn / lpn_var (width 128, LayerNorm, learned 30×30 positions): context, halting logits and the logits
    of the first positions of every step, on the 30×30 canvas the research code requires."""
    folder = _seeded_checkpoint(case, tmp_path / case)
    stored = _vectors(GENERATED / case)
    vectors = {k: v.astype(np.int32) if v.dtype == np.uint8 else v for k, v in stored.items()}
    batch = {k: torch.from_numpy(vectors[k]) for k in BATCH_KEYS if k != "labels"}
    model = trmlab.load_checkpoint(folder / "step_0", seq_len=vectors["inputs"].shape[1], dtype=torch.float32)
    outputs = model.rollout(batch["inputs"], batch["puzzle_identifiers"], steps=2,
                            demo_inputs=batch["demo_inputs"], demo_labels=batch["demo_labels"],
                            demo_mask=batch["demo_mask"])
    assert _max_diff(outputs[0]["context"], vectors["context"]) < TOLERANCE
    for step, out in enumerate(outputs, start=1):
        expected = vectors[f"eval_logits_s{step}"]
        assert _max_diff(out["logits"][:, :expected.shape[1]], expected) < TOLERANCE, step
        assert _max_diff(out["q_halt_logits"], vectors[f"eval_q_halt_s{step}"]) < TOLERANCE, step
        assert _max_diff(out["q_continue_logits"], vectors[f"eval_q_continue_s{step}"]) < TOLERANCE, step


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
