"""Learning-rate schedule (trm-reference §6.2): linear warmup, then cosine down to ``lr_min_ratio``."""

from __future__ import annotations

import math


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float = 1.0) -> float:
    """Learning rate of optimizer step ``step`` (1 = the first batch), a pure function of the step.

    ``base · step / warmup`` while ``step < warmup``; afterwards
    ``base · (min_ratio + max(0, (1 − min_ratio) · ½ · (1 + cos(π · progress))))`` with
    ``progress = (step − warmup) / max(1, total − warmup)``. With ``min_ratio = 1`` (every official run)
    this is warmup then constant.
    """
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    cosine = max(0.0, (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))
    return base_lr * (min_ratio + cosine)
