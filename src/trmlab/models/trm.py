"""TRM: the recursion core with a learned per-puzzle embedding as its prefix (trm-reference §2.4, §2.9)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trmlab.errors import ConfigError, DataError
from trmlab.models.act import ACTModel
from trmlab.models.core import ReasoningCore, prefix_length


class SparsePuzzleEmbedding(nn.Module):
    """The puzzle-id table, trained by sparse sign-SGD rather than by the dense optimizer.

    ``weights`` [num_ids, ndim] fp32 is a persistent buffer (not in ``parameters()``: AdamATan2, EMA and the
    gradient all-reduce skip it). In train mode each call copies the looked-up rows into a fresh leaf
    ``local_weights`` [B, ndim] (requires grad) and records ``local_ids`` [B]: after backward,
    ``local_weights.grad`` is what the sparse optimizer applies to rows ``local_ids``. Sized per call, so any
    batch size works. Eval mode reads the table directly.
    """

    def __init__(self, num_ids: int, ndim: int) -> None:
        super().__init__()
        self.register_buffer("weights", torch.zeros(num_ids, ndim))
        self.local_weights: torch.Tensor | None = None
        self.local_ids: torch.Tensor | None = None

    def forward(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        ids = ids.long()
        # Checked off-GPU only: on CUDA it would cost a host sync per step (a bad index still fails there).
        rows = self.weights.shape[0]
        if ids.device.type != "cuda" and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= rows):
            raise DataError(f"puzzle_identifiers out of range [0, {self.weights.shape[0]}): "
                            f"min {int(ids.min())}, max {int(ids.max())}; the dataset does not match this "
                            "model's puzzle table")
        if not self.training:
            return self.weights[ids].to(dtype)
        self.local_weights = self.weights[ids].detach().requires_grad_(True)
        self.local_ids = ids.detach()
        return self.local_weights.to(dtype)


class TRM(ACTModel):
    """Tiny Recursive Model: prefix slot(s) = the row's puzzle embedding, zero-padded to P × hidden.

    ``model.puzzle_embedding`` is absent when ``arch.puzzle_emb_ndim`` is 0 (then P must be 0 too).
    """

    def __init__(self, arch: Any, *, seq_len: int, vocab_size: int, num_puzzle_identifiers: int) -> None:
        prefix_len = prefix_length(arch)
        if arch.puzzle_emb_ndim > prefix_len * arch.hidden_size:
            raise ConfigError(f"arch.puzzle_emb_ndim={arch.puzzle_emb_ndim} does not fit in "
                              f"arch.puzzle_emb_len={arch.puzzle_emb_len} slots of hidden_size "
                              f"{arch.hidden_size}; raise puzzle_emb_len or set it to 0 (automatic)")
        if arch.puzzle_emb_ndim == 0 and prefix_len:
            # The official code slices logits by P although it adds no prefix: refuse instead of mis-slicing.
            raise ConfigError(f"arch.puzzle_emb_ndim=0 with arch.puzzle_emb_len={arch.puzzle_emb_len}: a TRM "
                              "without puzzle table has no prefix; set arch.puzzle_emb_len=0")
        super().__init__(arch, ReasoningCore(arch, seq_len=seq_len, vocab_size=vocab_size,
                                             prefix_len=prefix_len))
        self.num_puzzle_identifiers = num_puzzle_identifiers
        if arch.puzzle_emb_ndim > 0:
            if num_puzzle_identifiers < 1:
                raise ConfigError(f"num_puzzle_identifiers={num_puzzle_identifiers}: the puzzle table needs "
                                  "at least one row (the blank id 0)")
            self.puzzle_embedding = SparsePuzzleEmbedding(num_puzzle_identifiers, arch.puzzle_emb_ndim)

    def compute_prefix(self, data: dict[str, torch.Tensor], state: dict[str, torch.Tensor]
                       ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Puzzle-table rows of ``data['puzzle_identifiers']``, right-padded with zeros to [B, P, hidden]."""
        if not self.core.prefix_len:
            return None, state, {}
        if "puzzle_identifiers" not in data:
            raise DataError("batch has no 'puzzle_identifiers' tensor, which TRM needs for its puzzle table")
        ids = data["puzzle_identifiers"]
        emb = self.puzzle_embedding(ids, self.core.forward_dtype)
        pad = self.core.prefix_len * self.core.hidden - emb.shape[-1]
        if pad:
            emb = torch.nn.functional.pad(emb, (0, pad))
        return emb.view(-1, self.core.prefix_len, self.core.hidden), state, {}
