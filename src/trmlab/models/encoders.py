"""Demonstration encoders: a task's demo pairs → a context [B, P, D] that takes the puzzle embedding's place.

Input: ``demo_inputs``, ``demo_labels`` int [B, K, S] (S = C·C canvas tokens, PAD 0) and ``demo_mask`` bool
[B, K]. Output: :class:`EncoderOutput` with ``context`` [B, P, D] (P = puzzle_emb_len, D = hidden_size), a
per-sample ``kl`` [B] for the variational encoders, and ``has_demos`` [B].

Two stages (etrm-reference §3, with its defects fixed):

1. **Grid encoder** → one vector per demo. Only the *real* demos of the batch are encoded (packed, no compute
   on padded slots), and only their content: each demo is cropped to the bounding box of its non-PAD cells
   (grid plus EOS row/column, input and output together) and the batch is padded to the largest crop. Keys and
   pooling see only non-PAD tokens, and RoPE uses the tokens' canvas positions, so neither padded slots nor
   padded canvas cells change any result (``packing=False`` runs the same function over every slot at full
   canvas: the naive baseline the benchmark compares against).
2. **Aggregator** over the demo set → [B, P, D]: P learned queries cross-attending to the demo vectors
   (``standard``, ``hybrid_*``) or a masked mean over demos projected to P·D (``lpn_*``), optionally through a
   per-sample Gaussian latent (``*_variational``).

Two trmlab options beyond the reference: ``token_layout="paired"`` (one grid-encoder token per cell carrying
its input and output colours, instead of one token each) and, for ``standard``, ``set_memory="tokens"`` (the
queries attend to every real token of every demo instead of one pooled vector per demo; no pooling stage).

The context is RMS-normalised and multiplied by a learned per-channel gain initialised to 1/√D, so after the
decoder's ×√D input scaling its prefix has the same scale as the token embeddings (RMS ≈ 1) instead of √D
(etrm-reference §9.17). Samples without any demo get an all-zero context (no NaN from fully masked rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from trmlab.data.format import canvas_side
from trmlab.errors import ConfigError, DataError
from trmlab.models.layers import CastEmbedding, CastLinear, SwiGLU, rms_norm, trunc_normal_

PAD_ID = 0
LOGVAR_CLAMP = 10.0  # |log σ²| bound of the variational encoders (keeps exp() finite in bf16)
CROP_MULTIPLE = 4    # padded crop sides are rounded up to a multiple of this (see pack_demos)
LOGVAR_INIT = -4.0   # initial log σ²: small posterior noise, so early sampling does not drown the signal
# Init std of the set encoder's P learned queries. The reference used 0.02: after the post-norm residual the
# attention output (RMS ≈ 1) drowns such queries, so all P context tokens start out nearly identical and the
# decoder cannot tell them apart (measured on the few-shot benchmark: effective rank of the context 4.5 vs 11
# at step 100, loss 0.43 vs 0.29 at step 600). At RMS 1 each query keeps its own identity and attention
# pattern.
QUERY_INIT_STD = 1.0
RESEARCH_QUERY_INIT_STD = 0.02
RESEARCH_ROPE_THETA = 10000.0  # the research grid encoder's RoPE base, fixed whatever arch.rope_theta says
# Encoder types whose research numerics trmlab reproduces (arch.encoder_numerics = research).
RESEARCH_ENCODER_TYPES = ("standard", "lpn_standard", "lpn_variational", "hybrid_standard",
                          "hybrid_variational", "lpn", "lpn_var")
PAPER_LPN_TYPES = ("lpn", "lpn_var")  # research numerics only (trmlab.models.lpn_paper)


# ----------------------------------------------------------------------------------------------------------
# Building blocks: the decoder's (fp32 master weights cast to the activation dtype, weightless fp32
# RMSNorm, TRM's SwiGLU) plus what the encoder needs beyond them: per-token RoPE positions, key masks,
# cross-attention, pre-norm, qk-norm and layer scale.


def rope_tables(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos/sin [..., L, head_dim] (fp32) for integer ``positions`` [..., L] (rotate-half convention)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32)
                                / head_dim))
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` [N, H, L, hd] by per-token tables [N, L, hd] (or [L, hd]), in fp32."""
    x32 = x.float()
    half = x32.shape[-1] // 2
    rotated = torch.cat((-x32[..., half:], x32[..., :half]), dim=-1)
    cos, sin = cos.unsqueeze(-3), sin.unsqueeze(-3)  # broadcast over heads
    return (x32 * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    """Multi-head attention with a key mask; self-attention (fused qkv, optional RoPE) or cross-attention.

    ``key_mask`` [N, Lk] bool (True = attend) must allow at least one key per row; callers guarantee it so
    that no softmax is taken over an empty set (the research code's NaN path); ``None`` attends to every key.
    ``separate_kv`` (cross-attention): separate ``k_proj`` / ``v_proj`` weights, the research code's layout.
    """

    def __init__(self, hidden: int, num_heads: int, *, cross: bool, qk_norm: bool, eps: float,
                 separate_kv: bool = False):
        super().__init__()
        if hidden % num_heads:
            raise ConfigError(f"arch.hidden_size {hidden} is not divisible by arch.num_heads {num_heads}")
        self.num_heads, self.head_dim, self.cross = num_heads, hidden // num_heads, cross
        self.qk_norm, self.eps = qk_norm, eps
        if cross:
            self.q_proj = CastLinear(hidden, hidden)
            if separate_kv:
                self.k_proj = CastLinear(hidden, hidden)
                self.v_proj = CastLinear(hidden, hidden)
            else:
                self.kv_proj = CastLinear(hidden, 2 * hidden)
        else:
            self.qkv_proj = CastLinear(hidden, 3 * hidden)
        self.o_proj = CastLinear(hidden, hidden)

    def _heads(self, x: Tensor) -> Tensor:
        n, length, _ = x.shape
        return x.view(n, length, self.num_heads, self.head_dim).transpose(1, 2)  # [N, H, L, hd]

    def forward(self, x: Tensor, key_mask: Tensor | None, *, memory: Tensor | None = None,
                rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        if self.cross:
            q = self._heads(self.q_proj(x))
            if hasattr(self, "kv_proj"):
                k, v = (self._heads(t) for t in self.kv_proj(memory).chunk(2, dim=-1))
            else:
                k, v = self._heads(self.k_proj(memory)), self._heads(self.v_proj(memory))
        else:
            q, k, v = (self._heads(t) for t in self.qkv_proj(x).chunk(3, dim=-1))
        if self.qk_norm:
            q, k = rms_norm(q, self.eps), rms_norm(k, self.eps)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        n, _, length, _ = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(n, length, self.num_heads * self.head_dim))


class Block(nn.Module):
    """Attention + SwiGLU, post-norm (TRM's) or pre-norm, with optional CaiT layer scale."""

    def __init__(self, hidden: int, num_heads: int, expansion: float, *, cross: bool, norm_style: str,
                 qk_norm: bool, layer_scale_init: float, eps: float, separate_kv: bool = False):
        super().__init__()
        if norm_style not in ("post", "pre"):
            raise ConfigError(f"arch.encoder_norm_style must be 'post' or 'pre', got {norm_style!r}")
        self.attn = Attention(hidden, num_heads, cross=cross, qk_norm=qk_norm, eps=eps,
                              separate_kv=separate_kv)
        self.mlp = SwiGLU(hidden, expansion)
        self.pre_norm, self.eps = norm_style == "pre", eps
        if layer_scale_init > 0:
            self.attn_scale = nn.Parameter(torch.full((hidden,), float(layer_scale_init)))
            self.mlp_scale = nn.Parameter(torch.full((hidden,), float(layer_scale_init)))
        else:
            self.attn_scale = self.mlp_scale = None

    @staticmethod
    def _scaled(x: Tensor, scale: Tensor | None) -> Tensor:
        return x if scale is None else x * scale.to(x.dtype)

    def forward(self, h: Tensor, key_mask: Tensor | None, *, memory: Tensor | None = None,
                rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        if self.pre_norm:
            h = h + self._scaled(self.attn(rms_norm(h, self.eps), key_mask, memory=memory, rope=rope),
                                 self.attn_scale)
            return h + self._scaled(self.mlp(rms_norm(h, self.eps)), self.mlp_scale)
        attn = self.attn(h, key_mask, memory=memory, rope=rope)
        h = rms_norm(h + self._scaled(attn, self.attn_scale), self.eps)
        return rms_norm(h + self._scaled(self.mlp(h), self.mlp_scale), self.eps)


# ----------------------------------------------------------------------------------------------------------
# Packing: the real demos of a batch, cropped to their content.


@dataclass
class PackedDemos:
    """The demos to encode, as token sequences [N, L] = [input crop; output crop] (flattened row-major)."""

    inputs: Tensor      # [N, L/2] input tokens
    outputs: Tensor     # [N, L/2] output tokens
    positions: Tensor   # [N, L] canvas position of each token (input and output cell i → i), for RoPE
    real: Tensor        # [N, L] bool: non-PAD tokens inside the demo's own crop
    sample: Tensor      # [N] long: batch row of each demo
    rank: Tensor        # [N] long: index of the demo among its row's real demos


def _check_demo_batch(demo_inputs: Tensor, demo_labels: Tensor, demo_mask: Tensor) -> None:
    if demo_inputs.dim() != 3 or demo_inputs.shape != demo_labels.shape:
        raise DataError(f"batch demo_inputs {tuple(demo_inputs.shape)} / demo_labels "
                        f"{tuple(demo_labels.shape)}: "
                        f"expected two int tensors of the same shape [B, max_demos, seq_len]")
    if demo_mask.shape != demo_inputs.shape[:2] or demo_mask.dtype != torch.bool:
        raise DataError(f"batch demo_mask {tuple(demo_mask.shape)} {demo_mask.dtype}: expected bool "
                        f"[B, max_demos] = {tuple(demo_inputs.shape[:2])}")


def pack_demos(demo_inputs: Tensor, demo_labels: Tensor, demo_mask: Tensor) -> PackedDemos:
    """Gather the real demos (``demo_mask``) and crop each to its non-PAD bounding box.

    The crop is the union of the input's and output's boxes (they share the canvas offset), padded to the
    batch's largest crop; cells outside a demo's own box are marked not real, so padding never matters.
    """
    _check_demo_batch(demo_inputs, demo_labels, demo_mask)
    seq_len = demo_inputs.shape[-1]
    side = canvas_side(seq_len, user="demo encoder")
    sample, slot = demo_mask.nonzero(as_tuple=True)
    rank = (demo_mask.long().cumsum(1) - 1)[sample, slot]
    inputs, outputs = demo_inputs[sample, slot], demo_labels[sample, slot]  # [N, S]
    content = ((inputs != PAD_ID) | (outputs != PAD_ID)).view(-1, side, side)
    rows, cols = content.any(2), content.any(1)  # [N, C]
    arange_c = torch.arange(side, device=demo_inputs.device)
    # First/last True index; an all-PAD demo (malformed data) gets a 1×1 box of PAD, i.e. no real token.
    top = torch.where(rows, arange_c, side).amin(1).clamp(max=side - 1)
    left = torch.where(cols, arange_c, side).amin(1).clamp(max=side - 1)
    height = (torch.where(rows, arange_c, -1).amax(1) - top + 1).clamp(min=1)
    width = (torch.where(cols, arange_c, -1).amax(1) - left + 1).clamp(min=1)
    if sample.numel():
        crop_h, crop_w = int(height.max()), int(width.max())  # one host sync: the padded crop shape
    else:
        crop_h = crop_w = 1
    # Round the padded crop up to a multiple of CROP_MULTIPLE (capped at the canvas): few distinct shapes, so
    # GPU kernels and allocator blocks are reused across batches (a new shape each batch costs more than the
    # extra masked cells). Masks make the result independent of it.
    crop_h = min(-(-crop_h // CROP_MULTIPLE) * CROP_MULTIPLE, side)
    crop_w = min(-(-crop_w // CROP_MULTIPLE) * CROP_MULTIPLE, side)
    dr = torch.arange(crop_h, device=demo_inputs.device)
    dc = torch.arange(crop_w, device=demo_inputs.device)
    inside = (dr[None, :, None] < height[:, None, None]) & (dc[None, None, :] < width[:, None, None])
    r = (top[:, None] + dr).clamp(max=side - 1)
    c = (left[:, None] + dc).clamp(max=side - 1)
    flat = (r[:, :, None] * side + c[:, None, :]).reshape(len(sample), crop_h * crop_w)  # canvas indices
    inside = inside.reshape(len(sample), crop_h * crop_w)
    crop_in, crop_out = inputs.gather(1, flat), outputs.gather(1, flat)
    real = torch.cat((inside & (crop_in != PAD_ID), inside & (crop_out != PAD_ID)), dim=1)
    positions = torch.cat((flat, flat), dim=1)
    return PackedDemos(crop_in, crop_out, positions, real, sample, rank)


def full_canvas_demos(demo_inputs: Tensor, demo_labels: Tensor, demo_mask: Tensor) -> PackedDemos:
    """Every slot at full canvas (the naive layout): B·K sequences of 2·S tokens (padded slots: none real)."""
    _check_demo_batch(demo_inputs, demo_labels, demo_mask)
    batch, slots, seq_len = demo_inputs.shape
    inputs, outputs = demo_inputs.reshape(-1, seq_len), demo_labels.reshape(-1, seq_len)
    real = torch.cat((inputs != PAD_ID, outputs != PAD_ID), dim=1) & demo_mask.reshape(-1, 1)
    positions = torch.arange(seq_len, device=demo_inputs.device).repeat(2).expand(batch * slots, -1)
    grid = torch.arange(batch * slots, device=demo_inputs.device)
    return PackedDemos(inputs, outputs, positions, real, grid // slots, grid % slots)


def research_canvas_demos(demo_inputs: Tensor, demo_labels: Tensor, demo_mask: Tensor) -> PackedDemos:
    """Every demo slot at full canvas in the research code's layout: B·K sequences of 2·S tokens at RoPE
    positions 0..2·S−1 (the output grid offset by S), in slot order, padded slots included.

    The padded slots are encoded because the research code encodes them (and zeroes their vectors only
    afterwards, as :func:`encode_demo_grids` does). Encoding only the real demos gives the same numbers in
    exact arithmetic but not in floating point: a matmul's rounding may depend on how many rows it multiplies
    (the BLAS kernel's row blocking). With MKL's reproducible path (``MKL_CBWR=COMPATIBLE``) a real demo's
    state moved by up to 1.4e-6 when its batch lacked the padded slots, and a decoder at the research init's
    weight scale amplifies a context difference about tenfold per ACT step: 2.3e-4 in the logits by step 3,
    or, in issue 21's report, 0.061. With the research code's batch every matmul gets its operands."""
    _check_demo_batch(demo_inputs, demo_labels, demo_mask)
    batch, slots, seq_len = demo_inputs.shape
    inputs, outputs = demo_inputs.reshape(-1, seq_len), demo_labels.reshape(-1, seq_len)
    real = torch.cat((inputs != PAD_ID, outputs != PAD_ID), dim=1)
    positions = torch.arange(2 * seq_len, device=demo_inputs.device).expand(batch * slots, -1)
    every = torch.arange(batch * slots, device=demo_inputs.device)
    return PackedDemos(inputs, outputs, positions, real, every // slots, every % slots)


# ----------------------------------------------------------------------------------------------------------
# Stage 1: grid encoder (one vector per demo).


class GridEncoder(nn.Module):
    """[input; output] tokens of one demo → one vector [D].

    Separate input/output embeddings (×√D), RoPE over canvas positions (an output cell shares its input cell's
    position, since both grids share the canvas offset: corresponding cells are at relative distance 0, which
    makes cell-wise rules easy to read; the embeddings tell the two grids apart), ``num_layers`` blocks
    attending only to the demo's real tokens, pooling over real tokens (``mean``, ``attention``: a learned
    query, ``weighted``: a learned per-token score, ``cls``: a learned CLS token without rotation), then a D→D
    projection.

    ``research=True`` computes what the research code's DemoGridEncoder computes (fed by
    :func:`research_canvas_demos`): every token attends to every token of the full canvas, PAD included; no
    final norm after pre-norm blocks; a [1, D] pooling query with separate k/v projections; a bias-free
    weighted-pooling score.
    """

    def __init__(self, *, hidden: int, num_heads: int, expansion: float, num_layers: int, vocab_size: int,
                 pooling: str, norm_style: str, qk_norm: bool, layer_scale_init: float, eps: float,
                 rope_theta: float, token_layout: str = "separate", research: bool = False):
        super().__init__()
        self.research = research
        if token_layout not in ("separate", "paired"):
            raise ConfigError(f"arch.encoder_token_layout must be 'separate' or 'paired', "
                              f"got {token_layout!r}")
        self.paired = token_layout == "paired"
        if pooling not in ("mean", "attention", "weighted", "cls", "none"):
            raise ConfigError(f"arch.encoder_pooling_method must be mean, attention or weighted, "
                              f"got {pooling!r}")
        self.hidden, self.pooling, self.eps, self.rope_theta = hidden, pooling, eps, rope_theta
        self.head_dim = hidden // num_heads
        self.input_embedding = CastEmbedding(vocab_size, hidden, init_std=1 / math.sqrt(hidden))
        self.output_embedding = CastEmbedding(vocab_size, hidden, init_std=1 / math.sqrt(hidden))
        self.layers = nn.ModuleList(
            Block(hidden, num_heads, expansion, cross=False, norm_style=norm_style, qk_norm=qk_norm,
                  layer_scale_init=layer_scale_init, eps=eps) for _ in range(num_layers))
        self.pre_norm = norm_style == "pre"
        if pooling == "cls":
            cls_shape = (1, 1, hidden) if research else (hidden,)
            self.cls_token = nn.Parameter(trunc_normal_(torch.empty(cls_shape), 0.02))
        elif pooling == "attention":
            query_shape = (1, hidden) if research else (hidden,)
            self.pool_query = nn.Parameter(trunc_normal_(torch.empty(query_shape), 0.02))
            self.pool_attn = Attention(hidden, num_heads, cross=True, qk_norm=qk_norm, eps=eps,
                                       separate_kv=research)
        elif pooling == "weighted":
            self.pool_score = CastLinear(hidden, 1, bias=not research)
        # "none": only token_states is used (encoder_set_memory = tokens); the research LPN grid encoder
        # returns the normalised CLS state as is.
        if pooling != "none" and not (research and pooling == "cls"):
            self.pool_proj = CastLinear(hidden, hidden)

    def forward(self, demos: PackedDemos, dtype: torch.dtype) -> Tensor:
        """Demo vectors [N, D] (all-zero for a demo without any real token)."""
        h, _, keys, has_real = self.token_states(demos, dtype)
        pooled = self._pool(h, keys)
        if hasattr(self, "pool_proj"):
            pooled = self.pool_proj(pooled)
        return torch.where(has_real[:, None], pooled, torch.zeros_like(pooled))

    def token_states(self, demos: PackedDemos, dtype: torch.dtype
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(states [N, L', D] after the blocks, real [N, L'], key mask [N, L'], has_real [N]).

        L' = 2·cells (``separate``: input tokens then output tokens) or cells (``paired``), +1 with a CLS
        token first. ``real`` marks real tokens; the key mask equals it except that a demo without any keeps
        its first key, so no softmax runs over an empty set."""
        inputs = self.input_embedding(demos.inputs, dtype)
        outputs = self.output_embedding(demos.outputs, dtype)
        if self.paired:  # one token per cell: its input and output colours together
            cells = demos.inputs.shape[1]
            tokens = (inputs + outputs) * math.sqrt(self.hidden)
            positions, real = demos.positions[:, :cells], demos.real[:, :cells] | demos.real[:, cells:]
        else:
            tokens = torch.cat((inputs, outputs), dim=1) * math.sqrt(self.hidden)
            positions, real = demos.positions, demos.real
        cos, sin = rope_tables(positions, self.head_dim, self.rope_theta)
        if self.pooling == "cls":
            n = tokens.shape[0]
            tokens = torch.cat((self.cls_token.to(dtype).expand(n, 1, -1), tokens), dim=1)
            # The CLS token is not rotated (cos 1, sin 0), so it has no position.
            cos = torch.cat((cos.new_ones(n, 1, cos.shape[-1]), cos), dim=1)
            sin = torch.cat((sin.new_zeros(n, 1, sin.shape[-1]), sin), dim=1)
            real = torch.cat((real.new_ones(n, 1), real), dim=1)
        has_real = real.any(1)
        # A demo without real tokens still needs one attendable key (its output is zeroed below).
        keys = torch.cat((real[:, :1] | ~has_real[:, None], real[:, 1:]), dim=1)
        h = tokens
        attend = None if self.research else keys  # the research code masks nothing: PAD is attended
        for layer in self.layers:
            h = layer(h, attend, rope=(cos, sin))
        if self.pre_norm and not self.research:
            h = rms_norm(h, self.eps)
        return h, real, keys, has_real

    def _pool(self, h: Tensor, keys: Tensor) -> Tensor:
        if self.pooling == "cls":
            return rms_norm(h[:, 0], self.eps)
        if self.pooling == "mean":
            weights = keys.to(h.dtype)
            return (h * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)
        if self.pooling == "weighted":
            scores = self.pool_score(h).squeeze(-1).float().masked_fill(~keys, float("-inf"))
            return (scores.softmax(-1).to(h.dtype)[..., None] * h).sum(1)
        query = self.pool_query.to(h.dtype).expand(h.shape[0], 1, -1)
        return self.pool_attn(query, keys, memory=h).squeeze(1)


def demo_slots(demo_mask: Tensor) -> int:
    """Set slots of a packed batch: its largest real-demo count (≥ 1; one host sync)."""
    return max(int(demo_mask.sum(1).max()), 1) if demo_mask.shape[0] else 1


def encode_demo_grids(grid: GridEncoder, demo_inputs: Tensor, demo_labels: Tensor, demo_mask: Tensor,
                      dtype: torch.dtype, *, packing: bool = True, slots: int | None = None
                      ) -> tuple[Tensor, Tensor]:
    """Demo vectors in set layout: (vectors [B, K', D], mask [B, K']).

    Packed: only the real demos are encoded, then placed in the first slots of their row (K' = ``slots``, or
    the batch's largest demo count). Naive (``packing=False``): every slot at full canvas, K' = max_demos.
    A research grid encoder: every slot at full canvas in the research layout, padded slots zeroed after
    encoding (K' = max_demos).
    """
    batch = demo_mask.shape[0]
    if grid.research:  # every slot encoded (see research_canvas_demos), padded ones zeroed afterwards
        vectors = grid(research_canvas_demos(demo_inputs, demo_labels, demo_mask), dtype)
        vectors = vectors.view(*demo_mask.shape, grid.hidden)
        return torch.where(demo_mask[..., None], vectors, torch.zeros_like(vectors)), demo_mask
    if not packing:
        vectors = grid(full_canvas_demos(demo_inputs, demo_labels, demo_mask), dtype)
        return vectors.view(*demo_mask.shape, grid.hidden), demo_mask
    else:
        demos = pack_demos(demo_inputs, demo_labels, demo_mask)
        slots = slots if slots is not None else demo_slots(demo_mask)
    index = demos.sample * slots + demos.rank
    vectors = grid(demos, dtype)
    placed = vectors.new_zeros(batch * slots, grid.hidden).index_copy(0, index, vectors)
    mask = torch.zeros(batch * slots, dtype=torch.bool, device=demo_mask.device).index_fill(0, index, True)
    return placed.view(batch, slots, grid.hidden), mask.view(batch, slots)


def encode_demo_tokens(grid: GridEncoder, demo_inputs: Tensor, demo_labels: Tensor, demo_mask: Tensor,
                       dtype: torch.dtype, *, packing: bool = True) -> tuple[Tensor, Tensor]:
    """Every demo token's state in set layout, for ``encoder_set_memory = tokens``: (memory [B, K'·L, D],
    mask [B, K'·L]) with mask True exactly on the real tokens of real demos (K' as in
    :func:`encode_demo_grids`, L the padded crop's token count)."""
    batch = demo_mask.shape[0]
    if not packing:
        h, real, _, _ = grid.token_states(full_canvas_demos(demo_inputs, demo_labels, demo_mask), dtype)
        return h.reshape(batch, -1, grid.hidden), real.reshape(batch, -1)
    demos = pack_demos(demo_inputs, demo_labels, demo_mask)
    slots = demo_slots(demo_mask)
    index = demos.sample * slots + demos.rank
    h, real, _, _ = grid.token_states(demos, dtype)
    length = h.shape[1]
    memory = h.new_zeros(batch * slots, length, grid.hidden).index_copy(0, index, h)
    mask = real.new_zeros(batch * slots, length).index_copy(0, index, real)
    return memory.view(batch, slots * length, grid.hidden), mask.view(batch, slots * length)


# ----------------------------------------------------------------------------------------------------------
# Stage 2: aggregation over the demo set.


class SetEncoder(nn.Module):
    """P learned queries cross-attending to the demo vectors (masked), ``num_layers`` deep, final RMSNorm.

    ``research=True``: the research code's DemoSetEncoder (separate k/v projections, queries drawn with std
    0.02)."""

    def __init__(self, *, hidden: int, num_heads: int, expansion: float, num_layers: int, prefix_len: int,
                 norm_style: str, qk_norm: bool, layer_scale_init: float, eps: float, research: bool = False):
        super().__init__()
        self.eps = eps
        query_std = RESEARCH_QUERY_INIT_STD if research else QUERY_INIT_STD
        self.queries = nn.Parameter(trunc_normal_(torch.empty(prefix_len, hidden), query_std))
        self.layers = nn.ModuleList(
            Block(hidden, num_heads, expansion, cross=True, norm_style=norm_style, qk_norm=qk_norm,
                  layer_scale_init=layer_scale_init, eps=eps, separate_kv=research)
            for _ in range(num_layers))

    def forward(self, vectors: Tensor, mask: Tensor) -> Tensor:
        """[B, K, D] demo vectors + [B, K] mask → [B, P, D] (rows without demos: finite; caller zeroes)."""
        keys = torch.cat((mask[:, :1] | ~mask.any(1, keepdim=True), mask[:, 1:]), dim=1)
        h = self.queries.to(vectors.dtype).expand(vectors.shape[0], -1, -1)
        for layer in self.layers:
            h = layer(h, keys, memory=vectors)
        return rms_norm(h, self.eps)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` [B, K, ...] over the K entries where ``mask`` [B, K] (zero when none)."""
    weights = mask.to(values.dtype).view(*mask.shape, *([1] * (values.dim() - 2)))
    return (values * weights).sum(1) / weights.sum(1).clamp(min=1)


class GaussianLatent(nn.Module):
    """μ / log σ² heads, reparameterised sample in training (μ in evaluation), KL to N(0, I) per row."""

    def __init__(self, hidden: int, latent: int):
        super().__init__()
        self.mu = CastLinear(hidden, latent, bias=True)
        self.logvar = CastLinear(hidden, latent, bias=True)
        with torch.no_grad():
            self.logvar.weight.zero_()  # log σ² starts input-independent, at LOGVAR_INIT
            self.logvar.bias.fill_(LOGVAR_INIT)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(z [..., latent], KL [...] summed over latent dims, fp32)."""
        mu = self.mu(x)
        logvar = self.logvar(x).float().clamp(-LOGVAR_CLAMP, LOGVAR_CLAMP)
        if self.training:
            z = mu + (torch.randn_like(logvar) * (0.5 * logvar).exp()).to(mu.dtype)
        else:
            z = mu
        mu32 = mu.float()
        kl = 0.5 * (mu32.square() + logvar.exp() - 1 - logvar).sum(-1)
        return z, kl


# ----------------------------------------------------------------------------------------------------------
# The encoder the models use.


@dataclass
class EncoderOutput:
    """What an encoder returns for a batch."""

    context: Tensor      # [B, P, D] in the activation dtype
    kl: Tensor | None    # [B] fp32 per-sample KL (variational encoders), else None
    has_demos: Tensor    # [B] bool


@dataclass
class EncoderSettings:
    """The ``arch.encoder_*`` values and decoder sizes an encoder is built from (see ``ArchConfig``)."""

    hidden: int
    num_heads: int
    expansion: float
    eps: float
    rope_theta: float
    prefix_len: int
    vocab_size: int
    num_layers: int = 2
    pooling: str = "mean"
    set_layers: int = 1
    layer_scale_init: float = 0.0
    norm_style: str = "post"
    qk_norm: bool = False
    latent_dim: int = 32
    set_memory: str = "demos"
    token_layout: str = "separate"
    numerics: str = "trmlab"

    @property
    def research(self) -> bool:
        """True when the encoder must compute exactly what the ETRM research code computes."""
        return self.numerics == "research"

    def grid_encoder(self, pooling: str | None = None) -> GridEncoder:
        """The grid encoder these settings describe (``pooling`` overrides :attr:`pooling`). The research LPN
        grid encoder (CLS pooling) is pre-norm whatever encoder_norm_style says."""
        pooling = pooling or self.pooling
        norm_style = "pre" if self.research and pooling == "cls" else self.norm_style
        return GridEncoder(hidden=self.hidden, num_heads=self.num_heads, expansion=self.expansion,
                           num_layers=self.num_layers, vocab_size=self.vocab_size,
                           pooling=pooling, norm_style=norm_style,
                           token_layout=self.token_layout, qk_norm=self.qk_norm,
                           layer_scale_init=self.layer_scale_init, eps=self.eps,
                           rope_theta=RESEARCH_ROPE_THETA if self.research else self.rope_theta,
                           research=self.research)

    @classmethod
    def from_arch(cls, arch, *, prefix_len: int, vocab_size: int) -> EncoderSettings:
        """Settings from an ``ArchConfig``; ``prefix_len`` is the decoder's resolved puzzle_emb_len."""
        return cls(hidden=arch.hidden_size, num_heads=arch.num_heads, expansion=arch.expansion,
                   eps=arch.rms_norm_eps, rope_theta=arch.rope_theta, prefix_len=prefix_len,
                   vocab_size=vocab_size, num_layers=arch.encoder_num_layers,
                   pooling=arch.encoder_pooling_method,
                   set_layers=arch.encoder_set_layers, layer_scale_init=arch.encoder_layer_scale_init,
                   norm_style=arch.encoder_norm_style, qk_norm=arch.encoder_qk_norm,
                   latent_dim=arch.encoder_latent_dim, set_memory=arch.encoder_set_memory,
                   token_layout=arch.encoder_token_layout, numerics=arch.encoder_numerics)


def check_research_settings(s: EncoderSettings, encoder_type: str) -> None:
    """ConfigError unless the research numerics of this encoder configuration are reproduced."""
    if encoder_type not in RESEARCH_ENCODER_TYPES:
        raise ConfigError(f"arch.encoder_numerics=research with arch.encoder_type={encoder_type!r}: trmlab "
                          f"reproduces the research numerics of {', '.join(RESEARCH_ENCODER_TYPES)} only")
    trmlab_only = {"arch.encoder_token_layout": (s.token_layout, "separate"),
                   "arch.encoder_set_memory": (s.set_memory, "demos"),
                   "arch.encoder_qk_norm": (s.qk_norm, False)}
    for key, (value, research_value) in trmlab_only.items():
        if value != research_value:
            raise ConfigError(f"{key}={value!r} does not exist in the research code "
                              f"(arch.encoder_numerics=research needs {research_value!r})")


class ContextHead(nn.Module):
    """RMSNorm + learned per-channel gain (init 1/√D): the context matches the decoder's token scale."""

    def __init__(self, hidden: int, eps: float):
        super().__init__()
        self.eps = eps
        self.gain = nn.Parameter(torch.full((hidden,), 1 / math.sqrt(hidden)))

    def forward(self, h: Tensor) -> Tensor:
        return rms_norm(h, self.eps) * self.gain.to(h.dtype)


class DemoEncoder(nn.Module):
    """One of the ``arch.encoder_type`` encoders: ``standard``, ``lpn_standard``, ``lpn_variational``,
    ``hybrid_standard``, ``hybrid_variational`` (see the module docstring); with research numerics also the
    research code's paper-faithful ``lpn`` / ``lpn_var`` (:mod:`trmlab.models.lpn_paper`).

    ``packing=False`` selects the naive layout (every slot at full canvas); results are the same up to float
    rounding, only slower. It exists for the benchmark and the equivalence test.
    """

    TYPES = ("standard", "lpn_standard", "lpn_variational", "hybrid_standard", "hybrid_variational")

    def __init__(self, encoder_type: str, settings: EncoderSettings, *, packing: bool = True):
        super().__init__()
        if encoder_type not in (*self.TYPES, *PAPER_LPN_TYPES):
            raise ConfigError(f"arch.encoder_type {encoder_type!r} is not one of "
                              f"{', '.join((*self.TYPES, *PAPER_LPN_TYPES))}")
        s = settings
        lpn_family = encoder_type.startswith(("lpn", "hybrid"))
        if lpn_family and s.pooling != "mean" and not s.research:  # the research code ignores it there
            raise ConfigError(f"arch.encoder_pooling_method={s.pooling!r} does not apply to encoder_type "
                              f"{encoder_type!r}, which pools each demo with a CLS token; leave it at 'mean' "
                              f"or use encoder_type=standard")
        if s.set_memory not in ("demos", "tokens"):
            raise ConfigError(f"arch.encoder_set_memory must be 'demos' or 'tokens', got {s.set_memory!r}")
        if s.set_memory == "tokens" and encoder_type != "standard":
            raise ConfigError(f"arch.encoder_set_memory='tokens' needs encoder_type=standard, got "
                              f"{encoder_type!r}")
        if s.prefix_len < 1:
            raise ConfigError("arch.puzzle_emb_len resolves to 0 prefix positions; an encoder model needs "
                              "at least one (set arch.puzzle_emb_len, e.g. 16)")
        if s.research:
            check_research_settings(s, encoder_type)
        self.encoder_type, self.packing, self.settings = encoder_type, packing, s
        if encoder_type in PAPER_LPN_TYPES:
            self._build_paper_lpn(s)
            return
        pooling = "cls" if lpn_family else "none" if s.set_memory == "tokens" else s.pooling
        self.grid = s.grid_encoder(pooling)
        if encoder_type in ("standard", "hybrid_standard", "hybrid_variational"):
            self.set_encoder = SetEncoder(hidden=s.hidden, num_heads=s.num_heads, expansion=s.expansion,
                                          num_layers=s.set_layers, prefix_len=s.prefix_len,
                                          norm_style=s.norm_style, qk_norm=s.qk_norm,
                                          layer_scale_init=s.layer_scale_init, eps=s.eps,
                                          research=s.research)
        if encoder_type == "lpn_standard":
            self.expand = CastLinear(s.hidden, s.prefix_len * s.hidden)
        if encoder_type.endswith("variational"):
            latent_dim = s.hidden if s.research else s.latent_dim  # the research latents are D wide
            self.latent = GaussianLatent(s.hidden, latent_dim)
            self.expand = CastLinear(latent_dim, s.prefix_len * s.hidden)
        # The research context is the set encoder's RMS-normalised output as is (no gain).
        self.head = nn.Identity() if s.research else ContextHead(s.hidden, s.eps)

    def _build_paper_lpn(self, s: EncoderSettings) -> None:
        from trmlab.models import lpn_paper

        if not s.research:
            raise ConfigError(f"arch.encoder_type={self.encoder_type!r} exists only to load research "
                              "checkpoints (arch.encoder_numerics=research); trmlab's own LPN-style "
                              "encoders are lpn_standard / lpn_variational")
        self.grid = lpn_paper.PaperLPNGridEncoder(s.vocab_size)
        width = lpn_paper.WIDTH
        if self.encoder_type == "lpn_var":
            width = lpn_paper.LATENT_DIM
            self.latent_mu = nn.Linear(lpn_paper.WIDTH, width, bias=False)
            self.latent_logvar = nn.Linear(lpn_paper.WIDTH, width, bias=False)
            nn.init.zeros_(self.latent_logvar.weight)
        self.expand = nn.Linear(width, s.prefix_len * s.hidden, bias=False)
        self.head = nn.Identity()

    def _paper_lpn(self, vectors: Tensor, mask: Tensor) -> tuple[Tensor, Tensor | None]:
        """The research ``lpn`` / ``lpn_var`` aggregation: (context before the head, per-sample KL | None)."""
        kl = None
        if self.encoder_type == "lpn_var":
            mu = self.latent_mu(vectors)
            logvar = self.latent_logvar(vectors).clamp(-LOGVAR_CLAMP, LOGVAR_CLAMP)
            vectors = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
            kl = masked_mean(0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1), mask)
        h = self.expand(masked_mean(vectors, mask))
        return h.view(vectors.shape[0], self.settings.prefix_len, self.settings.hidden), kl

    @property
    def variational(self) -> bool:
        return self.encoder_type.endswith(("variational", "_var"))

    def demo_vectors(self, demo_inputs: Tensor, demo_labels: Tensor, demo_mask: Tensor,
                     dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Stage 1: (vectors [B, K', D], mask [B, K']); see :func:`encode_demo_grids`."""
        return encode_demo_grids(self.grid, demo_inputs, demo_labels, demo_mask, dtype, packing=self.packing)

    def forward(self, demo_inputs: Tensor, demo_labels: Tensor, demo_mask: Tensor,
                dtype: torch.dtype = torch.float32) -> EncoderOutput:
        """Context for a batch of demo sets (see :class:`EncoderOutput`)."""
        s = self.settings
        if s.set_memory == "tokens":
            memory, keys = encode_demo_tokens(self.grid, demo_inputs, demo_labels, demo_mask, dtype,
                                              packing=self.packing)
            has_demos = demo_mask.any(1)
            h = self.set_encoder(memory, keys)
            context = torch.where(has_demos[:, None, None], self.head(h), torch.zeros_like(h))
            return EncoderOutput(context=context, kl=None, has_demos=has_demos)
        vectors, mask = self.demo_vectors(demo_inputs, demo_labels, demo_mask, dtype)
        has_demos = mask.any(1)
        kl = None
        batch = vectors.shape[0]
        if self.encoder_type in PAPER_LPN_TYPES:
            h, kl = self._paper_lpn(vectors, mask)
            h = h.to(dtype)
        elif self.encoder_type in ("standard", "hybrid_standard"):
            h = self.set_encoder(vectors, mask)
        elif self.encoder_type == "lpn_standard":
            h = self.expand(masked_mean(vectors, mask)).view(batch, s.prefix_len, s.hidden)
        elif self.encoder_type == "lpn_variational":
            z, kl_demo = self.latent(vectors)  # one latent per demo
            kl = masked_mean(kl_demo, mask)
            h = self.expand(masked_mean(z, mask)).view(batch, s.prefix_len, s.hidden)
        else:  # hybrid_variational: the set context, pooled over its P tokens, through one latent per sample
            pooled = rms_norm(self.set_encoder(vectors, mask).mean(1), s.eps)
            z, kl = self.latent(pooled)
            h = self.expand(z).view(batch, s.prefix_len, s.hidden)
        context = torch.where(has_demos[:, None, None], self.head(h), torch.zeros_like(h))
        if kl is not None:
            kl = torch.where(has_demos, kl, torch.zeros_like(kl))
        return EncoderOutput(context=context, kl=kl, has_demos=has_demos)
