"""ETRM / ETRMTRM models: gradient reaches every parameter, evaluation caching, carry semantics.

Run: .venv/bin/python -m pytest -q tests/test_etrm.py  (tiny shapes, fp32 on CPU, a few seconds)
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from test_encoders import SEQ, demo_batch
from trmlab.config.schema import ArchConfig
from trmlab.errors import DataError
from trmlab.models import build_model
from trmlab.models.losses import act_loss, stablemax_cross_entropy


def tiny_arch(name: str = "etrm", **overrides) -> ArchConfig:
    base = dict(name=name, H_cycles=2, L_cycles=2, L_layers=1, hidden_size=32, num_heads=4, expansion=2.0,
                puzzle_emb_ndim=0, puzzle_emb_len=2, halt_max_steps=3, halt_exploration_prob=0.0,
                forward_dtype="float32", encoder_num_layers=1, encoder_latent_dim=8, encoder_h_cycles=2,
                encoder_l_cycles=1, encoder_l_layers=1)
    base.update(overrides)
    return ArchConfig(**base)


def make_batch(counts=(2, 3, 1, 0), seed: int = 0) -> dict[str, torch.Tensor]:
    demo_inputs, demo_labels, demo_mask = demo_batch(list(counts), seed=seed)
    gen = torch.Generator().manual_seed(seed + 100)
    inputs = torch.randint(2, 12, (len(counts), SEQ), generator=gen, dtype=torch.int32)
    labels = torch.randint(2, 12, (len(counts), SEQ), generator=gen).long()
    ids = torch.zeros(len(counts), dtype=torch.int32)
    return {"inputs": inputs, "labels": labels, "puzzle_identifiers": ids,
            "demo_inputs": demo_inputs, "demo_labels": demo_labels, "demo_mask": demo_mask}


def build(arch: ArchConfig):
    torch.manual_seed(0)
    return build_model(arch, seq_len=SEQ, vocab_size=12, num_puzzle_identifiers=1)


def step_loss(model, carry, batch, kl_weight: float = 1e-2):
    carry, outputs = model(carry, batch)
    loss, _ = act_loss(outputs)
    if "kl" in outputs:
        loss = loss + kl_weight * outputs["kl"].sum()
    return carry, outputs, loss


MODELS = [
    ("etrm", {"encoder_type": "standard"}),
    ("etrm", {"encoder_type": "standard", "encoder_set_memory": "tokens", "encoder_token_layout": "paired"}),
    ("etrmtrm", {"recurrent_encoder_type": "recurrent_standard", "encoder_token_layout": "paired"}),
    ("etrm", {"encoder_type": "lpn_variational"}),
    ("etrm", {"encoder_type": "hybrid_variational"}),
    ("etrmtrm", {"recurrent_encoder_type": "recurrent_standard"}),
    ("etrmtrm", {"recurrent_encoder_type": "trm_style"}),
]


@pytest.mark.parametrize(("name", "overrides"), MODELS)
def test_every_parameter_gets_gradient_at_every_step(name, overrides):
    model = build(tiny_arch(name, **overrides)).train()
    batch = make_batch()
    carry = model.initial_carry(batch)
    for step in range(2):  # the second step starts from a carried (detached) encoder state
        model.zero_grad(set_to_none=True)
        carry, outputs, loss = step_loss(model, carry, batch)
        loss.backward()
        assert outputs["context"].shape == (4, 2, 32)
        for param_name, param in model.named_parameters():
            assert param.grad is not None and param.grad.abs().sum() > 0, \
                f"step {step}: no gradient reached {param_name}"
    groups = model.split_parameters()
    assert groups["encoder"] and groups["decoder"]
    assert all(n.startswith("core.") for n, _ in groups["decoder"])
    assert all(n.startswith("encoder.") for n, _ in groups["encoder"])


@pytest.mark.parametrize(("name", "overrides"), MODELS)
def test_eval_cache_matches_recomputing_every_step(name, overrides):
    model = build(tiny_arch(name, **overrides)).eval()
    batch = make_batch(seed=1)
    cached = model.rollout(batch["inputs"], batch["puzzle_identifiers"], demo_inputs=batch["demo_inputs"],
                           demo_labels=batch["demo_labels"], demo_mask=batch["demo_mask"])
    carry = model.initial_carry(batch)
    with torch.no_grad():
        for step in range(3):
            carry.extra["stale"] = torch.ones_like(carry.extra["stale"])  # force a recomputation
            carry, outputs = model(carry, batch)
            torch.testing.assert_close(outputs["logits"], cached[step]["logits"])
    assert torch.isfinite(outputs["context"]).all()
    assert outputs["context"][3].abs().sum() == 0  # the zero-demo row


def rollout(model, batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    return model.rollout(batch["inputs"], batch["puzzle_identifiers"], demo_inputs=batch["demo_inputs"],
                         demo_labels=batch["demo_labels"], demo_mask=batch["demo_mask"])


def test_context_refinement_fits_the_demos_and_leaves_the_weights_alone():
    refining = build(tiny_arch("etrm", context_refine_steps=3, context_refine_lr=0.05)).eval()
    batch = make_batch(seed=1)
    weights = {k: v.clone() for k, v in refining.state_dict().items()}

    def demo_loss(context: torch.Tensor) -> torch.Tensor:  # per row: reproducing its own demos
        rows, slots = batch["demo_mask"].nonzero(as_tuple=True)
        labels = batch["demo_labels"][rows, slots].long()
        logits = refining._decode_fresh(batch["demo_inputs"][rows, slots], context[rows])
        per_demo = stablemax_cross_entropy(logits, torch.where(labels == 0, -100, labels)).sum(-1)
        return torch.zeros(len(batch["inputs"])).index_add(0, rows, per_demo.float())

    with torch.no_grad():
        steps = rollout(refining, batch)
        encoded = refining.encoder(batch["demo_inputs"], batch["demo_labels"], batch["demo_mask"]).context
        refined = steps[0]["context"]
        before, after = demo_loss(encoded), demo_loss(refined)
    assert (after[:3] < before[:3]).all()  # rows with demos fit them better
    assert not torch.equal(refined[:3], encoded[:3])
    assert refined[3].abs().sum() == 0  # the zero-demo row is left alone
    assert all(torch.equal(v, weights[k]) for k, v in refining.state_dict().items())
    assert all(p.grad is None for p in refining.parameters())
    plain = build(tiny_arch("etrm")).eval()  # same seed, same weights, no refinement
    with torch.no_grad():
        unrefined = rollout(plain, batch)
    torch.testing.assert_close(unrefined[0]["context"], encoded)


def test_eval_recomputes_only_restarted_rows():
    model = build(tiny_arch("etrm")).eval()
    batch, other = make_batch(seed=1), make_batch(seed=2)
    with torch.no_grad():
        carry, _ = model(model.initial_carry(batch), batch)
        carry.halted = torch.tensor([False, True, False, False])  # row 1 restarts with `other`'s row 1
        carry, outputs = model(carry, other)
        expected = model.encoder(other["demo_inputs"], other["demo_labels"], other["demo_mask"]).context
        first = model.encoder(batch["demo_inputs"], batch["demo_labels"], batch["demo_mask"]).context
    torch.testing.assert_close(outputs["context"][1], expected[1])
    torch.testing.assert_close(outputs["context"][[0, 2, 3]], first[[0, 2, 3]])


def test_training_reencodes_carried_rows_from_their_own_demos():
    model = build(tiny_arch("etrm")).train()
    batch, other = make_batch(seed=1), make_batch(seed=2)
    carry, _ = model(model.initial_carry(batch), batch)
    carry.halted = torch.zeros(4, dtype=torch.bool)  # nobody restarts: the incoming batch is ignored
    _, outputs = model(carry, other)
    with torch.no_grad():
        own = model.encoder(batch["demo_inputs"], batch["demo_labels"], batch["demo_mask"]).context
    torch.testing.assert_close(outputs["context"].detach(), own)
    assert outputs["context"].requires_grad
    torch.testing.assert_close(outputs["labels"], batch["labels"])


@pytest.mark.parametrize("name", ["etrm", "etrmtrm"])
def test_missing_demo_keys_is_a_clear_error(name):
    model = build(tiny_arch(name))
    batch = {k: v for k, v in make_batch().items() if not k.startswith("demo_")}
    with pytest.raises(DataError, match="encoder layout"):
        model(model.initial_carry(batch), batch)


def test_state_dict_keys_are_decoder_core_plus_encoder():
    model = build(tiny_arch("etrm"))
    trm = build(dataclasses.replace(tiny_arch("trm"), puzzle_emb_ndim=32))
    decoder_keys = {k for k in model.state_dict() if not k.startswith("encoder.")}
    trm_keys = {k for k in trm.state_dict() if not k.startswith("puzzle_embedding.")}
    assert decoder_keys == trm_keys


def test_parameter_counts_match_the_research_encoders_at_arc_size():
    """etrm-reference §3.2: standard (2 grid layers, 1 set layer) 10,506,240 and recurrent_standard 10,498,048
    parameters, plus trmlab's 512-wide context gain; the decoder is TRM's 6,829,058 (trm-reference §2.8)."""
    counts = {}
    for name in ("etrm", "etrmtrm"):
        arch = ArchConfig(name=name, puzzle_emb_ndim=0, encoder_num_layers=2, encoder_set_layers=1,
                          recurrent_encoder_type="recurrent_standard", forward_dtype="float32")
        model = build_model(arch, seq_len=900, vocab_size=12, num_puzzle_identifiers=1)
        counts[name] = {k: sum(p.numel() for _, p in v) for k, v in model.split_parameters().items()}
    assert counts["etrm"] == {"decoder": 6_829_058, "encoder": 10_506_240 + 512}
    assert counts["etrmtrm"] == {"decoder": 6_829_058, "encoder": 10_498_048 + 512}
