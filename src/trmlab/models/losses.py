"""Token losses and the official ACT loss composition (trm-reference §4).

Metric populations returned by :func:`act_loss` (all are sums over rows; the caller divides):

- ``count``, ``accuracy``, ``exact_accuracy``, ``q_halt_accuracy``, ``steps``: the official population, rows
  that **halted at this step** and have at least one valid label. Divide by ``count``.
- ``all_rows/count``, ``all_rows/accuracy``, ``all_rows/exact_accuracy``, ``all_rows/q_halt_accuracy``,
  ``all_rows/steps``: every in-flight row with at least one valid label, halted or not (what the model does on
  the data it is processing right now). Divide by ``all_rows/count``.
- ``lm_loss``, ``q_halt_loss`` (and ``q_continue_loss`` when trained): summed over all rows; the training loop
  divides them by global_batch_size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (the usual alias)

from trmlab.errors import ConfigError

IGNORE_LABEL = -100


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log(s(x) / Σ s(x)) with s(x) = 1/(1 − x) for x < 0 and x + 1 otherwise."""
    s = torch.where(x < 0, 1 / (1 - x + 1e-30), x + 1)
    return torch.log(s / s.sum(dim=dim, keepdim=True))


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token stablemax CE [B, S] computed in float64; 0 where the label is −100."""
    valid = labels != IGNORE_LABEL
    logprobs = log_stablemax(logits.to(torch.float64))
    picked = logprobs.gather(-1, torch.where(valid, labels, 0).long().unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, picked, 0)


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token softmax CE [B, S] in float32; 0 where the label is −100."""
    flat = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.long().reshape(-1),
                           ignore_index=IGNORE_LABEL, reduction="none")
    return flat.view(labels.shape)


TOKEN_LOSSES = {"stablemax_cross_entropy": stablemax_cross_entropy,
                "softmax_cross_entropy": softmax_cross_entropy}


def _row_metrics(rows: torch.Tensor, token_acc: torch.Tensor, seq_correct: torch.Tensor,
                 q_halt: torch.Tensor, steps: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "count": rows.sum(),
        "accuracy": torch.where(rows, token_acc, 0).sum(),
        "exact_accuracy": (rows & seq_correct).sum(),
        "q_halt_accuracy": (rows & ((q_halt >= 0) == seq_correct)).sum(),
        "steps": torch.where(rows, steps, 0).sum(),
    }


def act_loss(outputs: dict[str, torch.Tensor], loss_type: str = "stablemax_cross_entropy"
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The official loss of one ACT step, summed over rows, and its metrics (see the module docstring).

    loss = Σ_rows mean_valid_tokens(CE) + 0.5 · (BCE(q_halt, row exactly correct) [+ BCE(q_continue,
    target_q_continue) when ``outputs`` has ``target_q_continue``]). A row without valid labels counts as
    correct, as officially.
    """
    if loss_type not in TOKEN_LOSSES:
        raise ConfigError(f"arch.loss_type={loss_type!r}: expected one of {sorted(TOKEN_LOSSES)}")
    logits, labels = outputs["logits"], outputs["labels"]
    q_halt = outputs["q_halt_logits"]
    with torch.no_grad():
        mask = labels != IGNORE_LABEL
        counts = mask.sum(-1)
        divisor = counts.clamp_min(1).unsqueeze(-1)
        correct = mask & (logits.argmax(-1) == labels)
        seq_correct = correct.sum(-1) == counts
        token_acc = (correct.float() / divisor).sum(-1)
        has_labels = counts > 0
        steps = outputs["steps"]
        metrics = _row_metrics(outputs["halted"] & has_labels, token_acc, seq_correct, q_halt, steps)
        everyone = _row_metrics(has_labels, token_acc, seq_correct, q_halt, steps)
        metrics.update({f"all_rows/{k}": v for k, v in everyone.items()})

    lm_loss = (TOKEN_LOSSES[loss_type](logits, labels) / divisor).sum()
    q_halt_loss = F.binary_cross_entropy_with_logits(q_halt, seq_correct.to(q_halt.dtype), reduction="sum")
    metrics["lm_loss"] = lm_loss.detach()
    metrics["q_halt_loss"] = q_halt_loss.detach()
    q_terms = q_halt_loss
    if "target_q_continue" in outputs:
        q_continue_loss = F.binary_cross_entropy_with_logits(
            outputs["q_continue_logits"], outputs["target_q_continue"], reduction="sum")
        metrics["q_continue_loss"] = q_continue_loss.detach()
        q_terms = q_terms + q_continue_loss
    return lm_loss + 0.5 * q_terms, metrics


def contrastive_context_loss(context: torch.Tensor, groups: torch.Tensor, temperature: float
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Supervised contrastive loss (InfoNCE with several positives) on encoder contexts, summed over rows.

    ``context`` [B, P, D] is flattened per row and L2-normalised; rows with the same ``groups`` id [B] (the
    same puzzle, i.e. the same rule instance seen through different demo subsets) are positives, every other
    row of the batch a negative. A row's term is −mean over its positives of log softmax(cos / temperature)
    over all other rows; rows without a positive (or with an all-zero context, i.e. no demos) contribute 0.
    Returns (loss summed over rows, number of rows that contributed) — a sum, so the loop's division by the
    global batch size gives it the same per-sample weight as the token loss.
    """
    flat = context.float().flatten(1)
    present = flat.abs().sum(1) > 0
    z = F.normalize(flat, dim=1)
    logits = z @ z.T / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    valid = present[:, None] & present[None, :] & ~eye
    positive = valid & (groups[:, None] == groups[None, :])
    log_prob = logits.masked_fill(~valid, float("-inf")).log_softmax(1)
    count = positive.sum(1)
    anchors = count > 0
    per_row = -(log_prob.masked_fill(~positive, 0.0)).sum(1) / count.clamp_min(1)
    return torch.where(anchors, per_row, torch.zeros_like(per_row)).sum(), anchors.sum()
