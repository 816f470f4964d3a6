"""Encoder-collapse diagnostics of a batch of contexts (etrm-reference §8.2, §9.16-17).

A collapsed encoder gives (nearly) the same context to every task: cross-sample variance → 0, pairwise cosine
→ 1, effective rank → 1. Computed outside the (possibly compiled) step, under no_grad, with a single host
transfer at the end; callers run it at low frequency (the training loop at its log interval, the evaluator
once per evaluation). Metric names are fixed (they are what ``metrics.jsonl`` carries):

- ``encoder/context_variance``: variance across samples of every context element, averaged over the P·D
  elements (population variance).
- ``encoder/cosine_similarity``: mean cosine similarity between the flattened contexts of distinct samples.
- ``encoder/effective_rank``: exp(entropy) of the normalised singular values of the [B, P·D] context matrix
  (Roy & Vetterli, 2007): 1 for identical contexts, up to min(B, P·D).
- ``encoder/context_norm``: mean L2 norm of a context token (scale check against the decoder's tokens).
- ``encoder/kl``: mean per-sample KL (variational encoders only).

Rows without demos (evaluation padding) carry an all-zero context by construction and are left out.
"""

from __future__ import annotations

import torch
from torch import Tensor

METRIC_NAMES = ("encoder/context_variance", "encoder/cosine_similarity", "encoder/effective_rank",
                "encoder/context_norm", "encoder/kl")


@torch.no_grad()
def context_statistics(context: Tensor, kl: Tensor | None = None, rows: Tensor | None = None
                       ) -> dict[str, Tensor]:
    """The diagnostics as 0-d fp32 tensors (no host sync), for callers that accumulate them.

    Args:
        context: [B, P, D] contexts of one batch (any dtype; a graph-carrying tensor is fine).
        kl: optional [B] per-sample KL.
        rows: optional [B] bool, the rows to include (default: rows whose context is not all zero).
    """
    flat = context.detach().float().flatten(1)
    if rows is None:
        rows = flat.abs().sum(1) > 0
    flat = flat[rows]
    n = flat.shape[0]
    stats: dict[str, Tensor] = {}
    if n >= 2:
        stats["encoder/context_variance"] = flat.var(0, unbiased=False).mean()
        unit = torch.nn.functional.normalize(flat, dim=1)
        gram = unit @ unit.T
        stats["encoder/cosine_similarity"] = (gram.sum() - gram.diagonal().sum()) / (n * (n - 1))
        singular = torch.linalg.svdvals(flat)
        p = singular / singular.sum().clamp_min(1e-12)
        entropy = -(p * p.clamp_min(1e-12).log()).sum()
        stats["encoder/effective_rank"] = entropy.exp()
    if n >= 1:
        stats["encoder/context_norm"] = context.detach().float()[rows].norm(dim=-1).mean()
        if kl is not None:
            stats["encoder/kl"] = kl.detach().float()[rows].mean()
    return stats


def context_diagnostics(outputs: dict[str, Tensor]) -> dict[str, float]:
    """Diagnostics of a model's step outputs (``context`` [B, P, D] and optional ``kl`` [B]) as floats.

    Returns ``{}`` when the outputs have no ``context`` (e.g. TRM), so a loop can call it for every variant.
    Statistics that need at least two rows with demos are omitted for smaller batches.
    """
    if "context" not in outputs:
        return {}
    stats = context_statistics(outputs["context"], outputs.get("kl"))
    if not stats:
        return {}
    values = torch.stack(list(stats.values())).cpu().tolist()  # one host transfer
    return dict(zip(stats.keys(), values))


class DiagnosticsAccumulator:
    """Averages the diagnostics over an evaluation's batches (each batch's statistics weighted by its rows).

    Usage in an evaluator: ``acc.add(step)`` for the last rollout step of every batch (a dict with ``context``
    and optional ``kl``; TRM steps are ignored), then ``acc.result()`` → ``{"encoder/...": float}``.
    """

    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._weights: dict[str, float] = {}

    def add(self, step: dict[str, Tensor]) -> None:
        if "context" not in step:
            return
        rows = step["context"].detach().flatten(1).abs().sum(1) > 0
        weight = float(rows.sum())
        for name, value in context_statistics(step["context"], step.get("kl"), rows).items():
            self._sums[name] = self._sums.get(name, 0) + value * weight
            self._weights[name] = self._weights.get(name, 0.0) + weight

    def state(self) -> dict[str, dict[str, float]]:
        """Plain sums and weights (for gathering across ranks)."""
        return {"sums": {k: float(v) for k, v in self._sums.items()}, "weights": dict(self._weights)}

    def merge(self, state: dict[str, dict[str, float]]) -> None:
        """Add another accumulator's :meth:`state` (another rank's batches)."""
        for name, total in state["sums"].items():
            self._sums[name] = self._sums.get(name, 0) + total
            self._weights[name] = self._weights.get(name, 0.0) + state["weights"][name]

    def result(self) -> dict[str, float]:
        return {name: float(total) / self._weights[name] for name, total in self._sums.items()
                if self._weights[name] > 0}
