"""Exponential moving average of the trainable weights (trm-reference §6.4), kept in fp32.

The loop calls :meth:`EMA.update` right after each optimizer step and nowhere else, so the average can never
drift after training stops (the official ARC-AGI-2 run updated its EMA for 1,816 batches without updates).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class EMA:
    """fp32 shadow of every parameter with ``requires_grad`` at construction: ``s ← (1 − μ)·p + μ·s``.

    Buffers (H/L init, the puzzle table) are not averaged, as in the official code. ``num_updates`` counts the
    updates applied, which the loop checks against its optimizer-step counter.
    """

    def __init__(self, model: torch.nn.Module, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"EMA rate must be in [0, 1], got {rate}")
        self.rate = float(rate)
        self.num_updates = 0
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shadow: dict[str, torch.Tensor] = {
            name: params[name].detach().to(torch.float32).clone() for name in self.names}

    def _params(self, model: torch.nn.Module) -> list[torch.Tensor]:
        params = dict(model.named_parameters())
        missing = [name for name in self.names if name not in params]
        if missing:
            raise KeyError(f"EMA: the model lacks parameters {missing[:3]}")
        return [params[name] for name in self.names]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One EMA step towards the current weights (call once per optimizer step)."""
        shadows = list(self.shadow.values())
        current = [p.detach().to(torch.float32) for p in self._params(model)]
        # Same rounding as the official ``(1 − μ)·p + μ·s`` (a lerp would differ in the last bit).
        scaled = torch._foreach_mul(current, 1.0 - self.rate)
        torch._foreach_mul_(shadows, self.rate)
        torch._foreach_add_(shadows, scaled)
        self.num_updates += 1

    @contextmanager
    @torch.no_grad()
    def swapped_in(self, model: torch.nn.Module) -> Iterator[None]:
        """Temporarily load the EMA weights into ``model`` (no deep copy of the training state)."""
        params = self._params(model)
        saved = [p.detach().clone() for p in params]
        for p, name in zip(params, self.names):
            p.copy_(self.shadow[name].to(p.dtype))
        try:
            yield
        finally:
            for p, original in zip(params, saved):
                p.copy_(original)

    def state_dict(self) -> dict[str, object]:
        return {"rate": self.rate, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        shadow = state["shadow"]
        if set(shadow) != set(self.names):  # type: ignore[arg-type]
            raise KeyError("EMA state does not match the model's parameters")
        for name in self.names:
            self.shadow[name].copy_(shadow[name])  # type: ignore[index]
        self.num_updates = int(state["num_updates"])  # type: ignore[arg-type]
