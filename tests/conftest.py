"""Shared test fixtures.

Reference files live in ``../shared/`` beside the checkout (CI provides it). Where it is absent (a user's
clone) tests that need it skip with a message naming the missing path; under CI (``CI=true``) a missing
fixture fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRMLAB_SHARED", REPO_ROOT.parent / "shared"))


def shared_path(relative: str) -> Path:
    """Path of a file under ../shared/, or skip (fail under CI) when it is missing."""
    path = SHARED / relative
    if not path.exists():
        message = f"reference fixture missing: {path} (tests read ../shared/ beside the checkout)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def official_trm_tiny() -> Path:
    """The official-layout tiny TRM checkpoint folder (step_100, all_config.yaml, vectors.npz)."""
    return shared_path("fixtures/official-trm/tiny")


@pytest.fixture
def research_etrm_small() -> Path:
    """A research-code ETRM checkpoint folder (step_0, all_config.yaml, vectors.npz with its outputs)."""
    return shared_path("fixtures/etrm-research/small")


@pytest.fixture
def official_arc_build_small() -> Path:
    """The official ARC builder's input and output for a small input (input/, output/, command.txt)."""
    return shared_path("fixtures/official-arc-build/small")


@pytest.fixture
def official_eval_small() -> Path:
    """Raw predictions and the official evaluator's metrics/submission for them."""
    return shared_path("fixtures/official-eval/small")


@pytest.fixture
def arc_kaggle_combined() -> Path:
    """The official ARC JSON inputs (third-party data: read it, never commit it)."""
    return shared_path("data/arc-kaggle-combined")


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
