"""LegacyDraws replays numpy's legacy RandomState draws exactly (the builder's random stream needs it)."""

from __future__ import annotations

import numpy as np
import pytest

from trmlab.data import legacy_rng
from trmlab.data.legacy_rng import LegacyDraws


@pytest.fixture(params=["default", "tiny-blocks"])
def blocks(request, monkeypatch):
    # Tiny blocks force refills (and the replay-after-IndexError path) in the middle of draws.
    if request.param == "tiny-blocks":
        monkeypatch.setattr(legacy_rng, "_BLOCK", 5)
        monkeypatch.setattr(legacy_rng, "_RESERVE", 3)
    return request.param


def reference_offsets(rs, n, transforms, ranges, swaps, translate):
    rows, cols = [0] * (len(transforms) * n), [0] * (len(transforms) * n)
    for p, t in enumerate(transforms):
        k0 = rs.randint(0, n)
        if translate:
            range_r, range_c = ranges[swaps[t]]
            for k in range(n):
                if k != k0:
                    rows[p * n + k] = rs.randint(0, range_r[k])
                    cols[p * n + k] = rs.randint(0, range_c[k])
    return rows, cols


@pytest.mark.parametrize("seed", [0, 42, 2**32 - 1])
def test_mixed_draws_equal_random_state(seed, blocks):
    ours, ref = LegacyDraws(seed), np.random.RandomState(seed)
    picker = np.random.default_rng(seed)
    swaps = (False, True, False, True, False, False, True, True)
    for _ in range(300):
        kind = picker.integers(0, 4)
        if kind == 0:
            n = int(picker.choice([0, 1, 2, 3, 7, 400, 1000]))
            order = list(range(n))
            ref.shuffle(order)
            assert ours.shuffle_order(n) == order
        elif kind == 1:
            t, colour_map = ours.augmentation()
            assert t == ref.randint(0, 8)
            assert colour_map == [0, *ref.permutation(np.arange(1, 10, dtype=np.uint8)).tolist()]
        elif kind == 2:
            n = int(picker.choice([1, 2, 3, 5, 8, 9, 17, 31, 2**31, 2**32]))
            assert ours.randint(n) == ref.randint(0, n)
        else:
            n = int(picker.integers(1, 6))
            transforms = picker.integers(0, 8, size=int(picker.integers(1, 5))).tolist()
            ranges = {False: (picker.integers(1, 31, n).tolist(), picker.integers(1, 31, n).tolist()),
                      True: (picker.integers(1, 31, n).tolist(), picker.integers(1, 31, n).tolist())}
            translate = bool(picker.integers(0, 2))
            assert ours.offsets(n, transforms, ranges, swaps, translate) == \
                reference_offsets(ref, n, transforms, ranges, swaps, translate)
    assert ours.randint(2**31) == ref.randint(0, 2**31)  # still in step


def test_randint_bounds():
    with pytest.raises(ValueError):
        LegacyDraws(0).randint(0)
    with pytest.raises(ValueError):
        LegacyDraws(0).randint(2**32 + 1)


@pytest.mark.parametrize("seed", [0, 7, 2**32 - 1])
def test_sequences_and_continuation_equal_random_state(seed, blocks):
    """sequences() = permutation(n) / rand() calls in order, continuing a RandomState that drew in C."""
    ref = np.random.RandomState(seed)
    state = np.random.RandomState(seed)
    assert (state.choice(50, size=7, replace=False) == ref.choice(50, size=7, replace=False)).all()
    ours = LegacyDraws.from_random_state(state)
    for program in [(9, 0, 3, 3, 3, 3, 3, 3, 3, 3), (1, 2, 6, 0), (0,), (4, 2, 2, 2, 2, 2, 2)]:
        for count in (1, 37, 0, 150):
            results = ours.sequences(program, count)
            for copy in range(count):
                for n, result in zip(program, results):
                    if n == 0:
                        assert result[copy] == ref.rand()
                    else:
                        assert result[copy].tolist() == ref.permutation(n).tolist()
        assert ours.randint(1000) == ref.randint(0, 1000)  # the stream continues in step
