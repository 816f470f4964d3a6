"""ETRM: the TRM decoder with a demonstration encoder's context as its prefix (etrm-reference §4, fixed).

The decoder is the shared :class:`~trmlab.models.core.ReasoningCore` (same weights, same key names ``core.*``,
same ACT semantics as TRM); the puzzle-id table is replaced by :class:`~trmlab.models.encoders.DemoEncoder`
(``encoder.*``), whose context [B, P, D] fills the P prefix positions.

- Training: the encoder runs at **every ACT step** on the carry's ``current_data`` demos, with gradient, so
  every row's loss reaches the encoder at every step (caching a detached context starved it: etrm-reference
  §4.3).
- Evaluation: the context of a row is computed once, when the row starts (all rows at step 0 of a rollout),
  and reused for its remaining ACT steps (it is identical for a deterministic encoder; 15/16 of the encoder's
  evaluation compute saved at 16 steps).

Extra outputs: ``context`` [B, P, D] (for the collapse diagnostics), ``kl`` [B] (variational encoders) and,
in training, ``context_groups`` [B] (each row's puzzle identifier, for the contrastive context loss).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from trmlab.errors import DataError
from trmlab.models.act import ACTModel
from trmlab.models.core import ReasoningCore, prefix_length
from trmlab.models.diagnostics import context_diagnostics
from trmlab.models.encoders import DemoEncoder, EncoderOutput, EncoderSettings
from trmlab.models.losses import IGNORE_LABEL, TOKEN_LOSSES, act_loss, contrastive_context_loss

DEMO_KEYS = ("demo_inputs", "demo_labels", "demo_mask")
ENCODER_PREFIX = "encoder."


def demo_batch(data: dict[str, Tensor], model_name: str) -> tuple[Tensor, Tensor, Tensor]:
    """The three demo tensors of a batch, or a DataError saying how to get them."""
    missing = [k for k in DEMO_KEYS if k not in data]
    if missing:
        raise DataError(f"{model_name} needs the batch keys {', '.join(DEMO_KEYS)} "
                        f"(missing {', '.join(missing)}); build the dataset in the encoder layout "
                        f"(`trmlab data build-arc --layout encoder` or `trmlab data build-synthetic`)")
    return data["demo_inputs"], data["demo_labels"], data["demo_mask"]


def subset_rows(data: dict[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
    """The demo tensors of the selected rows only."""
    return {k: data[k][rows] for k in DEMO_KEYS}


class EncoderModelMixin:
    """Training-loop hooks shared by ETRM and ETRMTRM (see ``trmlab.training.loop``).

    Parameters named ``encoder.*`` are the encoder, everything else (``core.*``: the TRM decoder) the decoder.
    """

    def parameter_group(self, name: str) -> str:
        """``"encoder"`` or ``"decoder"`` for a parameter name (as in ``named_parameters()``)."""
        return "encoder" if name.startswith(ENCODER_PREFIX) else "decoder"

    def split_parameters(self) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
        """``{"decoder": [(name, p), ...], "encoder": [...]}``: what freezing and encoder_lr_scale act on."""
        groups: dict[str, list[tuple[str, torch.nn.Parameter]]] = {"decoder": [], "encoder": []}
        for name, param in self.named_parameters():  # type: ignore[attr-defined]
            groups[self.parameter_group(name)].append((name, param))
        return groups

    def param_groups(self, config: Any) -> list[dict[str, Any]]:
        """Two AdamATan2 groups: the decoder at ``lr`` and ``weight_decay``, the encoder at
        ``lr × encoder_lr_scale`` and ``weight_decay × encoder_weight_decay_scale``."""
        encoder = {"lr_scale": config.encoder_lr_scale, "wd_scale": config.encoder_weight_decay_scale}
        return [{"name": group, "params": [p for _, p in named if p.requires_grad],
                 **(encoder if group == "encoder" else {"lr_scale": 1.0, "wd_scale": 1.0})}
                for group, named in self.split_parameters().items()]

    def decoder_parameter_names(self) -> list[str]:
        """The parameters ``freeze_decoder_steps`` holds still (the encoder keeps training)."""
        return [name for name, p in self.split_parameters()["decoder"] if p.requires_grad]

    def compute_loss(self, outputs: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The official ACT loss (a sum over rows) + ``arch.kl_weight`` × the per-row KL + (training, when
        ``arch.contrastive_weight`` > 0) that weight × the contrastive context loss, all summed over rows, so
        the loop's division by the global batch size gives every term the same per-sample weight."""
        arch = self.arch  # type: ignore[attr-defined]
        loss, metrics = act_loss(outputs, arch.loss_type)
        if "kl" in outputs:
            loss = loss + arch.kl_weight * outputs["kl"].sum()
        if arch.contrastive_weight > 0 and "context_groups" in outputs:
            term, _ = contrastive_context_loss(outputs["context"], outputs["context_groups"],
                                               arch.contrastive_temperature)
            loss = loss + arch.contrastive_weight * term
            metrics["contrastive_loss"] = term.detach()  # a row sum, logged per sample like the others
        return loss, metrics

    def diagnostics(self, outputs: dict[str, Tensor]) -> dict[str, float]:
        """Encoder-collapse metrics of a step's outputs (``encoder/context_variance`` ...), under no_grad."""
        return context_diagnostics(outputs)


class ETRM(EncoderModelMixin, ACTModel):
    """TRM decoder + demo encoder (``arch.encoder_type``). Built by ``build_model`` for ``arch.name = etrm``.

    ``num_puzzle_identifiers`` is accepted for the common constructor signature and unused (no table).
    ``packing=False`` selects the encoder's naive full-canvas layout (benchmarks only).
    """

    def __init__(self, arch: Any, *, seq_len: int, vocab_size: int, num_puzzle_identifiers: int = 0,
                 packing: bool = True) -> None:
        prefix_len = prefix_length(arch)
        core = ReasoningCore(arch, seq_len=seq_len, vocab_size=vocab_size, prefix_len=prefix_len)
        super().__init__(arch, core)
        settings = EncoderSettings.from_arch(arch, prefix_len=prefix_len, vocab_size=vocab_size)
        self.encoder = DemoEncoder(arch.encoder_type, settings, packing=packing)

    def _encode(self, demos: dict[str, Tensor]) -> EncoderOutput:
        return self.encoder(*demo_batch(demos, "ETRM"), dtype=self.core.forward_dtype)

    def _encode_for_eval(self, demos: dict[str, Tensor]) -> EncoderOutput:
        out = self._encode(demos)
        if self.arch.context_refine_steps > 0:
            out = dataclasses.replace(out, context=self.refine_context(out.context, demos))
        return out

    def refine_context(self, context: Tensor, demos: dict[str, Tensor]) -> Tensor:
        """``arch.context_refine_steps`` gradient steps on each row's context [B, P, D] (weights untouched)
        that lower the token loss of the decoder reproducing the row's own demo outputs from their inputs,
        as the row itself is decoded (``halt_max_steps`` ACT steps from fresh latents). Each step moves a
        row's context by ``arch.context_refine_lr`` × its RMS along its normalised gradient."""
        inputs, labels, mask = demo_batch(demos, "ETRM")
        rows, slots = mask.nonzero(as_tuple=True)
        if rows.numel() == 0:
            return context
        demo_inputs = inputs[rows, slots]
        targets = labels[rows, slots].long()
        targets = torch.where(targets == 0, IGNORE_LABEL, targets)  # raw labels: PAD (0) is not scored
        token_loss = TOKEN_LOSSES[self.arch.loss_type]
        refined = context.detach().float()
        scale = refined.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
        with torch.enable_grad():
            for _ in range(self.arch.context_refine_steps):
                refined.requires_grad_(True)
                loss = token_loss(self._decode_fresh(demo_inputs, refined[rows]), targets).sum()
                (grad,) = torch.autograd.grad(loss, refined)
                grad_rms = grad.pow(2).mean(dim=(1, 2), keepdim=True).sqrt().clamp_min(1e-12)
                refined = (refined - self.arch.context_refine_lr * scale * grad / grad_rms).detach()
        return refined.to(context.dtype)

    def _decode_fresh(self, inputs: Tensor, prefix: Tensor) -> Tensor:
        """Logits [N, S, V] after ``halt_max_steps`` ACT steps of the decoder from fresh latents."""
        z_H, z_L = self.core.initial_latents(inputs.shape[0], inputs.device)
        z_H, z_L = self.core.reset_latents(z_H, z_L, torch.ones(inputs.shape[0], dtype=torch.bool,
                                                                 device=inputs.device))
        x = self.core.embed(inputs, prefix)
        for _ in range(self.arch.halt_max_steps):
            (z_H, z_L), (logits, _, _) = self.core.step(z_H, z_L, x)
        return logits

    def initial_prefix_state(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Evaluation cache: the context (and KL) of each row, and which rows must (re)compute it."""
        size, device = batch["inputs"].shape[0], batch["inputs"].device
        shape = (size, self.core.prefix_len, self.core.hidden)
        return {"context": torch.zeros(shape, dtype=self.core.forward_dtype, device=device),
                "kl": torch.zeros(size, device=device),
                "stale": torch.ones(size, dtype=torch.bool, device=device)}

    def reset_prefix_state(self, state: dict[str, Tensor], halted: Tensor,
                           batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {**state, "stale": state["stale"] | halted}

    def compute_prefix(self, data: dict[str, Tensor], state: dict[str, Tensor]
                       ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        if self.training:
            out = self._encode(data)
            # Nothing is cached in training; every row is marked stale so a later evaluation on this carry
            # recomputes its context instead of reading an old one.
            state = {**state, "stale": torch.ones_like(state["stale"])}
            return out.context, state, {**self._outputs(out.context, out.kl),
                                        "context_groups": data["puzzle_identifiers"]}
        context, kl, stale = state["context"], state["kl"], state["stale"]
        if bool(stale.all()):
            out = self._encode_for_eval(data)
            context, kl = out.context, out.kl if out.kl is not None else kl
        elif bool(stale.any()):
            rows = stale.nonzero(as_tuple=True)[0]
            out = self._encode_for_eval(subset_rows(data, rows))
            context = context.index_copy(0, rows, out.context.to(context.dtype))
            if out.kl is not None:
                kl = kl.index_copy(0, rows, out.kl)
        state = {"context": context, "kl": kl, "stale": torch.zeros_like(stale)}
        return context, state, self._outputs(context, kl if self.encoder.variational else None)

    @staticmethod
    def _outputs(context: Tensor, kl: Tensor | None) -> dict[str, Tensor]:
        return {"context": context} if kl is None else {"context": context, "kl": kl}
