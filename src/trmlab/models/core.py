"""The recursion core shared by TRM, ETRM and ETRMTRM (trm-reference §2.4-§2.5).

:class:`ReasoningCore` owns everything of one ACT step except where the prefix comes from: token embedding,
positions, the one shared stack of blocks (``L_level`` officially), the z_H/z_L recursion and the two heads.
The prefix [B, P, D] (puzzle embedding for TRM, encoder context for ETRM) is an argument, so every variant
runs the very same numerics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from trmlab.errors import ConfigError, DataError
from trmlab.models.layers import (
    Block,
    CastEmbedding,
    CastLinear,
    rotary_tables,
    trunc_normal_,
    weights_cast_once,
)

LEARNED_POS_SCALE = 0.707106781  # the official constant (not math.sqrt(0.5): keep the exact literal)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_forward_dtype(name: str, device: torch.device | str | None) -> torch.dtype:
    """``auto`` → bf16 on CUDA, fp32 elsewhere (bf16 matmuls are 7-100× slower on CPU), else the named one."""
    if name == "auto":
        return torch.bfloat16 if torch.device(device or "cpu").type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ConfigError(f"arch.forward_dtype={name!r}: expected auto, bfloat16 or float32")
    return DTYPES[name]


def prefix_length(arch: Any) -> int:
    """Number of prefix positions P: ``puzzle_emb_len``, or ceil(puzzle_emb_ndim / hidden) when that is 0."""
    if arch.puzzle_emb_len == 0:
        return -(arch.puzzle_emb_ndim // -arch.hidden_size)
    return arch.puzzle_emb_len


class ReasoningCore(nn.Module):
    """Embeddings, the shared blocks, the H/L recursion and the heads of one ACT step.

    Args:
        arch: an ``ArchConfig`` (reads hidden_size, num_heads, expansion, L_layers, H_cycles, L_cycles,
            pos_encodings, rope_theta, rms_norm_eps, mlp_t, forward_dtype).
        seq_len: grid tokens per sample (900 for ARC).
        vocab_size: token vocabulary (12 for ARC).
        prefix_len: P, the positions in front of the grid that the caller fills (may be 0).
    """

    def __init__(self, arch: Any, *, seq_len: int, vocab_size: int, prefix_len: int) -> None:
        super().__init__()
        if arch.hidden_size % arch.num_heads:
            raise ConfigError(f"arch.hidden_size={arch.hidden_size} is not divisible by "
                              f"arch.num_heads={arch.num_heads}")
        if not arch.mlp_t and (arch.hidden_size // arch.num_heads) % 2:
            raise ConfigError(f"head size {arch.hidden_size // arch.num_heads} is odd: RoPE needs an even "
                              "head size; change arch.hidden_size or arch.num_heads")
        self.arch = arch
        self.seq_len, self.vocab_size, self.prefix_len = seq_len, vocab_size, prefix_len
        self.hidden = arch.hidden_size
        self.embed_scale = math.sqrt(arch.hidden_size)
        total = seq_len + prefix_len
        self.token_embedding = CastEmbedding(vocab_size, self.hidden, init_std=1.0 / self.embed_scale)
        self.lm_head = CastLinear(self.hidden, vocab_size)
        self.q_head = CastLinear(self.hidden, 2, bias=True)
        with torch.no_grad():  # q starts at "never halt": sigmoid(-5) ≈ 0.0067
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        if arch.pos_encodings == "learned":
            self.position_embedding = CastEmbedding(total, self.hidden, init_std=1.0 / self.embed_scale)
        self.blocks = nn.ModuleList(
            Block(self.hidden, arch.num_heads, arch.expansion, arch.rms_norm_eps, arch.mlp_t, total)
            for _ in range(arch.L_layers))
        self.register_buffer("h_init", self._initial_state_vector(arch.forward_dtype))
        self.register_buffer("l_init", self._initial_state_vector(arch.forward_dtype))
        self._rotary: tuple[torch.Tensor, torch.Tensor] | None = None
        self.forward_dtype_override: torch.dtype | None = None
        # Test-time stochastic trajectories (trmlab.evaluation.test_time): called on z_L after every L-level
        # update of every H cycle; None (always, outside that evaluation) leaves the official numerics alone.
        self.z_L_noise: Any = None

    def _initial_state_vector(self, forward_dtype: str) -> torch.Tensor:
        """Truncated normal std 1 in the forward dtype. For ``auto`` (device unknown yet) the values are
        bf16-representable, stored fp32: exact in either dtype, so GPU runs export them as bf16 losslessly."""
        if forward_dtype == "float32":
            return trunc_normal_(torch.empty(self.hidden), std=1.0)
        values = trunc_normal_(torch.empty(self.hidden, dtype=torch.bfloat16), std=1.0)
        return values if forward_dtype == "bfloat16" else values.float()

    # -- dtype and positions -------------------------------------------------------------------------------

    @property
    def forward_dtype(self) -> torch.dtype:
        """Activation dtype: the override, else ``arch.forward_dtype`` resolved on the weights' device."""
        if self.forward_dtype_override is not None:
            return self.forward_dtype_override
        return resolve_forward_dtype(self.arch.forward_dtype, self.lm_head.weight.device)

    def rotary(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """fp32 cos/sin tables for P + seq_len positions, built once per device (never saved)."""
        if self.arch.pos_encodings != "rope" or self.arch.mlp_t:
            return None
        if self._rotary is None or self._rotary[0].device != device:
            self._rotary = rotary_tables(self.seq_len + self.prefix_len, self.hidden // self.arch.num_heads,
                                         self.arch.rope_theta, device)
        return self._rotary

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        # H_init/L_init keep the dtype they were saved in (bf16 for the released runs): adopting it instead of
        # casting into ours keeps loading and re-export lossless.
        for name in ("h_init", "l_init"):
            incoming = state_dict.get(prefix + name)
            own = getattr(self, name)
            if (isinstance(incoming, torch.Tensor) and incoming.dtype != own.dtype
                    and incoming.shape == own.shape):
                setattr(self, name, torch.empty_like(own, dtype=incoming.dtype))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- one ACT step ----------------------------------------------------------------------------------------

    def embed(self, inputs: torch.Tensor, prefix: torch.Tensor | None) -> torch.Tensor:
        """Input embedding x [B, P + seq_len, D]: concat(prefix, tokens) [+ learned positions] × sqrt(D)."""
        if inputs.shape[-1] != self.seq_len:
            raise DataError(f"inputs has {inputs.shape[-1]} tokens per row but the model was built for "
                            f"seq_len={self.seq_len}")
        dtype = self.forward_dtype
        x = self.token_embedding(inputs, dtype)
        if self.prefix_len:
            if prefix is None or tuple(prefix.shape[1:]) != (self.prefix_len, self.hidden):
                got = None if prefix is None else tuple(prefix.shape)
                raise DataError(f"prefix must be [B, {self.prefix_len}, {self.hidden}], got {got}")
            x = torch.cat((prefix.to(dtype), x), dim=-2)
        if hasattr(self, "position_embedding"):
            x = LEARNED_POS_SCALE * (x + self.position_embedding.weight.to(dtype))
        return self.embed_scale * x

    def reasoning_level(self, h: torch.Tensor, injection: torch.Tensor,
                        rotary: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """The one shared network: add the injection, then run every block."""
        h = h + injection
        for block in self.blocks:
            h = block(h, rotary)
        return h

    def recurse(self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """H_cycles outer cycles (the first H_cycles − 1 without grad), each L_cycles z_L updates and one z_H
        update."""
        rotary = self.rotary(x.device)
        with torch.no_grad():
            for _ in range(self.arch.H_cycles - 1):
                z_H, z_L = self._cycle(z_H, z_L, x, rotary)
        return self._cycle(z_H, z_L, x, rotary)

    def _cycle(self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor,
               rotary: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        for _ in range(self.arch.L_cycles):
            z_L = self.reasoning_level(z_L, z_H + x, rotary)  # z_L + (z_H + x): order matters in bf16
            if self.z_L_noise is not None:
                z_L = self.z_L_noise(z_L)
        z_H = self.reasoning_level(z_H, z_L, rotary)
        return z_H, z_L

    def heads(self, z_H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """logits over the grid positions [B, seq_len, V], and fp32 q_halt, q_continue [B] from position 0."""
        # Project every position, then drop the prefix, as officially: the same matmul shape gives the same
        # kernel and accumulation order in bf16 (slicing first saves only P / (P + seq_len) of a tiny matmul).
        logits = self.lm_head(z_H)[:, self.prefix_len:]
        q = self.q_head(z_H[:, 0]).float()
        return logits, q[:, 0], q[:, 1]

    def initial_latents(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero z_H, z_L [B, P + seq_len, D] in the forward dtype (rows start halted, so they are reset)."""
        shape = (batch_size, self.prefix_len + self.seq_len, self.hidden)
        dtype = self.forward_dtype
        return torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)

    def reset_latents(self, z_H: torch.Tensor, z_L: torch.Tensor, reset: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows where ``reset`` is true restart from H_init / L_init (cast exactly to the forward dtype)."""
        dtype = self.forward_dtype
        mask = reset.view(-1, 1, 1)
        return (torch.where(mask, self.h_init.to(dtype), z_H.to(dtype)),
                torch.where(mask, self.l_init.to(dtype), z_L.to(dtype)))

    def step(self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor
             ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """One ACT step on embedded input ``x``: detached new latents and (logits, q_halt, q_continue)."""
        with weights_cast_once(self, self.forward_dtype):
            z_H, z_L = self.recurse(z_H, z_L, x)
            heads = self.heads(z_H)
        return (z_H.detach(), z_L.detach()), heads
