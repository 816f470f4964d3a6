"""AdamATan2 against hand-computed steps, and the sparse sign-SGD of the puzzle table.

Run: .venv/bin/python -m pytest -q tests/test_optim.py
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from trmlab.training.optim import AdamATan2, SparseSignSGD


def _hand_adam_atan2(p, grads, lr, betas, wd):
    """The official update for one scalar, written out with Python floats (float64)."""
    m = v = 0.0
    for t, g in enumerate(grads, start=1):
        p = p * (1 - lr * wd)
        m = m + (1 - betas[0]) * (g - m)
        v = v + (1 - betas[1]) * (g * g - v)
        bc1, bc2 = 1 - betas[0] ** t, 1 - betas[1] ** t
        p = p - (lr / bc1) * math.atan2(m, math.sqrt(v) / math.sqrt(bc2))
    return p, m, v


def test_first_step_is_lr_times_sign_plus_decay():
    # At t=1: m = (1-β1)g, v = (1-β2)g², so atan2(m, sqrt(v)/sqrt(bc2))
    # = atan2((1-β1)g, |g|·sqrt(1-β2)/sqrt(1-β2)) = atan2((1-β1)g, |g|); the step is lr/(1-β1) times that.
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = AdamATan2([p], lr=0.1, betas=(0.9, 0.95), weight_decay=0.5)
    p.grad = torch.tensor([3.0, -0.5], dtype=torch.float64)
    opt.step()
    expected = [1.0 * (1 - 0.05) - (0.1 / 0.1) * math.atan2(0.1 * 3.0, 3.0),
                -2.0 * (1 - 0.05) - (0.1 / 0.1) * math.atan2(0.1 * -0.5, 0.5)]
    assert p.detach().tolist() == pytest.approx(expected, abs=1e-12)


def test_matches_hand_computed_sequence_with_changing_lr():
    grads = [[0.3, -1.2, 0.0], [0.1, 0.4, 2.0], [-0.7, -0.2, 0.5], [1.5, 0.0, -0.1]]
    lrs = [0.01, 0.02, 0.03, 0.015]
    p = torch.nn.Parameter(torch.tensor([0.5, -0.25, 1.0], dtype=torch.float64))
    opt = AdamATan2([p], lr=0.0, betas=(0.9, 0.95), weight_decay=0.1)
    for g, lr in zip(grads, lrs):
        opt.param_groups[0]["lr"] = lr
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    for i, p0 in enumerate([0.5, -0.25, 1.0]):
        value, m, v = p0, 0.0, 0.0
        for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
            value = value * (1 - lr * 0.1)
            m = m + 0.1 * (g[i] - m)
            v = v + 0.05 * (g[i] ** 2 - v)
            value -= lr / (1 - 0.9 ** t) * math.atan2(m, math.sqrt(v) / math.sqrt(1 - 0.95 ** t))
        assert p[i].item() == pytest.approx(value, abs=1e-12)
    state = opt.state[p]
    assert state["step"].item() == 4.0 and state["step"].dtype == torch.float32
    assert set(state) == {"step", "exp_avg", "exp_avg_sq"}


def test_fp32_agrees_with_float64_reference():
    torch.manual_seed(1)
    p32 = torch.nn.Parameter(torch.randn(64))
    start = p32.detach().double().clone()
    opt = AdamATan2([p32], lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    grads = [torch.randn(64) for _ in range(5)]
    for g in grads:
        p32.grad = g.clone()
        opt.step()
    for i in range(0, 64, 7):
        history = [g[i].item() for g in grads]
        expected, _, _ = _hand_adam_atan2(start[i].item(), history, 1e-3, (0.9, 0.95), 0.1)
        assert p32[i].item() == pytest.approx(expected, abs=1e-6)


def test_params_without_grad_are_skipped_entirely():
    a = torch.nn.Parameter(torch.ones(3))
    b = torch.nn.Parameter(torch.ones(3))
    opt = AdamATan2([a, b], lr=0.1, weight_decay=0.5)
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(3)), "no decay may touch a parameter without a gradient"
    assert b not in opt.state
    b.grad = torch.ones(3)
    opt.step()
    assert opt.state[a]["step"].item() == 2 and opt.state[b]["step"].item() == 1
    # b's first step uses t=1 bias corrections, so it moves exactly like a did on its first step.
    assert b[0].item() == pytest.approx(1.0 * 0.95 - 0.1 / 0.1 * math.atan2(0.1, 1.0), abs=1e-6)


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    p1 = torch.nn.Parameter(torch.randn(5))
    p2 = torch.nn.Parameter(p1.detach().clone())
    o1 = AdamATan2([p1], lr=0.01, weight_decay=0.1)
    grads = [torch.randn(5) for _ in range(4)]
    for g in grads[:2]:
        p1.grad = g.clone()
        o1.step()
    p2.data.copy_(p1.data)
    o2 = AdamATan2([p2], lr=0.01, weight_decay=0.1)
    o2.load_state_dict(copy.deepcopy(o1.state_dict()))  # a fresh copy, as after a load from disk
    for g in grads[2:]:
        p1.grad, p2.grad = g.clone(), g.clone()
        o1.step()
        o2.step()
    assert torch.equal(p1.detach(), p2.detach())


class _Table(torch.nn.Module):
    """The puzzle_embedding contract: buffer ``weights``; ``local_weights``/``local_ids`` after a forward."""

    def __init__(self, rows: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("weights", torch.randn(rows, dim))
        self.local_weights = None
        self.local_ids = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.local_weights = self.weights[ids].clone().requires_grad_(True)
        self.local_ids = ids.to(torch.int32)
        return self.local_weights


def test_sign_sgd_touches_only_looked_up_rows():
    table = _Table(10, 4)
    before = table.weights.clone()
    ids = torch.tensor([2, 7, 2, 5])
    out = table(ids)
    scale = torch.tensor([1.0, -2.0, 3.0, 0.0])
    (out * scale[:, None]).sum().backward()
    opt = SparseSignSGD(table, lr=0.5, weight_decay=0.2)
    assert opt.step() == 3
    after = table.weights
    untouched = [i for i in range(10) if i not in (2, 5, 7)]
    assert torch.equal(after[untouched], before[untouched])
    # Row 2: grad sum = 1 + 3 = 4 > 0 per column; row 7: -2; row 5: 0 (decay only).
    assert torch.allclose(after[2], before[2] * 0.9 - 0.5)
    assert torch.allclose(after[7], before[7] * 0.9 + 0.5)
    assert torch.allclose(after[5], before[5] * 0.9)
    opt.zero_grad()
    assert table.local_weights.grad is None
    assert opt.step() == 0


def test_sign_sgd_sums_before_sign():
    table = _Table(3, 1)
    before = table.weights.clone()
    out = table(torch.tensor([1, 1]))
    (out * torch.tensor([[2.0], [-3.0]])).sum().backward()  # sum -1 → sign -1 (per-row signs would cancel)
    SparseSignSGD(table, lr=0.1, weight_decay=0.0).step()
    assert torch.allclose(table.weights[1], before[1] + 0.1)


def test_each_group_decays_by_its_own_weight_decay():
    # The loop builds AdamATan2 with the config's weight decay as the default and then sets each group's own
    # (ETRM's encoder gets 0.1x). Two groups with identical parameters and gradients but different decay must
    # end apart by exactly the decay difference: the moments, and so the atan2 update, are the same bits.
    lr, wd_decoder, wd_encoder, default_wd = 0.05, 0.4, 0.04, 0.7
    start = torch.tensor([1.5, -0.75, 2.0, 0.0], dtype=torch.float64)
    decoder = torch.nn.Parameter(start.clone())
    encoder = torch.nn.Parameter(start.clone())
    opt = AdamATan2([{"params": [decoder]}, {"params": [encoder]}], lr=lr, weight_decay=default_wd)
    opt.param_groups[0]["weight_decay"] = wd_decoder
    opt.param_groups[1]["weight_decay"] = wd_encoder
    grad = torch.tensor([0.3, -1.2, 0.0, 0.8], dtype=torch.float64)
    decoder.grad, encoder.grad = grad.clone(), grad.clone()
    opt.step()

    # Step 1 (t=1): update = lr/(1-β1) · atan2((1-β1)g, |g|), the same for both groups.
    update = torch.tensor([lr / 0.1 * math.atan2(0.1 * g, abs(g)) for g in grad.tolist()],
                          dtype=torch.float64)
    torch.testing.assert_close(decoder.detach(), start * (1 - lr * wd_decoder) - update, rtol=0, atol=1e-15)
    torch.testing.assert_close(encoder.detach(), start * (1 - lr * wd_encoder) - update, rtol=0, atol=1e-15)
    gap = (encoder - decoder).detach()
    torch.testing.assert_close(gap, start * lr * (wd_decoder - wd_encoder), rtol=0, atol=1e-15)
    assert gap[0].item() == pytest.approx(1.5 * 0.05 * 0.36, abs=1e-15)  # 0.027: visibly apart

    # Two more steps with a changing gradient: each group follows the hand-written update with its own decay.
    history = [grad.tolist()]
    for next_grad in ([0.1, 0.4, -2.0, 0.5], [-0.7, -0.2, 0.5, 0.0]):
        history.append(next_grad)
        decoder.grad = torch.tensor(next_grad, dtype=torch.float64)
        encoder.grad = decoder.grad.clone()
        opt.step()
    for param, wd in ((decoder, wd_decoder), (encoder, wd_encoder)):
        for i, p0 in enumerate(start.tolist()):
            expected, _, _ = _hand_adam_atan2(p0, [g[i] for g in history], lr, (0.9, 0.95), wd)
            assert param[i].item() == pytest.approx(expected, abs=1e-12)
