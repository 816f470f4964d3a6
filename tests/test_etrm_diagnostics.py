"""Encoder-collapse diagnostics: the numbers mean what their names say.

Run: .venv/bin/python -m pytest -q tests/test_etrm_diagnostics.py  (< 1 s)
"""

from __future__ import annotations

import math

import torch

from trmlab.models.diagnostics import METRIC_NAMES, context_diagnostics


def test_collapsed_contexts():
    context = torch.randn(1, 3, 8).expand(5, -1, -1)
    stats = context_diagnostics({"context": context})
    assert abs(stats["encoder/context_variance"]) < 1e-10
    assert abs(stats["encoder/cosine_similarity"] - 1) < 1e-5
    assert abs(stats["encoder/effective_rank"] - 1) < 1e-3


def test_orthogonal_contexts_have_full_rank():
    basis = torch.eye(12)[:4].view(4, 3, 4) * 2.0  # four orthogonal contexts of equal norm
    stats = context_diagnostics({"context": basis, "kl": torch.tensor([1.0, 2.0, 3.0, 4.0])})
    assert abs(stats["encoder/cosine_similarity"]) < 1e-6
    assert abs(stats["encoder/effective_rank"] - 4) < 1e-4
    # elements 0-3: one row holds 2, three hold 0 → population variance 0.75; elements 4-11: 0
    expected_var = (4 * 0.75) / 12
    assert math.isclose(stats["encoder/context_variance"], expected_var, rel_tol=1e-5)
    assert math.isclose(stats["encoder/kl"], 2.5)
    assert set(stats) <= set(METRIC_NAMES)


def test_zero_rows_are_ignored_and_trm_outputs_give_nothing():
    context = torch.zeros(4, 2, 3)
    context[0] = 1.0
    context[1] = -1.0
    stats = context_diagnostics({"context": context})
    assert abs(stats["encoder/cosine_similarity"] + 1) < 1e-6  # the two zero rows are left out
    assert context_diagnostics({"logits": torch.zeros(2, 3)}) == {}
    assert "encoder/effective_rank" not in context_diagnostics({"context": context[:1]})


def test_accumulator_weights_batches_by_rows():
    from trmlab.models.diagnostics import DiagnosticsAccumulator

    acc = DiagnosticsAccumulator()
    acc.add({"logits": torch.zeros(1)})  # a TRM step: ignored
    same = torch.ones(3, 2, 2)
    acc.add({"context": same, "kl": torch.tensor([1.0, 1.0, 1.0])})  # cosine 1, 3 rows
    basis = torch.eye(4).view(4, 2, 2)
    acc.add({"context": basis, "kl": torch.tensor([3.0, 3.0, 3.0, 3.0])})  # cosine 0, 4 rows
    result = acc.result()
    assert math.isclose(result["encoder/cosine_similarity"], 3 / 7, rel_tol=1e-5)
    assert math.isclose(result["encoder/kl"], (3 * 1 + 4 * 3) / 7, rel_tol=1e-5)
