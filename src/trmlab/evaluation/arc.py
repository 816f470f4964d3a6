"""ARC voting and pass@K (trm-reference §8), pure numpy, single process.

Every augmented copy of a test input votes for its (de-augmented) predicted grid. Candidates are ranked
by vote count, then by the mean sigmoid(q_halt) of their voters, descending; exact ties keep first-seen order.
pass@K of a test input = its true output is among the first K candidates; a task scores the fraction of its
test inputs passed; ``ARC/pass@K`` = mean over the tasks evaluated (the denominator is the number of selected
tasks, never the full test set when a subset was asked for).

Unlike the official evaluator the vote store is per evaluation (:meth:`ArcScorer.start` clears it and
:meth:`ArcScorer.finish` starts a new one), and a test input without votes still gets a submission entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trmlab.errors import DataError
from trmlab.evaluation.grids import crop_grid, grid_hash, inverse_augmentation, parse_identifier
from trmlab.evaluation.testset import ArcTestSet
from trmlab.progress import Progress

DEFAULT_PASS_KS = (1, 2, 5, 10, 100, 1000)
# What a submission holds for a test input that received no votes (the official file skipped the entry and
# shifted every later test input of the task onto the wrong slot).
NO_VOTE_GRID: list[list[int]] = [[0]]
# predictions.json keeps the grids of this many top candidates per test input (all candidates keep counts).
PREDICTION_GRIDS_KEPT = 10


def sigmoid64(logits: np.ndarray) -> np.ndarray:
    """sigmoid in float64, the precision the official evaluator votes in."""
    x = np.asarray(logits).astype(np.float64)
    return 1.0 / (1.0 + np.exp(-x))


def metric_key(k: int) -> str:
    """Official metric name of pass@K."""
    return f"ARC/pass@{k}"


@dataclass
class Candidate:
    """One distinct predicted grid for a test input."""

    hash: str
    votes: int
    mean_q: float
    grid: np.ndarray


@dataclass
class PairResult:
    """Ranked candidates of one test input and the 1-based rank of its true output (None: not predicted)."""

    task_id: str
    test_index: int
    label_hash: str
    candidates: list[Candidate]
    label_rank: int | None

    def passed(self, k: int) -> bool:
        return self.label_rank is not None and self.label_rank <= k


@dataclass
class ArcResult:
    """Everything an evaluation produces: headline metrics, counts, per-task scores, ranked pairs."""

    metrics: dict[str, float]
    counts: dict[str, int]
    per_task: dict[str, dict[str, Any]]
    pairs: list[PairResult]
    pass_ks: tuple[int, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def submission(self) -> dict[str, list[dict[str, list[list[int]]]]]:
        """ARC Prize format: one {"attempt_1", "attempt_2"} per test input (top-2, the first repeated)."""
        out: dict[str, list[dict[str, list[list[int]]]]] = {task: [] for task in self.per_task}
        for pair in self.pairs:
            if pair.candidates:
                first = pair.candidates[0].grid.tolist()
                second = pair.candidates[1].grid.tolist() if len(pair.candidates) > 1 else first
            else:
                first = second = NO_VOTE_GRID
            out[pair.task_id].append({"attempt_1": first, "attempt_2": second})
        return out

    def predictions(self) -> dict[str, list[dict[str, Any]]]:
        """Per task and test input: ranked candidates with votes, mean q and a correct flag."""
        out: dict[str, list[dict[str, Any]]] = {task: [] for task in self.per_task}
        for pair in self.pairs:
            ranked = [
                {"rank": rank, "hash": c.hash, "votes": c.votes, "mean_q": c.mean_q,
                 "correct": c.hash == pair.label_hash,
                 "grid": c.grid.tolist() if rank <= PREDICTION_GRIDS_KEPT else None}
                for rank, c in enumerate(pair.candidates, start=1)]
            out[pair.task_id].append({
                "test_index": pair.test_index, "label_hash": pair.label_hash, "label_rank": pair.label_rank,
                "votes": sum(c.votes for c in pair.candidates), "num_candidates": len(pair.candidates),
                "candidates": ranked})
        return out

    def metrics_json(self) -> dict[str, Any]:
        """metrics.json content: the official ``ARC/pass@K`` keys first, then counts, per-task and extras."""
        return {**self.metrics, "counts": self.counts, "tasks": self.per_task, **self.extra}


class ArcScorer:
    """Collects votes for the selected test tasks of one dataset and scores them.

    Use ``start()`` → ``add(...)`` per batch → ``finish()``. ``finish`` returns the result and clears the vote
    store, so one scorer object can serve many evaluations without carrying votes over.
    """

    def __init__(self, test_set: ArcTestSet, tasks: list[str] | None = None,
                 pass_ks: tuple[int, ...] | list[int] = DEFAULT_PASS_KS) -> None:
        self.test_set = test_set
        self.tasks = list(test_set.task_ids if tasks is None else tasks)
        missing = [t for t in self.tasks if t not in test_set.test_puzzles]
        if missing:
            raise DataError(f"tasks {missing[:5]} are not in {test_set.path}/test_puzzles.json")
        if not pass_ks or any(int(k) < 1 for k in pass_ks):
            raise DataError(f"pass_ks must be a non-empty list of positive integers, got {list(pass_ks)}")
        self.pass_ks = tuple(int(k) for k in pass_ks)
        self._wanted = set(self.tasks)
        self._inverse_cache: dict[int, tuple[str, int, np.ndarray]] = {}
        self.start()

    def start(self) -> None:
        """Begin a new evaluation with an empty vote store."""
        # task → input hash → pred hash → [count, sum of q] (dicts keep first-seen order for tie-breaks)
        self._votes: dict[str, dict[str, dict[str, list]]] = {}
        self._grids: dict[str, np.ndarray] = {}
        self._rows = 0

    def _augmentation(self, identifier: int) -> tuple[str, int, np.ndarray]:
        cached = self._inverse_cache.get(identifier)
        if cached is None:
            self.test_set.task_of(identifier)  # range check with a clear message
            cached = parse_identifier(self.test_set.identifiers[identifier])
            self._inverse_cache[identifier] = cached
        return cached

    def add(self, inputs: np.ndarray, puzzle_identifiers: np.ndarray, preds: np.ndarray,
            q_halt_logits: np.ndarray) -> None:
        """Vote with one batch of final-step outputs (numpy; rows with identifier 0 are padding, skipped)."""
        inputs, preds = np.asarray(inputs), np.asarray(preds)
        identifiers = np.asarray(puzzle_identifiers).reshape(-1)
        q = sigmoid64(q_halt_logits).reshape(-1)
        if not (len(inputs) == len(preds) == len(identifiers) == len(q)):
            raise DataError(f"prediction arrays disagree on the row count: inputs {len(inputs)}, preds "
                            f"{len(preds)}, puzzle_identifiers {len(identifiers)}, q_halt_logits {len(q)}")
        with Progress("voting", len(identifiers), unit="rows") as progress:  # ~10^5 rows: tens of seconds
            for row, identifier in enumerate(identifiers.tolist()):
                progress.update()
                if identifier != 0:
                    self._vote(row, identifier, inputs[row], preds[row], float(q[row]))

    def _vote(self, row: int, identifier: int, inputs: np.ndarray, preds: np.ndarray, q: float) -> None:
        """One row's vote: its de-augmented prediction for its de-augmented test input."""
        task, transform, mapping = self._augmentation(identifier)
        if task not in self._wanted:
            raise DataError(f"row {row}: task {task} (identifier {identifier}) is not among the tasks "
                            f"selected for this evaluation; filter rows before voting")
        input_hash = grid_hash(inverse_augmentation(crop_grid(inputs), transform, mapping))
        pred = inverse_augmentation(crop_grid(preds), transform, mapping)
        pred_hash = grid_hash(pred)
        self._grids.setdefault(pred_hash, pred)
        by_input = self._votes.setdefault(task, {}).setdefault(input_hash, {})
        stats = by_input.setdefault(pred_hash, [0, 0.0])
        stats[0] += 1
        stats[1] += q
        self._rows += 1

    def _rank(self, task: str, input_hash: str) -> list[Candidate]:
        table = self._votes.get(task, {}).get(input_hash, {})
        candidates = [Candidate(h, count, total / count, self._grids[h])
                      for h, (count, total) in table.items()]
        # sorted() is stable, so exact (count, mean q) ties keep first-seen order.
        return sorted(candidates, key=lambda c: (c.votes, c.mean_q), reverse=True)

    def finish(self) -> ArcResult:
        """Score the collected votes, then clear the store (see :meth:`start`)."""
        pairs: list[PairResult] = []
        per_task: dict[str, dict[str, Any]] = {}
        totals = [0.0] * len(self.pass_ks)
        voted_inputs = 0
        for task in self.tasks:
            test_pairs = self.test_set.test_puzzles[task]["test"]
            passed = [0] * len(self.pass_ks)
            task_votes = 0
            for index, pair in enumerate(test_pairs):
                input_hash = grid_hash(np.array(pair["input"], dtype=np.uint8))
                label_hash = grid_hash(np.array(pair["output"], dtype=np.uint8))
                candidates = self._rank(task, input_hash)
                rank = next((i for i, c in enumerate(candidates, start=1) if c.hash == label_hash), None)
                result = PairResult(task, index, label_hash, candidates, rank)
                pairs.append(result)
                voted_inputs += bool(candidates)
                task_votes += sum(c.votes for c in candidates)
                for i, k in enumerate(self.pass_ks):
                    passed[i] += result.passed(k)
            scores = [p / len(test_pairs) for p in passed]
            for i, score in enumerate(scores):
                totals[i] += score
            per_task[task] = {**{f"pass@{k}": s for k, s in zip(self.pass_ks, scores)},
                              "test_inputs": len(test_pairs), "votes": task_votes}
        metrics = {metric_key(k): (t / len(self.tasks) if self.tasks else 0.0)
                   for k, t in zip(self.pass_ks, totals)}
        # votes_matched < votes means some rows' de-augmented input matched no test input (wrong dataset?).
        counts = {"tasks": len(self.tasks), "test_inputs": len(pairs), "test_inputs_with_votes": voted_inputs,
                  "votes": self._rows, "votes_matched": sum(t["votes"] for t in per_task.values())}
        self.start()
        return ArcResult(metrics, counts, per_task, pairs, self.pass_ks)
