"""The two optimizers of TRM training (trm-reference §6.1), implemented in-project.

- :class:`AdamATan2`: the update formula of the official ``adam-atan2`` CUDA kernel (decoupled decay, lerp
  moments, ``atan2`` instead of division by ``sqrt(v) + eps``), written with ``torch._foreach_*`` ops so it
  runs on CPU and CUDA. The PyPI package is CUDA-only and ``adam-atan2-pytorch`` is a different formula.
  Not its last bits: the kernel rounds the moments' lerp as ``fma(t, v1, fma(-t, v0, v0))`` and the step as
  one FMA, torch's ``lerp`` and a product then a difference here, which after 50 training steps left the
  weights 8.9e-8 apart (benchmarks/README.md, "Training trace against the official trainer").
- :class:`SparseSignSGD`: sign-SGD for the puzzle-embedding table; only the rows looked up in the step move.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist


class AdamATan2(torch.optim.Optimizer):
    """AdamATan2 with the official update, per parameter with its own step counter t = 1, 2, …::

        p ← p · (1 − lr · wd)
        m ← lerp(m, g, 1 − β1);   v ← lerp(v, g², 1 − β2)
        p ← p − (lr / (1 − β1^t)) · atan2(m, sqrt(v) / sqrt(1 − β2^t))

    Parameters whose ``.grad`` is None are skipped entirely (no decay, no moment update, no step
    increment), which is how frozen groups stay untouched. Set the learning rate per step through
    ``param_groups[i]["lr"]`` (the loop writes ``base_lr × lr_scale × schedule``). State per parameter:
    ``step`` (fp32 scalar on CPU, so the bias corrections are host floats without a device sync),
    ``exp_avg``, ``exp_avg_sq``.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.95),
                 weight_decay: float = 0.0) -> None:
        if lr < 0 or weight_decay < 0 or not (0 <= betas[0] <= 1 and 0 <= betas[1] <= 1):
            raise ValueError(f"AdamATan2: invalid lr={lr}, betas={betas} or weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    def _init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state[param]
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        """Apply one update to every parameter that has a gradient."""
        if closure is not None:
            raise ValueError("AdamATan2 does not support closures")
        for group in self.param_groups:
            self._step_group(group)

    def _step_group(self, group: dict[str, Any]) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        if any(p.grad.is_sparse for p in params):
            raise ValueError("AdamATan2 does not support sparse gradients")
        lr, wd = float(group["lr"]), float(group["weight_decay"])
        beta1, beta2 = group["betas"]
        grads = [p.grad for p in params]
        states = [self._init_state(p) for p in params]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1.0)

        if wd != 0:
            torch._foreach_mul_(params, 1.0 - lr * wd)
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_lerp_(exp_avg_sqs, torch._foreach_mul(grads, grads), 1.0 - beta2)

        # Per-parameter bias corrections (steps may differ between parameters after freezing).
        step_values = [float(s.item()) for s in steps]
        step_sizes = [lr / (1.0 - beta1 ** t) for t in step_values]
        denom_scales = [(1.0 - beta2 ** t) ** 0.5 for t in step_values]
        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denoms, denom_scales)
        # No foreach atan2 exists in torch; one fused kernel per tensor is still cheap (few, large tensors).
        updates = [torch.atan2(m, d) for m, d in zip(exp_avgs, denoms)]
        torch._foreach_mul_(updates, step_sizes)
        torch._foreach_sub_(params, updates)


class SparseSignSGD:
    """Sign-SGD for the puzzle-embedding table (``model.puzzle_embedding``, see design.md).

    After a training forward the table module holds ``local_weights`` (a leaf whose ``.grad`` is the
    gradient of the looked-up rows) and ``local_ids``. :meth:`step` gathers both across ranks (every rank
    then applies the identical update to its full copy of the table), sums the gradient per unique id and
    updates only those rows: ``w ← w · (1 − lr · wd) − lr · sign(Σ g)``. Untouched rows get no decay.
    Stateless, so its ``state_dict`` only records the hyper-parameters.
    """

    def __init__(self, table: torch.nn.Module, lr: float = 1e-2, weight_decay: float = 0.1) -> None:
        self.table = table
        self.lr = lr
        self.weight_decay = weight_decay

    @torch.no_grad()
    def step(self) -> int:
        """Update the touched rows; return how many distinct rows moved (0 when nothing was looked up)."""
        local_weights = getattr(self.table, "local_weights", None)
        local_ids = getattr(self.table, "local_ids", None)
        if local_weights is None or local_weights.grad is None or local_ids is None:
            return 0
        grad, ids = local_weights.grad, local_ids.to(torch.long)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            grad, ids = _all_gather_cat(grad), _all_gather_cat(ids)
        unique_ids, inverse = torch.unique(ids, return_inverse=True)
        grad_sum = torch.zeros(unique_ids.shape[0], grad.shape[1], dtype=grad.dtype, device=grad.device)
        grad_sum.index_add_(0, inverse, grad)
        weights: torch.Tensor = self.table.weights
        rows = weights[unique_ids]
        rows.mul_(1.0 - self.lr * self.weight_decay).add_(torch.sign(grad_sum).to(rows.dtype), alpha=-self.lr)
        weights[unique_ids] = rows
        return int(unique_ids.shape[0])

    def zero_grad(self) -> None:
        """Drop the local gradient (the next forward makes a fresh ``local_weights`` leaf anyway)."""
        local_weights = getattr(self.table, "local_weights", None)
        if local_weights is not None:
            local_weights.grad = None

    def state_dict(self) -> dict[str, float]:
        return {"lr": float(self.lr), "weight_decay": float(self.weight_decay)}


def _all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0 (same shape on each rank: the local batch)."""
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)
