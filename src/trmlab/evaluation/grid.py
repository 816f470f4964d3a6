"""Exact and token accuracy for one-answer grid datasets (Sudoku, Maze), with optional symmetry voting.

The official metric for these datasets is the loss head's ``all/exact_accuracy`` on the test split (no
evaluator, no voting): every test row is run for ``halt_max_steps`` ACT steps and the final step's
``argmax`` is compared with the label. Here, as ``<Task>/exact_accuracy`` (the whole grid right) and
``<Task>/token_accuracy`` (the official ``all/accuracy``: the fraction of a row's labelled cells that are
right, averaged over rows).

Beyond the official (``votes=K`` / ``eval.symmetry_votes``, reported under ``<Task>/vote@K/...``, never mixed
with the official numbers): each test input is also run as K−1 symmetric copies, each prediction is mapped
back, and the most frequent whole grid wins (ties: the larger mean halting logit). Sudoku copies relabel the
digits and shuffle bands, rows in a band, stacks and columns in a stack, and transpose (square boxes); Maze
copies are the dihedral transforms (K ≤ 8).

Which evaluator a dataset gets (:func:`dataset_task`): ARC when it has ``test_puzzles.json``; otherwise Sudoku
when its grids are 4×4, 6×6 or 9×9 with tokens value+1 (labels in 2..N+1), Maze when the tokens are the
maze's 1..5 with a path token, else ``Grid`` (exact and token accuracy, no voting).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trmlab.data.build_maze import MAZE_CHARSET
from trmlab.data.build_sudoku import SUDOKU_BOXES
from trmlab.errors import ConfigError, DataError
from trmlab.evaluation.outputs import RawPredictions, json_bytes, write_output_dir
from trmlab.progress import Progress

if TYPE_CHECKING:  # torch only where a model runs: `trmlab data inspect` classifies datasets without it
    import torch

MAZE_PATH_TOKEN = 1 + MAZE_CHARSET.index("o")  # the builder's tokens: "# SGo" → 1..5
TASK_NAMES = {"sudoku": "Sudoku", "maze": "Maze", "grid": "Grid"}
VOTE_SEED = 0  # fixed: the Sudoku copies are the same at every evaluation


def is_arc_dataset(path: str | Path) -> bool:
    """ARC datasets carry ``test_puzzles.json`` (the scorer's task list); Sudoku and Maze ones do not."""
    return (Path(path) / "test_puzzles.json").is_file()


def dataset_task(dataset: Any) -> str:
    """``"sudoku"``, ``"maze"`` or ``"grid"`` for an ArcDataset (test split) without test_puzzles.json."""
    side = math.isqrt(dataset.seq_len)
    labels = np.asarray(dataset.gather("labels", np.arange(min(dataset.num_examples, 64))))
    values = set(np.unique(labels).tolist())
    if side * side == dataset.seq_len and side in SUDOKU_BOXES and values <= set(range(2, side + 2)):
        return "sudoku"
    maze_tokens = set(range(1, len(MAZE_CHARSET) + 1))
    if side * side == dataset.seq_len and values <= maze_tokens and MAZE_PATH_TOKEN in values:
        return "maze"
    return "grid"


# -- symmetries ---------------------------------------------------------------------------------------------
@dataclass
class Symmetry:
    """A cell map (new cell i shows old cell ``cells[i]``) and a token map (``tokens[old] = new``)."""

    cells: np.ndarray
    tokens: np.ndarray

    def apply(self, grids: np.ndarray) -> np.ndarray:
        return self.tokens[grids[:, self.cells]]

    def invert(self, grids: np.ndarray) -> np.ndarray:
        """Map grids seen through this symmetry back to the original frame."""
        inverse_tokens = np.argsort(self.tokens)
        out = np.empty_like(grids)
        out[:, self.cells] = inverse_tokens[np.clip(grids, 0, len(self.tokens) - 1)]
        return out


def _line_order(rng: np.random.Generator, blocks: int, per_block: int) -> np.ndarray:
    return np.concatenate([b * per_block + rng.permutation(per_block) for b in rng.permutation(blocks)])


def sudoku_symmetries(side: int, count: int, vocab_size: int) -> list[Symmetry]:
    """The identity, then ``count − 1`` random validity-preserving copies (digits 2..side+1 relabelled)."""
    box_rows, box_cols = SUDOKU_BOXES[side]
    rng = np.random.Generator(np.random.Philox(np.random.SeedSequence([VOTE_SEED, side])))
    index = np.arange(side * side).reshape(side, side)
    identity = np.arange(max(vocab_size, side + 2))
    out = [Symmetry(index.reshape(-1), identity)]
    while len(out) < count:
        tokens = identity.copy()
        tokens[2:side + 2] = 2 + rng.permutation(side)
        grid = index.T if box_rows == box_cols and rng.random() < 0.5 else index
        rows = _line_order(rng, side // box_rows, box_rows)
        grid = grid[rows][:, _line_order(rng, side // box_cols, box_cols)]
        out.append(Symmetry(grid.reshape(-1), tokens))
    return out


def dihedral_symmetries(side: int, count: int, vocab_size: int) -> list[Symmetry]:
    """The first ``count`` of the 8 dihedral transforms (identity first), tokens unchanged."""
    if count > 8:
        raise ConfigError(f"a maze has 8 dihedral transforms; symmetry votes must be ≤ 8, got {count}")
    index = np.arange(side * side).reshape(side, side)
    images = []
    for k in range(4):
        images += [np.rot90(index, k), np.rot90(index, k).T]
    images = [images[i] for i in (0, 2, 4, 6, 1, 3, 5, 7)]  # rotations first, then reflections
    return [Symmetry(m.reshape(-1).copy(), np.arange(vocab_size)) for m in images[:count]]


# -- scoring ------------------------------------------------------------------------------------------------
def accuracies(preds: np.ndarray, labels: np.ndarray, ignore: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Per row: exact (every labelled cell right) and token accuracy (right / labelled), official semantics
    (labels equal to the PAD/ignore id do not count; a row without labels counts as exact)."""
    valid = labels != ignore if ignore is not None else np.ones_like(labels, dtype=bool)
    right = (preds == labels) & valid
    count = valid.sum(axis=1)
    return right.sum(axis=1) == count, right.sum(axis=1) / np.maximum(count, 1)


def vote_index(candidates: np.ndarray, q_halt: np.ndarray) -> np.ndarray:
    """Per row, the index of the first candidate holding the most frequent grid among its K candidates
    [N, K, S] (ties: larger mean q_halt [N, K], then the grid seen first)."""
    winners = np.empty(candidates.shape[0], dtype=np.int64)
    for row, (grids, q) in enumerate(zip(candidates, q_halt, strict=True)):
        tally: dict[bytes, list[int]] = {}
        for index, grid in enumerate(grids):
            tally.setdefault(grid.tobytes(), []).append(index)
        members = max(tally.values(), key=lambda m: (len(m), sum(float(q[i]) for i in m) / len(m)))
        winners[row] = members[0]
    return winners


def vote(candidates: np.ndarray, q_halt: np.ndarray) -> np.ndarray:
    """Per row, the most frequent grid among its K candidates [N, K, S] (ties: larger mean q_halt [N, K])."""
    return candidates[np.arange(candidates.shape[0]), vote_index(candidates, q_halt)]


@dataclass
class GridEvalResult:
    """A grid evaluation: metrics (official first, then voting), counts, raw rows, where it was written."""

    task: str
    metrics: dict[str, float]
    counts: dict[str, int]
    raw: RawPredictions
    out_dir: Path | None
    model_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, float] = field(default_factory=dict)

    @property
    def samples_per_second(self) -> float:
        return self.counts["model_rows"] / self.model_seconds if self.model_seconds > 0 else float("nan")

    def metrics_json(self) -> dict[str, Any]:
        return {**self.metrics, "task": self.task, "counts": self.counts, **self.extra}

    def describe(self) -> str:
        scores = "  ".join(f"{key} {value * 100:.2f}%" for key, value in self.metrics.items())
        return f"{TASK_NAMES[self.task]}: {self.counts['rows']} test puzzles\n  {scores}"


def _run_inputs(model: torch.nn.Module, inputs: np.ndarray, identifiers: np.ndarray, settings: Any,
                rank: int, world: int, progress: Progress) -> dict[str, np.ndarray] | None:
    """Final-step preds and q_halt logits of every row (file order, on rank 0; None elsewhere)."""
    import torch

    from trmlab.evaluation.runner import _gather_rows, _local_chunks

    device = next(model.parameters()).device
    out: dict[str, list[np.ndarray]] = {"position": [], "preds": [], "q_halt_logits": []}
    for positions in _local_chunks(len(inputs), settings, rank, world):
        real = positions >= 0
        safe = np.where(real, positions, 0)
        with torch.no_grad():
            steps = model.rollout(torch.from_numpy(inputs[safe].astype(np.int32)).to(device),
                                  torch.from_numpy(identifiers[safe].astype(np.int32)).to(device))
        out["position"].append(positions[real])
        out["preds"].append(steps[-1]["preds"].cpu().numpy()[real].astype(np.uint8))
        out["q_halt_logits"].append(steps[-1]["q_halt_logits"].float().cpu().numpy()[real])
        progress.update()
    local = {k: np.concatenate(v) if v else np.zeros((0,), np.int64) for k, v in out.items()}
    return _gather_rows(local, rank, world)


def evaluate_grid(model: torch.nn.Module, dataset: Any, settings: Any, *, votes: int = 0,
                  out_dir: str | Path | None = None, info: dict[str, Any] | None = None,
                  progress: bool = False, rank: int = 0, world: int = 1,
                  replace: bool = False) -> GridEvalResult | None:
    """Exact / token accuracy of ``model`` on the test split of a grid ``dataset`` (an ArcDataset).

    ``settings`` is an EvalSettings (``max_tasks`` = the first K test puzzles); ``votes`` ≥ 2 adds the
    symmetry vote over that many copies. Returns the result on rank 0, None on other ranks. ``replace`` swaps
    out an existing ``out_dir`` (training re-running an evaluation after a resume) instead of refusing it.
    """
    if dataset.layout != "official":
        raise ConfigError(f"{dataset.paths[0]}: grid evaluation needs the official layout (one example per "
                          f"puzzle, no demonstrations), got layout '{dataset.layout}'")
    task = dataset_task(dataset)
    examples, puzzles = dataset.items()
    if settings.max_tasks is not None:
        examples, puzzles = examples[: settings.max_tasks], puzzles[: settings.max_tasks]
    if len(examples) == 0:
        raise DataError(f"{dataset.paths[0]}: the test split has no rows to evaluate")
    inputs = np.asarray(dataset.gather("inputs", examples))
    identifiers = dataset.puzzle_identifiers[puzzles]
    test_time = getattr(settings, "test_time", None)
    if test_time is not None and not test_time.is_default:  # samples= noise= halt= steps= (test_time.py)
        from trmlab.evaluation.test_time import evaluate_grid_trajectories

        return evaluate_grid_trajectories(model, dataset, settings, task=task, examples=examples,
                                          inputs=inputs, identifiers=identifiers, out_dir=out_dir, info=info,
                                          progress=progress, rank=rank, world=world, replace=replace)
    symmetries = _symmetries(task, dataset, votes)
    started = time.perf_counter()
    batches = -(-len(inputs) // settings.global_batch_size) * len(symmetries)
    with Progress("eval", batches, unit="batches", enabled=progress and rank == 0) as shown:
        runs = [_run_inputs(model, s.apply(inputs), identifiers, settings, rank, world, shown)
                for s in symmetries]
    seconds = time.perf_counter() - started
    if rank != 0:
        return None
    labels = np.asarray(dataset.gather("labels", examples))
    ignore = dataset.ignore_label_id
    name = TASK_NAMES[task]
    plain = runs[0]
    exact, token = accuracies(plain["preds"].astype(np.int64), labels, ignore)
    metrics = {f"{name}/exact_accuracy": float(exact.mean()), f"{name}/token_accuracy": float(token.mean())}
    counts = {"rows": len(examples), "model_rows": len(examples) * len(symmetries)}
    extra: dict[str, Any] = {"dataset": str(Path(dataset.paths[0]).resolve()), "votes": len(symmetries)}
    files: dict[str, bytes] = {}
    if len(symmetries) > 1:
        mapped = np.stack([s.invert(r["preds"].astype(np.int64))
                           for s, r in zip(symmetries, runs, strict=True)], axis=1)
        q_halt = np.stack([r["q_halt_logits"] for r in runs], axis=1)
        voted = vote(mapped, q_halt)
        v_exact, v_token = accuracies(voted, labels, ignore)
        metrics[f"{name}/vote@{len(symmetries)}/exact_accuracy"] = float(v_exact.mean())
        metrics[f"{name}/vote@{len(symmetries)}/token_accuracy"] = float(v_token.mean())
        files["voted_predictions.npz"] = _npz_bytes(preds=voted.astype(np.uint8))
    raw = RawPredictions(inputs.astype(np.uint8), identifiers.astype(np.int32), plain["preds"],
                         plain["q_halt_logits"].astype(np.float32))
    result = GridEvalResult(task, metrics, counts, raw, None, seconds, {**extra, **(info or {})})
    if out_dir is not None:
        files["metrics.json"] = json_bytes(result.metrics_json(), indent=1)
        files["raw_predictions.npz"] = raw.to_bytes()
        result.out_dir = write_output_dir(out_dir, files, replace=replace)
    return result


def _symmetries(task: str, dataset: Any, votes: int) -> list[Symmetry]:
    side = math.isqrt(dataset.seq_len)
    identity = [Symmetry(np.arange(dataset.seq_len), np.arange(dataset.vocab_size))]
    if votes <= 1:
        return identity
    if task == "sudoku":
        return sudoku_symmetries(side, votes, dataset.vocab_size)
    if task == "maze":
        return dihedral_symmetries(side, votes, dataset.vocab_size)
    raise ConfigError(f"{dataset.paths[0]}: symmetry voting needs a Sudoku or Maze dataset; this one's grids "
                      f"are neither (set votes / eval.symmetry_votes to 0)")


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()

