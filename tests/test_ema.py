"""EMA: the official formula, fp32, only applied by explicit updates. Run: pytest -q tests/test_ema.py"""

from __future__ import annotations

import torch

from trmlab.training.ema import EMA


def _model():
    model = torch.nn.Linear(3, 2)
    model.register_buffer("H_init", torch.ones(2))
    return model


def test_update_formula_and_buffers_not_tracked():
    model = _model()
    ema = EMA(model, 0.9)
    assert set(ema.shadow) == {"weight", "bias"}
    start = {k: v.clone() for k, v in ema.shadow.items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    expected = (1 - 0.9) * model.weight.detach() + 0.9 * start["weight"]
    assert torch.equal(ema.shadow["weight"], expected)
    assert torch.equal(ema.shadow["bias"], start["bias"])
    assert ema.num_updates == 1


def test_shadow_is_fp32_and_swap_restores():
    model = _model().to(torch.float64)
    ema = EMA(model, 0.5)
    assert all(t.dtype == torch.float32 for t in ema.shadow.values())
    live = model.weight.detach().clone()
    with torch.no_grad():
        ema.shadow["weight"].fill_(7.0)
    with ema.swapped_in(model):
        assert torch.all(model.weight == 7.0)
    assert torch.equal(model.weight.detach(), live)


def test_shadow_is_a_copy_that_moves_only_on_update():
    model = _model()
    ema = EMA(model, 0.5)
    start = ema.shadow["weight"].clone()
    with torch.no_grad():
        model.weight.mul_(3).add_(1)
    assert torch.equal(ema.shadow["weight"], start), "the shadow must not alias the live weights"
    ema.update(model)
    assert torch.equal(ema.shadow["weight"], 0.5 * model.weight.detach() + 0.5 * start)
    # In training, the loop's EMA equals the hand-computed one step by step:
    # tests/test_train.py::test_ema_is_one_official_update_per_optimizer_step.


def test_state_dict_round_trip():
    model = _model()
    ema = EMA(model, 0.99)
    ema.update(model)
    other = EMA(_model(), 0.99)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 1
    assert torch.equal(other.shadow["weight"], ema.shadow["weight"])
