"""numpy's legacy global RNG draws, replayed exactly from the raw MT19937 stream, faster.

The official builder calls ``np.random.randint`` / ``np.random.permutation`` / ``np.random.shuffle``
millions of times; each call costs ~1.3 µs of numpy argument handling. The draws themselves are simple
functions of the raw 32-bit MT19937 outputs (numpy ``random/src/distributions``, legacy paths):

- ``randint(0, n)`` (default int64 dtype) with ``n >= 2``: ``mask`` = smallest ``2**k - 1 >= n - 1``; take raw
  words until ``word & mask <= n - 1``. ``n == 1`` consumes nothing.
- ``shuffle(x)`` of length n (list or 1-D array): for ``i = n-1 .. 1``: ``j`` = the same masked rejection
  draw with bound ``i``; swap ``x[i], x[j]``. ``permutation(a)`` is ``shuffle`` of a copy.

:class:`LegacyDraws` replays them from ``MT19937.random_raw`` blocks, seeded like ``np.random.seed(seed)``, so
its results equal a ``RandomState(seed)`` making the same calls (tests/test_augment_rng.py compares them).
"""

from __future__ import annotations

import numpy as np

_BLOCK = 1 << 16  # raw words fetched at a time
_RESERVE = 4096   # words guaranteed before a batch of draws; a batch running out is replayed after a refill


def _mask(bound: int) -> int:
    return (1 << bound.bit_length()) - 1


_MASKS = tuple(_mask(bound) for bound in range(256))  # rejection masks of small bounds
# (bound, mask) of the 8 swaps of a permutation of 9 items, i = 8 .. 1.
_PERM9_STEPS = tuple((i, _mask(i)) for i in range(8, 0, -1))


class LegacyDraws:
    """Exact replacement for a ``np.random.RandomState(seed)`` used only through the methods below."""

    def __init__(self, seed: int):
        self._continue_from(np.random.RandomState(seed))  # legacy seeding (not SeedSequence)

    @classmethod
    def from_random_state(cls, state: np.random.RandomState) -> LegacyDraws:
        """Continue the stream of ``state`` where it stands (e.g. after a ``state.choice`` done in C)."""
        draws = cls.__new__(cls)
        draws._continue_from(state)
        return draws

    def _continue_from(self, state: np.random.RandomState) -> None:
        legacy = state.get_state()
        self.bit_generator = np.random.MT19937()
        self.bit_generator.state = {"bit_generator": "MT19937", "state": {"key": legacy[1], "pos": legacy[2]}}
        self.raw: list[int] = []
        self.pos = 0

    def _reserve(self, words: int = _RESERVE) -> None:
        if self.pos + words > len(self.raw):
            self.raw = self.raw[self.pos:] + self.bit_generator.random_raw(max(_BLOCK, words)).tolist()
            self.pos = 0

    def randint(self, n: int) -> int:
        """``RandomState.randint(0, n)`` for ``n >= 1``."""
        if not 1 <= n <= 2**32:
            raise ValueError(f"randint(0, {n}): supported for 1 <= n <= 2**32 (the 32-bit path)")
        bound = n - 1
        if bound == 0:
            return 0
        mask = _mask(bound)
        while True:
            self._reserve(1)
            value = self.raw[self.pos] & mask
            self.pos += 1
            if value <= bound:
                return value

    def shuffle_order(self, n: int) -> list[int]:
        """The permutation ``np.random.shuffle`` applies to a list of length n (``order[k]`` = old index)."""
        order = list(range(n))
        for i in range(n - 1, 0, -1):
            j = self.randint(i + 1)
            order[i], order[j] = order[j], order[i]
        return order

    def augmentation(self) -> tuple[int, list[int]]:
        """One official augmentation trial: ``randint(0, 8)`` then ``permutation(arange(1, 10))``.

        Returns ``(t, colour map as 10 ints with 0 fixed)``.
        """
        while True:
            self._reserve()
            start = self.pos
            try:
                return self._augmentation_unchecked()
            except IndexError:  # ran past the reserve (astronomically rare): refill and replay
                self.pos = start
                self._reserve(len(self.raw) - start + _BLOCK)

    def _augmentation_unchecked(self) -> tuple[int, list[int]]:
        raw, pos = self.raw, self.pos
        t = raw[pos] & 7  # randint(0, 8): mask 7 never rejects
        pos += 1
        perm = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]  # perm[1:] is the shuffled arange(1, 10)
        for i, mask in _PERM9_STEPS:
            j = raw[pos] & mask
            pos += 1
            while j > i:
                j = raw[pos] & mask
                pos += 1
            perm[i + 1], perm[j + 1] = perm[j + 1], perm[i + 1]
        self.pos = pos
        return t, perm

    def sequences(self, program: tuple[int, ...], count: int) -> list[np.ndarray]:
        """``count`` repetitions of a fixed series of legacy calls, in stream order, vectorised.

        ``program`` entries: ``1 <= n <= 256`` → ``permutation(n)``, ``0`` → ``rand()``. Returns one array per
        entry: int64 [count, n] permutations, or float64 [count] for ``rand()`` (the legacy double from two
        words, ``((w1 >> 5) * 2**26 + (w2 >> 6)) / 2**53``).

        Only the rejection loop runs in Python (it decides which word each draw takes); the accepted values
        are collected per repetition and the Fisher-Yates swaps are applied to all repetitions at once.
        """
        slots = _program_slots(program)
        plan = _slot_plan(slots)
        values: list[int] = []
        for _ in range(count):
            while True:
                self._reserve()
                start = self.pos
                try:
                    self._collect_unchecked(plan, values)
                    break
                except IndexError:  # see augmentation(); drop this repetition's partial values and replay
                    del values[len(values) - len(values) % len(slots):]
                    self.pos = start
                    self._reserve(len(self.raw) - start + _BLOCK)
        words = np.array(values, dtype=np.int64).reshape(count, len(slots))
        return _apply_program(program, slots, words)

    def _collect_unchecked(self, plan: tuple[tuple[int, int, int], ...], values: list[int]) -> None:
        raw, pos = self.raw, self.pos
        for gap, mask, bound in plan:
            if gap:  # draws that never reject take the next words as they are (masked later)
                values += raw[pos:pos + gap]
                pos += gap
                if len(raw) < pos:
                    raise IndexError
            if mask:
                value = raw[pos] & mask
                pos += 1
                while value > bound:
                    value = raw[pos] & mask
                    pos += 1
                values.append(value)
        self.pos = pos

    def offsets(self, n_examples: int, transforms: list[int], ranges: dict[bool, tuple[list[int], list[int]]],
                swaps: tuple[bool, ...], translate: bool) -> tuple[list[int], list[int]]:
        """The official per-puzzle translation draws for one group (trm-reference §7.3 step 4).

        For each puzzle: ``k0 = randint(0, n_examples)``; then, when ``translate``, for each example k != k0:
        ``r0 = randint(0, rows[k])``, ``c0 = randint(0, cols[k])`` with the ranges of the puzzle's transform
        (``ranges[swaps[t]]``). Returns flat row/col offset lists of length P * n_examples.
        """
        rows_out = [0] * (len(transforms) * n_examples)
        cols_out = [0] * (len(transforms) * n_examples)
        k0_mask = _mask(n_examples - 1)
        masks = {key: ([_mask(r - 1) for r in rr], [_mask(c - 1) for c in cc])
                 for key, (rr, cc) in ranges.items()}
        for p, t in enumerate(transforms):
            self._reserve()
            start = self.pos
            try:
                self._puzzle_offsets(p, n_examples, k0_mask, ranges[swaps[t]], masks[swaps[t]], translate,
                                     rows_out, cols_out)
            except IndexError:  # see augmentation()
                self.pos = start
                self._reserve(len(self.raw) - start + _BLOCK)
                self._puzzle_offsets(p, n_examples, k0_mask, ranges[swaps[t]], masks[swaps[t]], translate,
                                     rows_out, cols_out)
        return rows_out, cols_out

    def _puzzle_offsets(self, p: int, n: int, k0_mask: int, ranges: tuple[list[int], list[int]],
                        masks: tuple[list[int], list[int]], translate: bool, rows_out: list[int],
                        cols_out: list[int]) -> None:
        raw, pos = self.raw, self.pos
        k0 = 0
        if n > 1:
            k0 = raw[pos] & k0_mask
            pos += 1
            while k0 > n - 1:
                k0 = raw[pos] & k0_mask
                pos += 1
        if translate:
            range_r, range_c = ranges
            mask_r, mask_c = masks
            base = p * n
            for k in range(n):
                if k == k0:
                    continue
                for bounds, bit_masks, out in ((range_r, mask_r, rows_out), (range_c, mask_c, cols_out)):
                    bound = bounds[k] - 1
                    if bound > 0:
                        mask = bit_masks[k]
                        value = raw[pos] & mask
                        pos += 1
                        while value > bound:
                            value = raw[pos] & mask
                            pos += 1
                        out[base + k] = value
        self.pos = pos


def _program_slots(program: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """(mask, bound) of every word-consuming draw of one repetition; ``rand()`` takes two full words."""
    slots: list[tuple[int, int]] = []
    for n in program:
        if not 0 <= n <= 256:
            raise ValueError(f"program entry {n}: supported are permutations of 1..256 items and 0 (rand)")
        if n == 0:
            slots += [(0xFFFFFFFF, 0xFFFFFFFF)] * 2
        slots += [(_MASKS[i], i) for i in range(n - 1, 0, -1)]
    return tuple(slots)


def _slot_plan(slots: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int, int], ...]:
    """Group the slots as (words taken as they are, then one draw that may reject: mask, bound).

    A draw whose bound is ``mask`` itself never rejects; a trailing group has mask 0 (nothing after the gap).
    """
    plan, gap = [], 0
    for mask, bound in slots:
        if mask == bound:
            gap += 1
        else:
            plan.append((gap, mask, bound))
            gap = 0
    if gap:
        plan.append((gap, 0, 0))
    return tuple(plan)


def _apply_program(program: tuple[int, ...], slots: tuple[tuple[int, int], ...], words: np.ndarray
                   ) -> list[np.ndarray]:
    """Turn the accepted words [count, slots] into the program's permutations and rand() values."""
    masks = np.array([mask for mask, _ in slots], dtype=np.int64)
    draws = words & masks  # never-rejecting draws were stored unmasked
    rows = np.arange(len(words))
    results: list[np.ndarray] = []
    column = 0
    for n in program:
        if n == 0:
            high, low = words[:, column] >> 5, words[:, column + 1] >> 6
            results.append((high * 67108864.0 + low) / 9007199254740992.0)
            column += 2
            continue
        perm = np.tile(np.arange(n, dtype=np.int64), (len(words), 1))
        for i in range(n - 1, 0, -1):  # Fisher-Yates as numpy's legacy shuffle: swap i with j <= i
            j = draws[:, column]
            column += 1
            at_j = perm[rows, j]
            perm[rows, j] = perm[:, i]
            perm[:, i] = at_j
        results.append(perm)
    return results
