"""Demo encoders: gradient flow, packing = naive layout, padding invariance, zero-demo rows.

Run: .venv/bin/python -m pytest -q tests/test_encoders.py  (tiny shapes, fp32 on CPU, a few seconds)
"""

from __future__ import annotations

import pytest
import torch

from trmlab.errors import ConfigError, DataError
from trmlab.models.encoders import DemoEncoder, EncoderSettings, pack_demos

SIDE = 6
SEQ = SIDE * SIDE
TYPES = DemoEncoder.TYPES


def place(grid: torch.Tensor, side: int, top: int = 0, left: int = 0) -> torch.Tensor:
    """Canvas tokens of a grid at (top, left): colours + 2, EOS row/column, rest PAD (trm-reference §7.2)."""
    canvas = torch.zeros(side, side, dtype=torch.int32)
    h, w = grid.shape
    canvas[top:top + h, left:left + w] = grid + 2
    if top + h < side:
        canvas[top + h, left:left + w] = 1
    if left + w < side:
        canvas[top:top + h, left + w] = 1
    return canvas.flatten()


def demo_batch(counts: list[int], max_demos: int = 4, side: int = SIDE, seed: int = 0, max_hw: int = 4):
    """Random demos: row b has counts[b] real demos (input h×w, output its transpose) in the first slots."""
    gen = torch.Generator().manual_seed(seed)
    batch = len(counts)
    inputs = torch.zeros(batch, max_demos, side * side, dtype=torch.int32)
    labels = torch.zeros_like(inputs)
    mask = torch.zeros(batch, max_demos, dtype=torch.bool)
    for b, count in enumerate(counts):
        for k in range(count):
            h, w = (int(v) for v in torch.randint(1, max_hw + 1, (2,), generator=gen))
            grid = torch.randint(0, 10, (h, w), generator=gen, dtype=torch.int32)
            inputs[b, k] = place(grid, side)
            labels[b, k] = place(grid.T.contiguous(), side)
            mask[b, k] = True
    return inputs, labels, mask


def settings(**overrides) -> EncoderSettings:
    base = dict(hidden=32, num_heads=4, expansion=2.0, eps=1e-5, rope_theta=10000.0, prefix_len=3,
                vocab_size=12, num_layers=1, set_layers=1, latent_dim=8)
    base.update(overrides)
    return EncoderSettings(**base)


def build(encoder_type: str = "standard", packing: bool = True, seed: int = 0, **overrides) -> DemoEncoder:
    torch.manual_seed(seed)
    return DemoEncoder(encoder_type, settings(**overrides), packing=packing)


CONFIGS = [(t, {}) for t in TYPES] + [
    ("standard", {"pooling": "attention"}),
    ("standard", {"pooling": "weighted", "norm_style": "pre", "qk_norm": True, "layer_scale_init": 0.1}),
    ("hybrid_variational", {"norm_style": "pre", "set_layers": 2, "num_layers": 2}),
    ("standard", {"set_memory": "tokens"}),
    ("standard", {"set_memory": "tokens", "token_layout": "paired"}),
    ("lpn_variational", {"token_layout": "paired"}),
    ("standard", {"token_layout": "paired", "pooling": "attention"}),
]


@pytest.mark.parametrize(("encoder_type", "overrides"), CONFIGS)
def test_every_encoder_parameter_gets_gradient(encoder_type, overrides):
    encoder = build(encoder_type, **overrides).train()
    out = encoder(*demo_batch([2, 3, 1, 0]))
    weights = torch.randn_like(out.context)
    loss = (out.context * weights).sum() + (out.kl.sum() if out.kl is not None else 0)
    loss.backward()
    assert out.context.shape == (4, 3, 32)
    for name, param in encoder.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient reached {name}"
        assert torch.isfinite(param.grad).all(), name
    assert (out.kl is not None) == encoder_type.endswith("variational")


@pytest.mark.parametrize(("encoder_type", "overrides"), CONFIGS)
def test_packed_equals_full_canvas(encoder_type, overrides):
    packed = build(encoder_type, packing=True, **overrides).eval()
    naive = build(encoder_type, packing=False, **overrides).eval()
    naive.load_state_dict(packed.state_dict())
    batch = demo_batch([3, 1, 0, 4, 2], seed=3)
    with torch.no_grad():
        a, b = packed(*batch), naive(*batch)
    torch.testing.assert_close(a.context, b.context, atol=2e-5, rtol=1e-4)
    if a.kl is not None:
        torch.testing.assert_close(a.kl, b.kl, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("overrides", [{"pooling": "attention"}, {"set_memory": "tokens"},
                                       {"set_memory": "tokens", "token_layout": "paired"}])
def test_padded_slots_and_canvas_do_not_change_context(overrides):
    encoder = build("standard", **overrides).eval()
    inputs, labels, mask = demo_batch([2, 3], seed=1)
    with torch.no_grad():
        reference = encoder(inputs, labels, mask).context
        # Garbage in the padded slots must be ignored.
        junk_in, junk_lab = inputs.clone(), labels.clone()
        junk_in[~mask] = torch.randint(0, 12, junk_in[~mask].shape, dtype=torch.int32)
        junk_lab[~mask] = torch.randint(0, 12, junk_lab[~mask].shape, dtype=torch.int32)
        torch.testing.assert_close(encoder(junk_in, junk_lab, mask).context, reference)
        # A larger demo elsewhere in the batch enlarges the padded crop; row 0's context must not move.
        big_in, big_lab, big_mask = demo_batch([2, 3, 1], seed=1)
        big_in[2, 0] = place(torch.full((SIDE, SIDE), 3, dtype=torch.int32), SIDE)
        big_lab[2, 0] = big_in[2, 0]
        big = encoder(big_in, big_lab, big_mask).context
        torch.testing.assert_close(big[:2], reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("set_memory", "token_layout"), [("demos", "separate"), ("tokens", "separate"),
                                                         ("demos", "paired"), ("tokens", "paired")])
def test_translation_and_demo_order_invariance(set_memory, token_layout):
    encoder = build("standard", set_memory=set_memory, token_layout=token_layout).eval()
    inputs, labels, mask = demo_batch([3], seed=2, max_hw=3)
    moved_in, moved_lab = inputs.clone(), labels.clone()
    for k in range(3):  # shift every demo (input and output together) by (1, 2) on the canvas
        moved_in[0, k] = inputs[0, k].view(SIDE, SIDE).roll((1, 2), (0, 1)).flatten()
        moved_lab[0, k] = labels[0, k].view(SIDE, SIDE).roll((1, 2), (0, 1)).flatten()
    order = torch.tensor([2, 0, 1, 3])
    with torch.no_grad():
        reference = encoder(inputs, labels, mask).context
        moved = encoder(moved_in, moved_lab, mask).context
        torch.testing.assert_close(moved, reference, atol=1e-5, rtol=1e-4)
        shuffled = encoder(inputs[:, order], labels[:, order], mask[:, order]).context
        torch.testing.assert_close(shuffled, reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("encoder_type", "overrides"), [(t, {}) for t in TYPES]
                         + [("standard", {"set_memory": "tokens"})])
def test_zero_demo_rows_are_finite_and_zero(encoder_type, overrides):
    encoder = build(encoder_type, pooling="mean", **overrides).train()
    inputs, labels, mask = demo_batch([0, 2, 0])
    out = encoder(inputs, labels, mask)
    assert torch.isfinite(out.context).all()
    assert out.context[0].abs().sum() == 0 and out.context[2].abs().sum() == 0
    assert out.context[1].abs().sum() > 0
    assert out.has_demos.tolist() == [False, True, False]
    out.context.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)
    # A batch with no demo at all works too.
    none = encoder(*demo_batch([0, 0]))
    assert none.context.abs().sum() == 0


def test_context_scale_matches_token_embeddings():
    encoder = build("standard").eval()
    with torch.no_grad():
        context = encoder(*demo_batch([2, 3, 4])).context
    # After the decoder's ×√D the prefix should have RMS ≈ 1, like the token embeddings (std 1/√D × √D).
    rms = (context * 32 ** 0.5).square().mean().sqrt()
    assert 0.8 < float(rms) < 1.2


def test_packing_skips_padding():
    inputs, labels, mask = demo_batch([1, 0, 2], max_hw=2)
    packed = pack_demos(inputs, labels, mask)
    assert packed.sample.tolist() == [0, 2, 2] and packed.rank.tolist() == [0, 0, 1]
    # Crops are (2+1)×(2+1) cells at most (grid + EOS row/column), padded to 4×4, instead of the 6×6 canvas.
    assert packed.inputs.shape[1] <= 16  # 3×3 rounded up to 4×4


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ConfigError, match="encoder_type"):
        DemoEncoder("lpn", settings())
    with pytest.raises(ConfigError, match="pooling"):
        DemoEncoder("lpn_standard", settings(pooling="attention"))
    encoder = build()
    inputs, labels, mask = demo_batch([1])
    with pytest.raises(DataError, match="demo_mask"):
        encoder(inputs, labels, mask.int())
    with pytest.raises(DataError, match="square"):
        encoder(inputs[..., :35], labels[..., :35], mask)
