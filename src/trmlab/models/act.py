"""The ACT wrapper with the official carry semantics (trm-reference §3), shared by every variant.

:class:`ACTModel` runs one ACT step per call around a :class:`~trmlab.models.core.ReasoningCore`. Where the
prefix [B, P, D] comes from is the one thing a variant supplies, through three extension points:

- :meth:`ACTModel.compute_prefix` ``(data, state) -> (prefix, new_state, extra_outputs)``: TRM looks up its
  puzzle table; ETRM runs its demo encoder on ``data`` (``current_data``, so ``demo_*`` keys ride along) every
  step; ETRMTRM advances its recurrent encoder state.
- :meth:`ACTModel.initial_prefix_state` ``(batch) -> dict``: extra per-row state kept in ``carry.extra``
  (ETRMTRM's encoder carry; TRM has none).
- :meth:`ACTModel.reset_prefix_state` ``(state, halted, batch) -> dict``: re-initialise that state for rows
  that restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trmlab.errors import DataError
from trmlab.models.core import ReasoningCore


@dataclass
class ACTCarry:
    """State carried between ACT steps (and optimizer steps) for every batch row.

    ``current_data`` holds every batch key (inputs, labels, puzzle_identifiers, demo_* ...) of the sample each
    row is working on; ``extra`` holds variant state (e.g. an encoder carry).
    """

    z_H: torch.Tensor
    z_L: torch.Tensor
    steps: torch.Tensor
    halted: torch.Tensor
    current_data: dict[str, torch.Tensor]
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


def _batch_size(batch: dict[str, torch.Tensor]) -> int:
    if "inputs" not in batch:
        raise DataError(f"batch has no 'inputs' tensor (keys: {sorted(batch)})")
    return int(batch["inputs"].shape[0])


def _where_rows(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view((-1,) + (1,) * (new.ndim - 1)), new, old)


class ACTModel(nn.Module):
    """One ACT step per call with the official semantics; subclasses supply the prefix.

    Training (``self.training``): rows that halted on the previous call restart from H_init/L_init and take
    the incoming batch row; the others keep their own data and ignore the incoming row. A row halts at
    ``halt_max_steps`` or when q says so (``q_halt > 0``; ``q_halt > q_continue`` when no_ACT_continue is
    false), but exploration may impose a random minimum step count (drawn per row every step, from
    ``self.exploration_generator`` when set, else the global RNG). Evaluation: rows halt only at
    ``halt_max_steps`` (q-halting only with ``arch.eval_q_halting``).
    """

    def __init__(self, arch: Any, core: ReasoningCore) -> None:
        super().__init__()
        self.arch = arch
        self.core = core
        self.exploration_generator: torch.Generator | None = None

    # -- extension points ------------------------------------------------------------------------------

    def compute_prefix(self, data: dict[str, torch.Tensor], state: dict[str, torch.Tensor]
                       ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Prefix [B, P, D] for the rows' ``current_data``; also the new variant state and extra outputs."""
        raise NotImplementedError

    def initial_prefix_state(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Variant state of a fresh carry (all rows halted)."""
        return {}

    def reset_prefix_state(self, state: dict[str, torch.Tensor], halted: torch.Tensor,
                           batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Variant state after resetting the rows in ``halted``."""
        return state

    # -- public API ----------------------------------------------------------------------------------------

    @property
    def forward_dtype(self) -> torch.dtype:
        """The activation dtype in use (see :attr:`ReasoningCore.forward_dtype`)."""
        return self.core.forward_dtype

    def use_compiled_step(self, step: Any) -> None:
        """Make :meth:`rollout` run its ACT steps through ``step`` (``torch.compile(self)``; None: plain).

        Training compiles the model's call; without this, evaluation would run the same model eagerly (2.3x
        slower on an H200 at the ARC shape: benchmarks/README.md). Kept in ``__dict__`` rather than as an
        attribute: a compiled wrapper holds this module, so registering it as a submodule would make the
        module tree circular and put its parameters into the state dict twice.
        """
        self.__dict__["_compiled_step"] = step

    def initial_carry(self, batch: dict[str, torch.Tensor]) -> ACTCarry:
        """A fresh carry for ``batch``'s shapes: zero latents and data, steps 0, every row halted."""
        size = _batch_size(batch)
        device = batch["inputs"].device
        z_H, z_L = self.core.initial_latents(size, device)
        return ACTCarry(
            z_H=z_H, z_L=z_L,
            steps=torch.zeros(size, dtype=torch.int32, device=device),
            halted=torch.ones(size, dtype=torch.bool, device=device),
            current_data={k: torch.zeros_like(v) for k, v in batch.items() if isinstance(v, torch.Tensor)},
            extra=self.initial_prefix_state(batch),
        )

    def forward(self, carry: ACTCarry, batch: dict[str, torch.Tensor]
                ) -> tuple[ACTCarry, dict[str, torch.Tensor]]:
        """One ACT step. Returns the new carry and outputs: ``logits`` [B, S, V], ``q_halt_logits``,
        ``q_continue_logits`` [B] (fp32), ``labels`` (of the data processed), ``halted``, ``steps`` [B], and
        ``target_q_continue`` in training when no_ACT_continue is false."""
        halted = carry.halted
        missing = [k for k in carry.current_data if k not in batch]
        if missing:
            raise DataError(f"batch lacks keys {missing} that the carry was created with")
        data = {k: _where_rows(halted, batch[k], v) for k, v in carry.current_data.items()}
        z_H, z_L = self.core.reset_latents(carry.z_H, carry.z_L, halted)
        state = self.reset_prefix_state(carry.extra, halted, batch)
        steps = torch.where(halted, 0, carry.steps)

        prefix, state, extra_outputs = self.compute_prefix(data, state)
        x = self.core.embed(data["inputs"], prefix)
        (z_H, z_L), (logits, q_halt, q_continue) = self.core.step(z_H, z_L, x)
        outputs = {"logits": logits, "q_halt_logits": q_halt, "q_continue_logits": q_continue,
                   **extra_outputs}

        with torch.no_grad():
            steps = steps + 1
            is_last = steps >= self.arch.halt_max_steps
            new_halted = is_last
            q_halting = self.training or self.arch.eval_q_halting
            if q_halting and self.arch.halt_max_steps > 1:
                if self.arch.no_ACT_continue:
                    new_halted = new_halted | (q_halt > 0)
                else:
                    new_halted = new_halted | (q_halt > q_continue)
                if self.training:
                    new_halted = new_halted & (steps >= self._exploration_min_steps(q_halt))
                    if not self.arch.no_ACT_continue:
                        outputs["target_q_continue"] = self._bootstrap_target(z_H, z_L, x, is_last)
        if "labels" in data:
            outputs["labels"] = data["labels"]
        outputs["halted"] = new_halted
        outputs["steps"] = steps
        return ACTCarry(z_H, z_L, steps, new_halted, data, state), outputs

    def _exploration_min_steps(self, q_halt: torch.Tensor) -> torch.Tensor:
        """Per row: with probability halt_exploration_prob a minimum halting step in [2, max], else 0."""
        gen, size, device = self.exploration_generator, q_halt.shape[0], q_halt.device
        explore = torch.rand(size, generator=gen, device=device) < self.arch.halt_exploration_prob
        low_high = (2, self.arch.halt_max_steps + 1)
        minimum = torch.randint(*low_high, (size,), generator=gen, device=device, dtype=torch.int32)
        return explore * minimum

    def _bootstrap_target(self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor,
                          is_last: torch.Tensor) -> torch.Tensor:
        """Q-learning target of q_continue: sigmoid of the next step's q (max of halt/continue; q_halt at the
        last step), from one extra no-grad step on the same input (the paper/HRM recipe)."""
        _, (_, next_halt, next_continue) = self.core.step(z_H, z_L, x.detach())
        return torch.sigmoid(torch.where(is_last, next_halt, torch.maximum(next_halt, next_continue)))

    @torch.no_grad()
    def rollout(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor, steps: int | None = None,
                **extra: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Evaluation from a fresh carry: one dict per ACT step (``logits``, ``q_halt_logits``,
        ``q_continue_logits``, ``preds``, ``halted``), ``steps`` defaulting to halt_max_steps. Runs in eval
        mode (restored afterwards) without gradients; ``extra`` carries further batch keys (ETRM's demo_*).
        With ``arch.eval_q_halting`` a row's answer is that of the step where ``halted`` first becomes true
        (a halted row restarts on the next call, as in training)."""
        batch = {"inputs": inputs, "puzzle_identifiers": puzzle_identifiers, **extra}
        step = self.__dict__.get("_compiled_step")
        step = self if step is None else step  # not `or`: a compiled wrapper has no truth value
        was_training = self.training
        self.eval()
        try:
            carry = self.initial_carry(batch)
            results = []
            for _ in range(self.arch.halt_max_steps if steps is None else steps):
                carry, out = step(carry, batch)
                results.append({"logits": out["logits"], "q_halt_logits": out["q_halt_logits"],
                                "q_continue_logits": out["q_continue_logits"],
                                "preds": out["logits"].argmax(-1), "halted": out["halted"],
                                **{k: out[k] for k in ("context", "kl") if k in out}})  # encoder variants
            return results
        finally:
            self.train(was_training)


def answer_step(steps: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per row, the outputs of the first step at which it halted (the last step for rows that never did).

    ``steps`` is :meth:`rollout`'s list. With ``arch.eval_q_halting`` a row that halts early restarts on the
    next call, so the last step would hold the restarted run's output; its answer is its first halting step.
    Without q-halting rows halt only at the last step and this is ``steps[-1]``. Keys whose first dimension is
    not the batch are taken from the last step.
    """
    last = steps[-1]
    if "halted" not in last:
        return last
    halted = torch.stack([step["halted"] for step in steps])  # [T, B]
    first = torch.where(halted.any(0), halted.int().argmax(0), len(steps) - 1)
    if bool((first == len(steps) - 1).all()):
        return last
    rows = first.shape[0]
    chosen = {}
    for key, value in last.items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != rows:
            chosen[key] = value
            continue
        picked = value
        for index in range(len(steps) - 2, -1, -1):  # one step at a time: no [T, B, ...] stack of logits
            mask = (first == index).view(-1, *([1] * (value.dim() - 1)))
            picked = torch.where(mask, steps[index][key], picked)
        chosen[key] = picked
    return chosen

