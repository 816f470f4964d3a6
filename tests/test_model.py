"""TRM model: official parity on the fixture, the architecture space vs a naive reference, ACT semantics."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from trmlab.config.schema import ArchConfig
from trmlab.errors import ConfigError, DataError
from trmlab.interop.official_keys import canonical_to_official, strip_official
from trmlab.models import build_model
from trmlab.models.layers import swiglu_width, trunc_normal_
from trmlab.models.losses import act_loss

FIXTURE_ARCH = dict(H_cycles=2, L_cycles=3, L_layers=2, hidden_size=64, num_heads=4, expansion=4.0,
                    forward_dtype="float32", halt_exploration_prob=0.0, halt_max_steps=4, puzzle_emb_len=16,
                    puzzle_emb_ndim=64, pos_encodings="rope", mlp_t=False, no_ACT_continue=True)


def arch(**overrides) -> ArchConfig:
    return dataclasses.replace(ArchConfig(), **{**FIXTURE_ARCH, **overrides})


def fixture_model_and_vectors(folder):
    vectors = np.load(folder / "vectors.npz")
    state = strip_official(torch.load(folder / "step_100", weights_only=True), "step_100")
    model = build_model(arch(), seq_len=vectors["inputs"].shape[1], vocab_size=12,
                        num_puzzle_identifiers=state["puzzle_embedding.weights"].shape[0])
    model.load_state_dict(state, strict=True)
    batch = {"inputs": torch.from_numpy(vectors["inputs"]),
             "puzzle_identifiers": torch.from_numpy(vectors["puzzle_identifiers"]),
             "labels": torch.from_numpy(vectors["labels"]).long()}
    return model, vectors, batch


def test_eval_parity_every_act_step(official_trm_tiny):
    model, vectors, batch = fixture_model_and_vectors(official_trm_tiny)
    model.eval()
    carry = model.initial_carry(batch)
    with torch.no_grad():
        for step in range(4):
            carry, out = model(carry, batch)
            ref_logits = torch.from_numpy(vectors[f"eval_logits_{step}"])
            assert (out["logits"] - ref_logits).abs().max() < 1e-4
            q_ref = torch.from_numpy(vectors[f"eval_q_halt_logits_{step}"])
            assert (out["q_halt_logits"] - q_ref).abs().max() < 1e-4
            assert torch.equal(out["logits"].argmax(-1), torch.from_numpy(vectors[f"eval_preds_{step}"]))
            assert np.array_equal(out["halted"].numpy(), vectors[f"eval_halted_{step}"])
            loss, _ = act_loss(out, "stablemax_cross_entropy")
            ref_loss = float(vectors[f"eval_loss_{step}"])
            assert abs(loss.item() - ref_loss) < 1e-4 * abs(ref_loss)


def test_rollout_matches_eval_vectors(official_trm_tiny):
    model, vectors, batch = fixture_model_and_vectors(official_trm_tiny)
    model.train()
    steps = model.rollout(batch["inputs"], batch["puzzle_identifiers"])
    assert model.training, "rollout must restore the training mode"
    assert len(steps) == 4
    for n, step in enumerate(steps):
        assert torch.equal(step["preds"], torch.from_numpy(vectors[f"eval_preds_{n}"]))
        assert (step["logits"] - torch.from_numpy(vectors[f"eval_logits_{n}"])).abs().max() < 1e-4


def test_rollout_runs_through_the_compiled_step_when_one_is_attached(official_trm_tiny):
    model, vectors, batch = fixture_model_and_vectors(official_trm_tiny)
    calls = []

    def counting_step(carry, data):
        calls.append(model.training)
        return model(carry, data)

    model.use_compiled_step(counting_step)
    steps = model.rollout(batch["inputs"], batch["puzzle_identifiers"])
    assert calls == [False] * 4, "every evaluation step goes through the attached step, in eval mode"
    assert torch.equal(steps[-1]["preds"], torch.from_numpy(vectors["eval_preds_3"]))
    assert not any("compiled" in k for k in model.state_dict()), "the step must stay out of the state dict"
    assert not any(m is not model and m is counting_step for m in model.modules())
    # A real torch.compile wrapper (eager backend: no C++ toolchain needed) gives the same answers.
    model.use_compiled_step(torch.compile(model, backend="eager"))
    compiled = model.rollout(batch["inputs"], batch["puzzle_identifiers"])
    for n, step in enumerate(compiled):
        assert torch.equal(step["preds"], torch.from_numpy(vectors[f"eval_preds_{n}"]))
    assert set(model.state_dict()) == set(fixture_model_and_vectors(official_trm_tiny)[0].state_dict())
    model.use_compiled_step(None)
    calls.clear()
    model.rollout(batch["inputs"], batch["puzzle_identifiers"])
    assert calls == []


def test_compiled_step_does_not_recompile_when_switching_between_training_and_evaluation():
    """The trainer alternates training steps and evaluations through one compiled step: after the first of
    each, switching back and forth must hit the compile cache (a recompile costs minutes on a GPU)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model(arch(), seq_len=8, vocab_size=12, num_puzzle_identifiers=5)
    compiled = torch.compile(model, backend="eager")  # dynamo's graphs, no C++ toolchain needed
    model.use_compiled_step(compiled)
    batch = small_batch()
    carry = model.initial_carry(batch)
    graphs = []
    for _ in range(3):
        model.train()
        for _ in range(2):
            carry, out = compiled(carry, batch)
            act_loss(out, "stablemax_cross_entropy")[0].backward()
        model.rollout(batch["inputs"], batch["puzzle_identifiers"])
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] > 0 and graphs[1] == graphs[2] == graphs[0], graphs


def test_rotating_q_and_k_together_or_apart_gives_the_same_bits_on_the_cpu():
    """The CPU rotates q|k as one tensor (faster), other devices separately (the official strides): values
    and attention outputs must not depend on the choice."""
    from trmlab.models.layers import rotary_tables, rotate_qk

    torch.manual_seed(0)
    heads, head_dim, length = 4, 16, 20
    qkv = torch.randn(3, length, 3 * heads, head_dim)
    cos, sin = rotary_tables(length, head_dim, 10000.0)
    v = qkv[:, :, 2 * heads :].transpose(1, 2)
    outputs = []
    for together in (True, False):
        q, k = rotate_qk(qkv, heads, cos, sin, together=together)
        outputs.append((q, k, torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v)))
    (q1, k1, a1), (q2, k2, a2) = outputs
    assert torch.equal(q1, q2) and torch.equal(k1, k2) and torch.equal(a1, a2)
    assert q2.is_contiguous() and not q1.is_contiguous()  # apart: the official layout


def test_swiglu_split_and_fused_forms_give_the_same_bits():
    """Without autograd the SwiGLU runs two matmuls on the weight's halves (faster), under autograd one fused
    matmul (the official form, whose backward gives the official gradients): the values must not differ."""
    from trmlab.models.layers import SwiGLU

    torch.manual_seed(0)
    mlp = SwiGLU(64, 4.0)
    x = torch.randn(3, 20, 64)
    with torch.no_grad():
        split = mlp(x)
    fused = mlp(x)
    assert fused.requires_grad and torch.equal(split, fused.detach())


def test_train_parity_loss_and_gradient_norms(official_trm_tiny):
    model, vectors, batch = fixture_model_and_vectors(official_trm_tiny)
    model.train()
    carry = model.initial_carry(batch)
    carry, out = model(carry, batch)
    loss, _ = act_loss(out, "stablemax_cross_entropy")
    loss.backward()
    ref = float(vectors["train_loss_0"])
    assert abs(loss.item() - ref) < 1e-4 * ref
    checked = 0
    for name, param in model.named_parameters():
        ref_norm = float(vectors["grad_norm__model.inner." + canonical_to_official(name)])
        assert abs(param.grad.norm().item() - ref_norm) <= 1e-4 * ref_norm, name
        checked += 1
    assert checked == sum(k.startswith("grad_norm__model.inner.") for k in vectors.files)
    table_grad = model.puzzle_embedding.local_weights.grad.norm().item()
    ref_table = float(vectors["grad_norm__puzzle_emb.local_weights"])
    assert abs(table_grad - ref_table) <= 1e-4 * ref_table


# -- architecture space -------------------------------------------------------------------------------------


def test_swiglu_width_rule():
    assert swiglu_width(97, 4) == 512
    assert swiglu_width(916, 4) == 2560
    assert swiglu_width(512, 4) == 1536
    assert swiglu_width(64, 4) == 256


def test_parameter_count_of_the_arc_config_on_meta():
    with torch.device("meta"):
        model = build_model(ArchConfig(), seq_len=900, vocab_size=12, num_puzzle_identifiers=876406)
    assert sum(p.numel() for p in model.parameters()) == 6_829_058
    assert model.puzzle_embedding.weights.shape == (876406, 512)
    names = {canonical_to_official(k) for k in model.state_dict()}
    assert names == {"H_init", "L_init", "embed_tokens.embedding_weight", "lm_head.weight", "q_head.weight",
                     "q_head.bias", "puzzle_emb.weights"} | {
        f"L_level.layers.{i}.{k}" for i in (0, 1) for k in
        ("self_attn.qkv_proj.weight", "self_attn.o_proj.weight", "mlp.gate_up_proj.weight",
         "mlp.down_proj.weight")}


def test_sudoku_mlp_t_shapes_and_count():
    with torch.device("meta"):
        model = build_model(arch(mlp_t=True, pos_encodings="none", hidden_size=512, num_heads=8,
                                 puzzle_emb_ndim=512), seq_len=81, vocab_size=11, num_puzzle_identifiers=1)
    assert sum(p.numel() for p in model.parameters()) == 5_028_866
    shapes = {canonical_to_official(k): tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["L_level.layers.0.mlp_t.gate_up_proj.weight"] == (1024, 97)
    assert shapes["L_level.layers.0.mlp_t.down_proj.weight"] == (97, 512)


def test_trunc_normal_statistics():
    t = trunc_normal_(torch.empty(200_000), std=0.5)
    assert abs(t.std().item() - 0.5) < 0.005
    assert t.abs().max().item() <= 2 * 0.5 * 1.1369


ARCH_SPACE = {
    "fixture": {},
    "mlp_t_learned": dict(mlp_t=True, pos_encodings="learned"),
    "mlp_t_none": dict(mlp_t=True, pos_encodings="none"),
    "ndim_not_hidden_len0": dict(puzzle_emb_ndim=40, puzzle_emb_len=0, hidden_size=32, num_heads=2),
    "ndim_two_slots": dict(puzzle_emb_ndim=48, puzzle_emb_len=0, hidden_size=32, num_heads=4),
    "no_table": dict(puzzle_emb_ndim=0, puzzle_emb_len=0),
    "learned_one_layer": dict(pos_encodings="learned", L_layers=1, num_heads=8, expansion=2.5),
    "wide_heads": dict(hidden_size=48, num_heads=3, expansion=3.0, puzzle_emb_len=3, puzzle_emb_ndim=48),
}


def naive_act_step(sd: dict, a: ArchConfig, inputs, ids, z_H, z_L, seq_len: int):
    """The official step recomputed from the official-named weights with plain float64 ops."""
    sd = {k: v.double() for k, v in sd.items()}
    D = a.hidden_size
    P = a.puzzle_emb_len or math.ceil(a.puzzle_emb_ndim / D)
    x = sd["embed_tokens.embedding_weight"][inputs.long()]
    if a.puzzle_emb_ndim:
        flat = torch.zeros(inputs.shape[0], P * D, dtype=torch.float64)
        flat[:, : a.puzzle_emb_ndim] = sd["puzzle_emb.weights"][ids.long()]
        x = torch.cat([flat.view(-1, P, D), x], dim=1)
    if a.pos_encodings == "learned":
        x = 0.707106781 * (x + sd["embed_pos.embedding_weight"])
    x = x * math.sqrt(D)
    L = seq_len + P

    def norm(h):
        return h / torch.sqrt((h * h).mean(-1, keepdim=True) + a.rms_norm_eps)

    def swiglu(h, up_w, down_w):
        both = h @ up_w.T
        half = both.shape[-1] // 2
        gate, up = both[..., :half], both[..., half:]
        return (gate / (1 + torch.exp(-gate)) * up) @ down_w.T

    def rope(t):  # t [B, L, H, hd]: pair element j with j + hd/2
        hd = t.shape[-1]
        out = t.clone()
        pos = torch.arange(L, dtype=torch.float64).view(1, L, 1)
        for j in range(hd // 2):
            angle = pos * a.rope_theta ** (-2 * j / hd)
            lo, hi = t[..., j], t[..., j + hd // 2]
            out[..., j] = lo * torch.cos(angle) - hi * torch.sin(angle)
            out[..., j + hd // 2] = hi * torch.cos(angle) + lo * torch.sin(angle)
        return out

    def attention(h, pre):
        B, heads = h.shape[0], a.num_heads
        qkv = h @ sd[pre + "self_attn.qkv_proj.weight"].T
        q, k, v = (qkv[..., n * D:(n + 1) * D].reshape(B, L, heads, D // heads) for n in range(3))
        if a.pos_encodings == "rope":
            q, k = rope(q), rope(k)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(D // heads)
        mixed = torch.einsum("bhqk,bkhd->bqhd", torch.softmax(scores, -1), v).reshape(B, L, D)
        return mixed @ sd[pre + "self_attn.o_proj.weight"].T

    def level(h, injection):
        h = h + injection
        for i in range(a.L_layers):
            pre = f"L_level.layers.{i}."
            if a.mlp_t:
                t = h.transpose(1, 2)
                up, down = sd[pre + "mlp_t.gate_up_proj.weight"], sd[pre + "mlp_t.down_proj.weight"]
                t = norm(t + swiglu(t, up, down))
                h = t.transpose(1, 2)
            else:
                h = norm(h + attention(h, pre))
            h = norm(h + swiglu(h, sd[pre + "mlp.gate_up_proj.weight"], sd[pre + "mlp.down_proj.weight"]))
        return h

    z_H, z_L = z_H.double(), z_L.double()
    for _ in range(a.H_cycles):
        for _ in range(a.L_cycles):
            z_L = level(z_L, z_H + x)
        z_H = level(z_H, z_L)
    logits = z_H[:, P:] @ sd["lm_head.weight"].T
    q = z_H[:, 0] @ sd["q_head.weight"].T + sd["q_head.bias"]
    return logits, q[:, 0], q[:, 1], z_H, z_L


@pytest.mark.parametrize("name", sorted(ARCH_SPACE))
def test_architecture_space_matches_naive_reference(name):
    a = arch(**ARCH_SPACE[name])
    seq_len, batch_size = 20, 3
    model = build_model(a, seq_len=seq_len, vocab_size=12, num_puzzle_identifiers=7)
    with torch.no_grad():  # non-zero q head and table so they are exercised
        trunc_normal_(model.core.q_head.weight, std=0.1)
        if a.puzzle_emb_ndim:
            trunc_normal_(model.puzzle_embedding.weights, std=1.0)
    official = {canonical_to_official(k): v for k, v in model.state_dict().items()}
    assert None not in official
    inputs = torch.randint(0, 12, (batch_size, seq_len), dtype=torch.int32)
    ids = torch.randint(0, 7, (batch_size,), dtype=torch.int32)
    model.eval()
    steps = model.rollout(inputs, ids, steps=2)
    assert steps[0]["logits"].shape == (batch_size, seq_len, 12)
    P = model.core.prefix_len
    z_H = official["H_init"].expand(batch_size, seq_len + P, -1)
    z_L = official["L_init"].expand(batch_size, seq_len + P, -1)
    for step in steps:
        logits, q_halt, q_cont, z_H, z_L = naive_act_step(official, a, inputs, ids, z_H, z_L, seq_len)
        # fp32 model vs float64 reference: allow fp32 rounding accumulated over the recursion.
        torch.testing.assert_close(step["logits"].double(), logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(step["q_halt_logits"].double(), q_halt, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(step["q_continue_logits"].double(), q_cont, rtol=1e-4, atol=1e-4)


def test_invalid_architectures_are_refused():
    with pytest.raises(ConfigError, match="num_heads"):
        build_model(arch(num_heads=5), seq_len=8, vocab_size=12, num_puzzle_identifiers=3)
    with pytest.raises(ConfigError, match="puzzle_emb_len"):
        build_model(arch(puzzle_emb_ndim=0, puzzle_emb_len=16), seq_len=8, vocab_size=12,
                    num_puzzle_identifiers=3)
    with pytest.raises(ConfigError, match="does not fit"):
        build_model(arch(puzzle_emb_ndim=200, puzzle_emb_len=2), seq_len=8, vocab_size=12,
                    num_puzzle_identifiers=3)


def test_wrong_sequence_length_and_identifier_are_clear_errors():
    model = build_model(arch(), seq_len=8, vocab_size=12, num_puzzle_identifiers=3)
    with pytest.raises(DataError, match="seq_len=8"):
        model.rollout(torch.zeros(2, 9, dtype=torch.int32), torch.zeros(2, dtype=torch.int32))
    with pytest.raises(DataError, match="out of range"):
        model.rollout(torch.zeros(2, 8, dtype=torch.int32), torch.tensor([0, 3], dtype=torch.int32))


# -- ACT semantics, puzzle table, dtypes ---------------------------------------------------------------


def small_batch(batch_size=4, seq_len=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(2, 12, (batch_size, seq_len), generator=g, dtype=torch.int32)
    return {"inputs": inputs, "labels": inputs.long(),
            "puzzle_identifiers": torch.randint(0, 5, (batch_size,), generator=g, dtype=torch.int32)}


def test_initial_carry_is_zeros_and_all_halted():
    model = build_model(arch(), seq_len=8, vocab_size=12, num_puzzle_identifiers=5)
    carry = model.initial_carry(small_batch())
    assert carry.halted.all() and (carry.steps == 0).all()
    assert (carry.z_H == 0).all() and (carry.z_L == 0).all()
    assert set(carry.current_data) == {"inputs", "labels", "puzzle_identifiers"}


def test_train_mode_carry_semantics():
    model = build_model(arch(halt_max_steps=3), seq_len=8, vocab_size=12, num_puzzle_identifiers=5)
    model.train()
    first, second = small_batch(seed=1), small_batch(seed=2)
    with torch.no_grad():
        model.core.q_head.bias[0] = -5.0  # never halts by q
        carry, out = model(model.initial_carry(first), first)
        assert torch.equal(carry.current_data["inputs"], first["inputs"])
        assert not out["halted"].any()
        # Make row 1 halt by q on the next step; the others must keep their own data.
        carry, out = model(carry, second)
        assert torch.equal(carry.current_data["inputs"], first["inputs"]), "running rows keep their data"
        carry.halted[1] = True
        carry, out = model(carry, second)
    assert torch.equal(carry.current_data["inputs"][1], second["inputs"][1])
    assert torch.equal(carry.current_data["inputs"][0], first["inputs"][0])
    assert carry.steps.tolist() == [3, 1, 3, 3]
    assert out["halted"].tolist() == [True, False, True, True]
    assert torch.equal(out["labels"], carry.current_data["labels"])


def test_q_halting_only_in_training_unless_opted_in():
    for eval_q, expect in ((False, False), (True, True)):
        model = build_model(arch(eval_q_halting=eval_q), seq_len=8, vocab_size=12, num_puzzle_identifiers=5)
        with torch.no_grad():
            model.core.q_head.bias[0] = 50.0
        batch = small_batch()
        model.eval()
        _, out = model(model.initial_carry(batch), batch)
        assert bool(out["halted"].all()) is expect
        model.train()
        _, out = model(model.initial_carry(batch), batch)
        assert out["halted"].all()


def test_exploration_delays_halting_with_a_generator():
    model = build_model(arch(halt_exploration_prob=1.0, halt_max_steps=6), seq_len=8, vocab_size=12,
                        num_puzzle_identifiers=5)
    with torch.no_grad():
        model.core.q_head.bias[0] = 50.0  # q says halt at once; exploration forces ≥ 2 steps
    model.exploration_generator = torch.Generator().manual_seed(3)
    batch = small_batch(batch_size=16)
    with torch.no_grad():
        _, out = model(model.initial_carry(batch), batch)
    assert not out["halted"].any()


def test_puzzle_table_is_a_buffer_with_local_grad_for_any_batch():
    model = build_model(arch(), seq_len=8, vocab_size=12, num_puzzle_identifiers=5)
    assert all("puzzle" not in n for n, _ in model.named_parameters())
    model.train()
    for size in (3, 5):
        batch = small_batch(batch_size=size)
        _, out = model(model.initial_carry(batch), batch)
        act_loss(out, "stablemax_cross_entropy")[0].backward()
        local = model.puzzle_embedding.local_weights
        assert local.is_leaf and local.grad is not None and local.grad.shape == (size, 64)
        assert torch.equal(model.puzzle_embedding.local_ids, batch["puzzle_identifiers"].long())
        assert model.puzzle_embedding.weights.grad is None


def test_no_act_continue_false_runs_and_trains():
    torch.manual_seed(0)
    model = build_model(arch(no_ACT_continue=False, halt_max_steps=3, halt_exploration_prob=0.5),
                        seq_len=8, vocab_size=12, num_puzzle_identifiers=5)
    with torch.no_grad():  # at the official init both q logits are equal, so the target equals q_continue
        trunc_normal_(model.core.q_head.weight, std=0.1)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = small_batch()
    carry = model.initial_carry(batch)
    losses = []
    for _ in range(6):
        carry, out = model(carry, batch)
        assert "target_q_continue" in out and out["target_q_continue"].shape == (4,)
        assert ((out["target_q_continue"] >= 0) & (out["target_q_continue"] <= 1)).all()
        loss, metrics = act_loss(out, "stablemax_cross_entropy")
        assert "q_continue_loss" in metrics
        opt.zero_grad()
        loss.backward()
        assert model.core.q_head.bias.grad[1] != 0, "q_continue must receive gradient"
        opt.step()
        losses.append(metrics["lm_loss"].item())
    assert losses[-1] < losses[0]


def test_bfloat16_forward_keeps_fp32_parameters():
    model = build_model(arch(forward_dtype="bfloat16"), seq_len=8, vocab_size=12, num_puzzle_identifiers=5)
    assert model.core.h_init.dtype == torch.bfloat16
    batch = small_batch()
    model.train()
    carry, out = model(model.initial_carry(batch), batch)
    assert out["logits"].dtype == torch.bfloat16 and out["q_halt_logits"].dtype == torch.float32
    assert carry.z_H.dtype == torch.bfloat16
    act_loss(out, "stablemax_cross_entropy")[0].backward()
    assert all(p.dtype == torch.float32 and p.grad is not None for p in model.parameters())
    ref = build_model(arch(forward_dtype="float32"), seq_len=8, vocab_size=12, num_puzzle_identifiers=5)
    ref.load_state_dict(model.state_dict())
    assert ref.core.h_init.dtype == torch.bfloat16  # kept as saved (lossless); cast exactly at use
    ref_out = ref.rollout(batch["inputs"], batch["puzzle_identifiers"], steps=1)[0]
    bf_out = model.rollout(batch["inputs"], batch["puzzle_identifiers"], steps=1)[0]
    assert (bf_out["logits"].float() - ref_out["logits"]).abs().max() < 0.5


def test_losses_reference_values():
    from trmlab.models.losses import softmax_cross_entropy, stablemax_cross_entropy

    logits = torch.tensor([[[2.0, -1.0, 0.5], [0.0, 0.0, -3.0]]])
    labels = torch.tensor([[0, -100]])
    s = torch.tensor([3.0, 0.5, 1.5], dtype=torch.float64)
    expected = -math.log(3.0 / s.sum().item())
    out = stablemax_cross_entropy(logits, labels)
    assert out.dtype == torch.float64
    assert out[0, 0].item() == pytest.approx(expected, rel=1e-12) and out[0, 1].item() == 0
    soft = softmax_cross_entropy(logits, labels)
    assert soft[0, 0].item() == pytest.approx(-torch.log_softmax(logits[0, 0], -1)[0].item(), rel=1e-6)


def test_act_loss_metric_populations():
    logits = torch.zeros(3, 2, 4)
    logits[0, :, 1] = 1  # row 0 predicts [1, 1]: correct
    logits[1, :, 2] = 1  # row 1 predicts [2, 2]: wrong
    outputs = {"logits": logits, "labels": torch.tensor([[1, 1], [1, -100], [-100, -100]]),
               "q_halt_logits": torch.tensor([1.0, 1.0, -1.0]), "q_continue_logits": torch.zeros(3),
               "halted": torch.tensor([True, False, True]), "steps": torch.tensor([2, 1, 3])}
    loss, m = act_loss(outputs, "softmax_cross_entropy")
    assert m["count"].item() == 1 and m["exact_accuracy"].item() == 1 and m["steps"].item() == 2
    assert m["all_rows/count"].item() == 2 and m["all_rows/exact_accuracy"].item() == 1
    assert m["all_rows/q_halt_accuracy"].item() == 1  # row 0 right (halt, correct), row 1 wrong
    assert loss.item() == pytest.approx(m["lm_loss"].item() + 0.5 * m["q_halt_loss"].item())


def test_extension_points_for_encoder_variants():
    """A toy variant: prefix from per-row demo data (riding in current_data) plus a recurrent state."""
    from trmlab.models import ACTModel, ReasoningCore

    class ToyEncoderModel(ACTModel):
        def __init__(self, a):
            super().__init__(a, ReasoningCore(a, seq_len=8, vocab_size=12, prefix_len=2))
            self.encode = torch.nn.Linear(8, 2 * a.hidden_size)

        def initial_prefix_state(self, batch):
            return {"count": torch.zeros(batch["inputs"].shape[0])}

        def reset_prefix_state(self, state, halted, batch):
            return {"count": torch.where(halted, 0.0, state["count"])}

        def compute_prefix(self, data, state):
            prefix = self.encode(data["demo"].float()).view(-1, 2, self.core.hidden)
            return prefix, {"count": state["count"] + 1}, {"context": prefix}

    model = ToyEncoderModel(arch(puzzle_emb_ndim=0, puzzle_emb_len=0, halt_max_steps=3))
    model.train()
    first = {**small_batch(), "demo": torch.randn(4, 8)}
    second = {**small_batch(seed=5), "demo": torch.randn(4, 8)}
    carry = model.initial_carry(first)
    assert set(carry.current_data) == {"inputs", "labels", "puzzle_identifiers", "demo"}
    with torch.no_grad():
        model.core.q_head.bias[0] = -5.0
    carry, out = model(carry, first)
    assert out["context"].shape == (4, 2, 64)
    carry.halted[2] = True
    carry, out = model(carry, second)
    assert torch.equal(carry.current_data["demo"][2], second["demo"][2])
    assert torch.equal(carry.current_data["demo"][0], first["demo"][0])
    assert carry.extra["count"].tolist() == [2.0, 2.0, 1.0, 2.0]
    act_loss(out, "stablemax_cross_entropy")[0].backward()
    assert model.encode.weight.grad is not None and model.encode.weight.grad.abs().sum() > 0


def test_bootstrapped_continue_target_is_the_next_steps_q():
    model = build_model(arch(no_ACT_continue=False, halt_max_steps=2), seq_len=8, vocab_size=12,
                        num_puzzle_identifiers=5)
    with torch.no_grad():
        trunc_normal_(model.core.q_head.weight, std=0.5)
    model.train()
    batch = small_batch()
    with torch.no_grad():
        carry, out = model(model.initial_carry(batch), batch)
        x = model.core.embed(batch["inputs"], model.compute_prefix(carry.current_data, {})[0])
        _, (_, q_halt, q_cont) = model.core.step(carry.z_H, carry.z_L, x)
    torch.testing.assert_close(out["target_q_continue"], torch.sigmoid(torch.maximum(q_halt, q_cont)))
    with torch.no_grad():  # second step is the last: the target is the next q_halt alone
        carry.halted.zero_()
        carry, out = model(carry, batch)
        _, (_, q_halt, _) = model.core.step(carry.z_H, carry.z_L, x)
    torch.testing.assert_close(out["target_q_continue"], torch.sigmoid(q_halt))


def test_exploration_is_reproducible_with_a_seeded_generator():
    model = build_model(arch(halt_exploration_prob=0.5, halt_max_steps=8), seq_len=8, vocab_size=12,
                        num_puzzle_identifiers=5)
    with torch.no_grad():
        model.core.q_head.bias[0] = 50.0
    batch = small_batch(batch_size=32)
    patterns = []
    for _ in range(2):
        model.exploration_generator = torch.Generator().manual_seed(11)
        with torch.no_grad():
            _, out = model(model.initial_carry(batch), batch)
        patterns.append(out["halted"])
    assert torch.equal(patterns[0], patterns[1])
    assert 0 < int(patterns[0].sum()) < 32  # about half explore (and so do not halt at step 1)


def test_answer_step_takes_each_rows_first_halting_step():
    from trmlab.models.act import answer_step

    halted = [[False, True, False, False], [True, True, False, False], [True, True, True, False]]
    steps = [{"logits": torch.full((4, 2, 3), float(t)), "preds": torch.full((4, 2), t),
              "q_halt_logits": torch.full((4,), float(t)), "halted": torch.tensor(h)}
             for t, h in enumerate(halted)]
    answer = answer_step(steps)
    assert answer["preds"][:, 0].tolist() == [1, 0, 2, 2]  # row 3 never halted: the last step
    assert answer["q_halt_logits"].tolist() == [1.0, 0.0, 2.0, 2.0]
    assert answer["logits"][:, 1, 2].tolist() == [1.0, 0.0, 2.0, 2.0]
    assert answer_step(steps[2:]) is steps[2]
