"""ETRMTRM: a recurrent demo encoder whose state evolves across ACT steps, interleaved with the TRM decoder
(etrm-reference §5, with the detached-carry defect fixed).

Every ACT step: the grid encoder turns the row's demos into demo vectors (with gradient), the recurrent
encoder advances its state one update from the carried state, and the context taken from the new state is the
decoder's prefix. The state is detached only *between* ACT steps (when stored in the carry, like TRM's
z_H/z_L), so the context used by the current step carries task-loss gradient into every encoder parameter —
the research code detached the context itself, and its encoder never learned (§5, §9.5).

``arch.recurrent_encoder_type``:

- ``recurrent_standard``: z_e [B, P, D] starts from a persistent init buffer; per step ``encoder_set_layers``
  blocks of cross-attention from z_e to the demo vectors (masked) + SwiGLU.
- ``trm_style``: a small TRM of its own: z_e_H / z_e_L [B, P, D] from init buffers, the demo input = masked
  mean of the demo vectors, an ``L_level`` of ``encoder_l_layers`` blocks with RoPE over the P positions, and
  per ACT step ``encoder_h_cycles`` cycles (all but the last without gradient) of ``encoder_l_cycles`` z_e_L
  updates and one z_e_H update; the context is z_e_H.

In evaluation the demo vectors of a row are computed once (they do not change across its ACT steps) and only
the cheap recurrent update runs every step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from trmlab.errors import ConfigError
from trmlab.models.act import ACTModel
from trmlab.models.core import ReasoningCore, prefix_length
from trmlab.models.encoders import (
    RESEARCH_ROPE_THETA,
    Block,
    ContextHead,
    EncoderSettings,
    check_research_settings,
    encode_demo_grids,
    masked_mean,
    rope_tables,
)
from trmlab.models.etrm import EncoderModelMixin, demo_batch, subset_rows
from trmlab.models.layers import trunc_normal_

# The research recurrent encoders keep 0.9 of the previous state and take 0.1 of the update each ACT step.
RESEARCH_STATE_KEEP = 0.9


def _blocks(s: EncoderSettings, count: int, *, cross: bool) -> nn.ModuleList:
    if s.research:  # the research recurrent blocks: post-norm, no layer scale, whatever the encoder_* say
        return nn.ModuleList(Block(s.hidden, s.num_heads, s.expansion, cross=cross, norm_style="post",
                                   qk_norm=False, layer_scale_init=0.0, eps=s.eps, separate_kv=True)
                             for _ in range(count))
    return nn.ModuleList(Block(s.hidden, s.num_heads, s.expansion, cross=cross, norm_style=s.norm_style,
                               qk_norm=s.qk_norm, layer_scale_init=s.layer_scale_init, eps=s.eps)
                         for _ in range(count))


def _smoothed(old: Tensor, new: Tensor) -> Tensor:
    """The research state update: 0.9 · old (no gradient) + 0.1 · new (gradient kept, unlike the research
    code, which detached the result and so never trained its encoder: etrm-reference §5)."""
    return RESEARCH_STATE_KEEP * old.detach() + (1 - RESEARCH_STATE_KEEP) * new


class RecurrentStandardEncoder(nn.Module):
    """z_e ← blocks(z_e ⟶ cross-attention to the demo vectors, SwiGLU); context = head(z_e).

    Research numerics: one block (the research code ignores encoder_set_layers here), the 0.9/0.1 smoothing
    of the state, context = the smoothed state itself."""

    state_keys = ("z_e",)

    def __init__(self, s: EncoderSettings, *, packing: bool = True):
        super().__init__()
        self.packing, self.research = packing, s.research
        self.grid = s.grid_encoder()
        self.layers = _blocks(s, 1 if s.research else s.set_layers, cross=True)
        self.head = nn.Identity() if s.research else ContextHead(s.hidden, s.eps)
        self.register_buffer("z_init", trunc_normal_(torch.empty(s.prefix_len, s.hidden), 1.0))

    def initial_state(self) -> dict[str, Tensor]:
        return {"z_e": self.z_init}

    def update(self, state: dict[str, Tensor], vectors: Tensor, mask: Tensor
               ) -> tuple[Tensor, dict[str, Tensor]]:
        """One recurrent step: (context [B, P, D], new state with gradient)."""
        keys = torch.cat((mask[:, :1] | ~mask.any(1, keepdim=True), mask[:, 1:]), dim=1)
        z = old = state["z_e"].to(vectors.dtype)
        for layer in self.layers:
            z = layer(z, keys, memory=vectors)
        if self.research:
            z = _smoothed(old, z)
        return self.head(z), {"z_e": z}


class TRMStyleEncoder(nn.Module):
    """Its own H/L recursion over P positions, driven by the mean demo vector; context = head(z_e_H).

    Research numerics: post-norm blocks, RoPE base 10000, the 0.9/0.1 smoothing of both states, context = the
    smoothed z_e_H itself."""

    state_keys = ("z_e_H", "z_e_L")

    def __init__(self, s: EncoderSettings, *, h_cycles: int, l_cycles: int, l_layers: int,
                 packing: bool = True):
        super().__init__()
        self.packing, self.h_cycles, self.l_cycles = packing, h_cycles, l_cycles
        self.research = s.research
        self.grid = s.grid_encoder()
        self.layers = _blocks(s, l_layers, cross=False)
        self.head = nn.Identity() if s.research else ContextHead(s.hidden, s.eps)
        self.head_dim, self.prefix_len = s.hidden // s.num_heads, s.prefix_len
        self.rope_theta = RESEARCH_ROPE_THETA if s.research else s.rope_theta
        # Per-position init states, so the P context positions can differ from the first step on.
        self.register_buffer("h_init", trunc_normal_(torch.empty(s.prefix_len, s.hidden), 1.0))
        self.register_buffer("l_init", trunc_normal_(torch.empty(s.prefix_len, s.hidden), 1.0))

    def initial_state(self) -> dict[str, Tensor]:
        return {"z_e_H": self.h_init, "z_e_L": self.l_init}

    def _level(self, h: Tensor, injection: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        h = h + injection
        keys = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
        for layer in self.layers:
            h = layer(h, keys, rope=rope)
        return h

    def _cycle(self, z_H: Tensor, z_L: Tensor, demo_input: Tensor, rope: tuple[Tensor, Tensor]
               ) -> tuple[Tensor, Tensor]:
        for _ in range(self.l_cycles):
            z_L = self._level(z_L, z_H + demo_input, rope)
        return self._level(z_H, z_L, rope), z_L

    def update(self, state: dict[str, Tensor], vectors: Tensor, mask: Tensor
               ) -> tuple[Tensor, dict[str, Tensor]]:
        """``encoder_h_cycles`` cycles, only the last differentiated: (context, new state with gradient)."""
        dtype = vectors.dtype
        demo_input = masked_mean(vectors, mask)[:, None, :].expand(-1, self.prefix_len, -1)
        positions = torch.arange(self.prefix_len, device=vectors.device)
        rope = rope_tables(positions, self.head_dim, self.rope_theta)
        old_H, old_L = state["z_e_H"].to(dtype), state["z_e_L"].to(dtype)
        z_H, z_L = old_H.expand_as(demo_input), old_L.expand_as(demo_input)
        with torch.no_grad():
            for _ in range(self.h_cycles - 1):
                z_H, z_L = self._cycle(z_H, z_L, demo_input, rope)
        z_H, z_L = self._cycle(z_H, z_L, demo_input, rope)
        if self.research:
            z_H, z_L = _smoothed(old_H, z_H), _smoothed(old_L, z_L)
        return self.head(z_H), {"z_e_H": z_H, "z_e_L": z_L}


class ETRMTRM(EncoderModelMixin, ACTModel):
    """TRM decoder + recurrent demo encoder (``arch.recurrent_encoder_type``); ``arch.name = etrmtrm``.

    Carry state (``carry.extra``): the encoder state (detached), and in evaluation the cached demo vectors.
    """

    def __init__(self, arch: Any, *, seq_len: int, vocab_size: int, num_puzzle_identifiers: int = 0,
                 packing: bool = True) -> None:
        prefix_len = prefix_length(arch)
        if prefix_len < 1:
            raise ConfigError("arch.puzzle_emb_len resolves to 0 prefix positions; etrmtrm needs at least "
                              "one (set arch.puzzle_emb_len)")
        core = ReasoningCore(arch, seq_len=seq_len, vocab_size=vocab_size, prefix_len=prefix_len)
        super().__init__(arch, core)
        s = EncoderSettings.from_arch(arch, prefix_len=prefix_len, vocab_size=vocab_size)
        if s.research:
            check_research_settings(s, "standard")  # the grid encoder is the standard one
        if arch.recurrent_encoder_type == "recurrent_standard":
            self.encoder: nn.Module = RecurrentStandardEncoder(s, packing=packing)
        elif arch.recurrent_encoder_type == "trm_style":
            self.encoder = TRMStyleEncoder(s, h_cycles=arch.encoder_h_cycles, l_cycles=arch.encoder_l_cycles,
                                           l_layers=arch.encoder_l_layers, packing=packing)
        else:
            raise ConfigError(f"arch.recurrent_encoder_type={arch.recurrent_encoder_type!r}: expected "
                              f"recurrent_standard or trm_style")

    # -- carry ---------------------------------------------------------------------------------------------

    def initial_prefix_state(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        size, device = batch["inputs"].shape[0], batch["inputs"].device
        dtype = self.core.forward_dtype
        state = {k: v.to(device=device, dtype=dtype).expand(size, -1, -1).clone()
                 for k, v in self.encoder.initial_state().items()}
        slots = batch["demo_mask"].shape[1] if "demo_mask" in batch else 1
        state["vectors"] = torch.zeros(size, slots, self.core.hidden, dtype=dtype, device=device)
        state["vector_mask"] = torch.zeros(size, slots, dtype=torch.bool, device=device)
        state["stale"] = torch.ones(size, dtype=torch.bool, device=device)
        return state

    def reset_prefix_state(self, state: dict[str, Tensor], halted: Tensor,
                           batch: dict[str, Tensor]) -> dict[str, Tensor]:
        rows = halted.view(-1, 1, 1)
        fresh = {k: torch.where(rows, v.to(state[k].dtype), state[k])
                 for k, v in self.encoder.initial_state().items()}
        return {**state, **fresh, "stale": state["stale"] | halted}

    # -- one step --------------------------------------------------------------------------------------------

    def _demo_vectors(self, demos: dict[str, Tensor], slots: int | None = None) -> tuple[Tensor, Tensor]:
        return encode_demo_grids(self.encoder.grid, *demo_batch(demos, "ETRMTRM"), self.core.forward_dtype,
                                 packing=self.encoder.packing, slots=slots)

    def _eval_vectors(self, data: dict[str, Tensor], state: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Demo vectors padded to max_demos slots, computed only for rows that (re)started."""
        vectors, mask, stale = state["vectors"], state["vector_mask"], state["stale"]
        slots = vectors.shape[1]
        if bool(stale.all()):
            return self._demo_vectors(data, slots)
        if bool(stale.any()):
            rows = stale.nonzero(as_tuple=True)[0]
            new_vectors, new_mask = self._demo_vectors(subset_rows(data, rows), slots)
            vectors = vectors.index_copy(0, rows, new_vectors.to(vectors.dtype))
            mask = mask.index_copy(0, rows, new_mask)
        return vectors, mask

    def compute_prefix(self, data: dict[str, Tensor], state: dict[str, Tensor]
                       ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        if self.training:
            vectors, mask = self._demo_vectors(data)
            stale = torch.ones_like(state["stale"])  # no cache in training (see ETRM)
        else:
            vectors, mask = self._eval_vectors(data, state)
            stale = torch.zeros_like(state["stale"])
        has_demos = mask.any(1)
        context, new_state = self.encoder.update(state, vectors, mask)
        context = torch.where(has_demos[:, None, None], context, torch.zeros_like(context))
        # The carry keeps the state detached (truncated BPTT between ACT steps); the context keeps its graph.
        state = {**state, **{k: v.detach() for k, v in new_state.items()}, "stale": stale}
        if not self.training:
            state["vectors"], state["vector_mask"] = vectors, mask
        outputs = {"context": context}
        if self.training:
            outputs["context_groups"] = data["puzzle_identifiers"]
        return context, state, outputs
