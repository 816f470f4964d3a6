"""Building blocks of the TRM network (trm-reference §2.2-§2.3, §2.7).

Numerics follow the official code exactly: fp32 master weights cast to the activation dtype, weightless
RMSNorm computed in fp32, rotate-half RoPE computed in fp32, fused ``qkv`` (Q|K|V, head-major) and ``gate_up``
(gate|up) projections, post-norm blocks. Names are trmlab's own; ``trmlab.interop.official_keys`` maps them to
the official state-dict keys.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F  # noqa: N812 (the usual alias)
from torch import nn


def trunc_normal_(tensor: torch.Tensor, std: float = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill ``tensor`` in place with the official JAX-style truncated normal (bounds ±2σ, std-corrected).

    The raw truncated normal on [-2, 2] has a std below 1; the official code compensates so the final std is
    ``std`` (comp_std ≈ 1.13686·std). ``std == 0`` fills zeros.
    """
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        lower, upper = -2.0, 2.0
        a = math.erf(lower / math.sqrt(2))
        b = math.erf(upper / math.sqrt(2))
        z = (b - a) / 2
        pdf = math.exp(-0.5 * upper**2) / math.sqrt(2 * math.pi)
        comp_std = std / math.sqrt(1 - 4 * pdf / z)
        tensor.uniform_(a, b, generator=generator)
        tensor.erfinv_()
        tensor.mul_(math.sqrt(2) * comp_std)
        tensor.clamp_(lower * comp_std, upper * comp_std)
    return tensor


def swiglu_width(hidden: int, expansion: float) -> int:
    """Inner width of the SwiGLU: round(2/3·expansion·hidden) rounded up to a multiple of 256.

    Python's ``round`` (banker's rounding) on purpose: it is what the official code uses.
    """
    inner = round(expansion * hidden * 2 / 3)
    return -(inner // -256) * 256


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Weightless RMSNorm over the last axis, computed in fp32 and returned in ``x``'s dtype."""
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)
    return x32.to(x.dtype)


class CastLinear(nn.Module):
    """A linear layer with fp32 master weights applied in the activation dtype.

    ``weight_cast(dtype)`` (see :func:`weights_cast_once`) lets a whole ACT step share one cast of each weight
    instead of re-casting at every block call; when the dtypes already agree nothing is cast at all.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._cached: tuple[torch.Tensor, torch.Tensor | None] | None = None
        trunc_normal_(self.weight, std=1.0 / math.sqrt(in_features))

    def weights_in(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) in ``dtype``: the step's shared cast when there is one, else cast now."""
        if self._cached is not None and self._cached[0].dtype == dtype:
            return self._cached
        if self.weight.dtype == dtype:
            return self.weight, self.bias
        return self.weight.to(dtype), None if self.bias is None else self.bias.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, *self.weights_in(x.dtype))


class CastEmbedding(nn.Module):
    """An embedding table with an fp32 master ``weight``; rows are looked up, then cast (same numbers as the
    official cast-then-lookup, without casting the whole table)."""

    def __init__(self, num: int, dim: int, init_std: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num, dim))
        trunc_normal_(self.weight, std=init_std)

    def forward(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return F.embedding(ids.long(), self.weight).to(dtype)


# Benchmarks set this to False to measure the official behaviour (a cast of every weight at every call).
CAST_ONCE_PER_STEP = True


@contextmanager
def weights_cast_once(module: nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """Within the block, every :class:`CastLinear` of ``module`` reuses one ``dtype`` copy of its weights.

    The copies are made with autograd enabled, so gradients flow to the fp32 masters exactly as with per-call
    casts. No-op when the weights already have ``dtype`` (the fp32 path).
    """
    if not CAST_ONCE_PER_STEP:
        yield
        return
    linears = [m for m in module.modules() if isinstance(m, CastLinear) and m.weight.dtype != dtype]
    for lin in linears:
        lin._cached = (lin.weight.to(dtype), None if lin.bias is None else lin.bias.to(dtype))
    try:
        yield
    finally:
        for lin in linears:
            lin._cached = None


def rotary_tables(length: int, head_dim: int, theta: float, device: torch.device | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [length, head_dim] in fp32 for rotate-half RoPE (positions 0..length-1)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    positions = torch.arange(length, dtype=torch.float32, device=device)
    freqs = torch.outer(positions, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) → (−x2, x1) on the two halves of the last axis (GPT-NeoX convention)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [B, L, heads, head_dim] in fp32 with tables [L, head_dim]; returns ``x``'s dtype."""
    x32 = x.float()
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    return (x32 * cos + rotate_half(x32) * sin).to(x.dtype)


# `bench_vs_official.py --trace-ops` sets this to False to trace, on the CPU, the calls a GPU makes.
ROTATE_QK_TOGETHER_ON_CPU = True


def rotate_qk(qkv: torch.Tensor, heads: int, cos: torch.Tensor, sin: torch.Tensor, *, together: bool
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """q and k of a fused projection ``qkv`` [B, L, 3·heads, head_dim], rotated.

    The values are the same either way; the layout is not. ``together`` rotates q|k as one tensor (fewer,
    larger elementwise ops: 3-8% faster steps on the CPU, ``benchmarks/ab_rotate_qk.py``; the CPU's attention
    gives the same bits for both layouts). Otherwise q and k are rotated separately, as officially, and come
    out with the official strides: a GPU attention backend may choose its kernel by layout
    (``bench_vs_official.py --trace-ops``).
    """
    if together:
        qk = apply_rotary(qkv[:, :, : 2 * heads], cos, sin)
        return qk[:, :, :heads], qk[:, :, heads:]
    return apply_rotary(qkv[:, :, :heads], cos, sin), apply_rotary(qkv[:, :, heads : 2 * heads], cos, sin)


class SelfAttention(nn.Module):
    """Non-causal multi-head attention without mask; fused ``qkv`` output laid out Q|K|V, each head-major."""

    def __init__(self, hidden: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden // num_heads
        self.qkv = CastLinear(hidden, 3 * hidden)
        self.out = CastLinear(hidden, hidden)

    def forward(self, h: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        batch, length, _ = h.shape
        heads = self.num_heads
        qkv = self.qkv(h).view(batch, length, 3 * heads, self.head_dim)
        v = qkv[:, :, 2 * heads :]
        if rotary is None:
            q, k = qkv[:, :, :heads], qkv[:, :, heads : 2 * heads]
        else:
            together = ROTATE_QK_TOGETHER_ON_CPU and h.device.type == "cpu"
            q, k = rotate_qk(qkv, heads, *rotary, together=together)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.out(attn.transpose(1, 2).reshape(batch, length, heads * self.head_dim))


class SwiGLU(nn.Module):
    """``down(silu(gate) · up)`` with ``gate_up`` = [gate | up] along its output axis."""

    def __init__(self, width: int, expansion: float) -> None:
        super().__init__()
        inner = swiglu_width(width, expansion)
        self.gate_up = CastLinear(width, 2 * inner)
        self.down = CastLinear(inner, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, _ = self.gate_up.weights_in(x.dtype)
        if torch.is_grad_enabled():
            # Under autograd one matmul and a chunk, as officially: the split form below computes the same
            # values, but its backward sums the input gradient of two matmuls, which moved gradients by up to
            # 2.4e-7 from the official ones; this way they are bit-identical (benchmarks/README.md).
            gate, up = F.linear(x, weight).chunk(2, dim=-1)
        else:
            # Without autograd, two matmuls on the halves of the fused weight: each output element is the same
            # dot product (bit-identical), but gate and up come out contiguous, which makes silu and the
            # product ~3x faster on CPU than on the strided halves of one [.., 2·inner] result. On an H200
            # (bf16, ARC shape, when this form also ran under autograd) eager evaluation was 1.13x the
            # official code against 1.04x with one fused matmul and a chunk, with the same logits either way
            # (benchmarks/README.md, "GPU").
            inner = weight.shape[0] // 2
            gate, up = F.linear(x, weight[:inner]), F.linear(x, weight[inner:])
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    """Post-norm block: token mixing (attention, or the mlp_t sequence MLP), then the channel MLP."""

    def __init__(self, hidden: int, num_heads: int, expansion: float, eps: float,
                 mlp_t: bool = False, total_len: int = 0) -> None:
        super().__init__()
        self.eps = eps
        if mlp_t:
            self.token_mixer = SwiGLU(total_len, expansion)
        else:
            self.attn = SelfAttention(hidden, num_heads)
        self.mlp = SwiGLU(hidden, expansion)

    def forward(self, h: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        if hasattr(self, "token_mixer"):
            # Mix along the sequence: the norm is over the sequence axis too, as officially.
            t = h.transpose(1, 2)
            h = rms_norm(t + self.token_mixer(t), self.eps).transpose(1, 2)
        else:
            h = rms_norm(h + self.attn(h, rotary), self.eps)
        return rms_norm(h + self.mlp(h), self.eps)
