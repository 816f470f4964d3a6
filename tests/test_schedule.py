"""The learning-rate schedule on a grid. Run: .venv/bin/python -m pytest -q tests/test_schedule.py"""

from __future__ import annotations

import math

import pytest

from trmlab.training.schedule import lr_at


def test_linear_warmup_then_constant_like_the_official_runs():
    assert lr_at(1, 1e-4, 2000, 10_000, 1.0) == pytest.approx(1e-4 / 2000)
    assert lr_at(1000, 1e-4, 2000, 10_000, 1.0) == pytest.approx(5e-5)
    for step in (2000, 2001, 5000, 10_000, 20_000):
        assert lr_at(step, 1e-4, 2000, 10_000, 1.0) == pytest.approx(1e-4)


@pytest.mark.parametrize("step", [0, 1, 3, 4, 5, 7, 9, 12, 14, 20])
def test_cosine_grid(step):
    base, warmup, total, ratio = 2.0, 4, 14, 0.1
    if step < warmup:
        expected = base * step / warmup
    else:
        progress = (step - warmup) / (total - warmup)
        expected = base * (ratio + max(0.0, (1 - ratio) * 0.5 * (1 + math.cos(math.pi * progress))))
    assert lr_at(step, base, warmup, total, ratio) == pytest.approx(expected)


def test_endpoints():
    assert lr_at(4, 2.0, 4, 14, 0.1) == pytest.approx(2.0)          # peak right after warmup
    assert lr_at(14, 2.0, 4, 14, 0.1) == pytest.approx(0.2)         # floor at the last step
    assert lr_at(9, 2.0, 4, 14, 0.1) == pytest.approx(2.0 * (0.1 + 0.45))
    assert lr_at(1, 3.0, 0, 5, 0.0) == pytest.approx(3.0 * 0.5 * (1 + math.cos(math.pi / 5)))
    assert lr_at(5, 1.0, 5, 5, 0.0) == pytest.approx(1.0)           # total == warmup: no division by zero
