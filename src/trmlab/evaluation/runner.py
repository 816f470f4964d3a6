"""The ARC eval runner: run a model over the selected test rows, vote, score, write the eval directory.

Single process needs no process group. Under torchrun (an initialised ``torch.distributed`` group) each rank
runs its slice of every global batch and rank 0 gathers the raw rows with an object gather, restores file
order, votes and writes; the other ranks return None. Voting always happens on rows in dataset file order, so
the result does not depend on the number of ranks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trmlab.errors import CheckpointError, ConfigError, DataError
from trmlab.evaluation.arc import DEFAULT_PASS_KS, ArcResult, ArcScorer
from trmlab.evaluation.grid import evaluate_grid, is_arc_dataset
from trmlab.evaluation.outputs import RawPredictions, write_output_dir
from trmlab.evaluation.scoring import info_for, research_evaluator_figures, result_files
from trmlab.evaluation.testset import ArcTestSet, load_test_set
from trmlab.models.diagnostics import DiagnosticsAccumulator


@dataclass
class EvalSettings:
    """What one evaluation runs: batch size, task/augmentation subset, pass@K list, demo slots."""

    global_batch_size: int
    max_tasks: int | None = None
    num_augmentations: int | None = None
    pass_ks: tuple[int, ...] = DEFAULT_PASS_KS
    max_demos: int = 10
    symmetry_votes: int = 0  # Sudoku / Maze only: vote over this many symmetric copies (0, 1 = off)

    @classmethod
    def from_config(cls, config: Any) -> EvalSettings:
        """From a :class:`trmlab.config.schema.Config` (eval.global_batch_size falls back to
        global_batch_size, as the schema documents)."""
        return cls(global_batch_size=config.eval.global_batch_size or config.global_batch_size,
                   max_tasks=config.eval.max_tasks, num_augmentations=config.eval.num_augmentations,
                   pass_ks=tuple(config.eval.pass_ks), max_demos=config.max_demos,
                   symmetry_votes=config.eval.symmetry_votes)


@dataclass
class EvalResult:
    """An evaluation's scores (``result``), its raw rows, where it was written and how long the model ran."""

    result: ArcResult
    raw: RawPredictions
    out_dir: Path | None
    model_seconds: float
    diagnostics: dict[str, float] = field(default_factory=dict)  # encoder/* collapse signals (ETRM variants)

    @property
    def metrics(self) -> dict[str, float]:
        """``{"ARC/pass@K": rate}``."""
        return self.result.metrics

    @property
    def samples_per_second(self) -> float:
        return len(self.raw) / self.model_seconds if self.model_seconds > 0 else float("nan")


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _open_dataset(data: Any) -> tuple[Any, ArcTestSet]:
    """An ArcDataset (test split) and the scorer's view of the same single directory."""
    from trmlab.data.dataset import ArcDataset

    if isinstance(data, ArcDataset):
        dataset = data
        if dataset.split != "test":
            raise ConfigError(f"evaluation needs the test split of {dataset.paths}, "
                              f"got split '{dataset.split}'")
    else:
        dataset = ArcDataset([data], "test")
    if len(dataset.paths) != 1:
        raise ConfigError(f"ARC evaluation scores one dataset directory at a time; got {len(dataset.paths)} "
                          f"test paths {[str(p) for p in dataset.paths]} (evaluate each separately)")
    return dataset, load_test_set(dataset.paths[0])


def _check_model_fits(model: torch.nn.Module, dataset: Any) -> None:
    table = getattr(model, "puzzle_embedding", None)
    weights = getattr(table, "weights", None)
    if weights is not None and weights.shape[0] != dataset.num_puzzle_identifiers:
        raise CheckpointError(
            f"the model's puzzle-embedding table has {weights.shape[0]} rows but {dataset.paths[0]} has "
            f"{dataset.num_puzzle_identifiers} puzzle identifiers; evaluate on the dataset the model was "
            f"trained on (or load it with puzzle_emb_reinit, which discards the learned table)")


def selected_items(dataset: Any, test_set: ArcTestSet,
                   settings: EvalSettings) -> tuple[np.ndarray, np.ndarray]:
    """(example, puzzle) of the rows to run, in file order: the selected tasks' first K augmentations."""
    examples, puzzles = dataset.items()
    identifiers = dataset.puzzle_identifiers[puzzles]
    tasks = test_set.selected_tasks(settings.max_tasks)
    keep = test_set.row_mask(identifiers, tasks, settings.num_augmentations)
    return examples[keep], puzzles[keep]


def _local_chunks(count: int, settings: EvalSettings, rank: int, world: int):
    """Per global batch: this rank's positions into the selected items (−1 = padding).

    The last batch is shrunk to the rows left (rounded up to a multiple of the world size) instead of being
    padded to the full batch: with max_tasks a subset can be far smaller than one batch, and padding rows are
    pure waste (a 36-row subset in a 768 batch ran 21x the work on an H100).
    """
    batch = settings.global_batch_size
    if batch % world:
        raise ConfigError(f"eval batch size {batch} is not divisible by the world size "
                          f"{world}; choose a multiple of the number of ranks")
    for start in range(0, count, batch):
        local = batch // world if count - start >= batch else -(-(count - start) // world)
        positions = np.arange(start + rank * local, start + (rank + 1) * local)
        yield np.where(positions < count, positions, -1)


def _run_rows(model: torch.nn.Module, dataset: Any, examples: np.ndarray, puzzles: np.ndarray,
              settings: EvalSettings, rank: int, world: int, progress: bool,
              diagnostics: Any) -> dict[str, np.ndarray]:
    """Run this rank's rows for halt_max_steps; returns positions and each row's answer-step outputs (numpy).

    ``diagnostics`` (a DiagnosticsAccumulator) sees every batch's last step; TRM steps carry no context.
    """
    from trmlab.data.dataset import collate_items  # the loader's collation (demos for the encoder layout)
    from trmlab.models.act import answer_step
    from trmlab.progress import track

    device = next(model.parameters()).device
    # Inputs are not collected: rank 0 reads them from the dataset, so the gather moves only the outputs.
    out: dict[str, list[np.ndarray]] = {"position": [], "preds": [], "q_halt_logits": []}
    batches = -(-len(examples) // settings.global_batch_size)
    chunks = _local_chunks(len(examples), settings, rank, world)
    for positions in track(chunks, "eval", batches, unit="batches", enabled=progress and rank == 0):
        real = positions >= 0
        safe = np.where(real, positions, 0)
        batch = collate_items(dataset, np.where(real, examples[safe], -1), np.where(real, puzzles[safe], 0),
                         settings.max_demos, real)
        extra = {k: v.to(device) for k, v in batch.items()
                 if k not in ("inputs", "labels", "puzzle_identifiers")}
        with torch.no_grad():
            steps = model.rollout(batch["inputs"].to(device), batch["puzzle_identifiers"].to(device), **extra)
        final = answer_step(steps)  # each row's first halting step (the last one unless eval_q_halting)
        diagnostics.add(final)
        out["position"].append(positions[real])
        out["preds"].append(final["preds"].cpu().numpy()[real].astype(np.uint8))
        out["q_halt_logits"].append(final["q_halt_logits"].float().cpu().numpy()[real])
    return {k: np.concatenate(v) if v else np.zeros((0,), np.int64) for k, v in out.items()}


def _gather_rows(local: dict[str, np.ndarray], rank: int, world: int) -> dict[str, np.ndarray] | None:
    """All ranks' rows on rank 0 (object gather over gloo or NCCL), sorted back into file order."""
    if world == 1:
        parts = [local]
    else:
        parts = [None] * world if rank == 0 else None
        torch.distributed.gather_object(local, parts, dst=0)
        if rank != 0:
            return None
    parts = [p for p in parts if p is not None and len(p["position"])]
    if not parts:
        return None
    rows = {k: np.concatenate([p[k] for p in parts]) for k in local}
    order = np.argsort(rows["position"], kind="stable")
    return {k: v[order] for k, v in rows.items()}


def evaluate(model: torch.nn.Module, data: Any, *, config: Any = None, settings: EvalSettings | None = None,
             out_dir: str | Path | None = None, info: dict[str, Any] | None = None,
             progress: bool = False, research_figures: bool = False,
             replace: bool = False) -> EvalResult | None:
    """Evaluate ``model`` (whatever weights it holds now) on the test split of ``data``.

    An ARC dataset (with ``test_puzzles.json``) is voted and scored with pass@K; any other (Sudoku, Maze) gets
    exact and token accuracy (:func:`trmlab.evaluation.grid.evaluate_grid`, which returns a GridEvalResult).

    ``data`` is a dataset directory or a :class:`trmlab.data.dataset.ArcDataset` (test split, one path).
    Pass ``config`` (a Config: eval.* and global_batch_size are used) or explicit ``settings``. Every call
    starts a fresh vote store. With ``out_dir`` the eval directory is written atomically (rank 0; ``replace``
    swaps out an existing one instead of refusing it). Returns the result on rank 0 and None on other ranks.
    The model's train/eval mode is left as it was. ``progress`` shows progress over batches on rank 0 (a
    bar on a terminal, plain lines in a log: trmlab.progress).
    ``research_figures`` also records (metrics.json ``research_evaluator``) what the ETRM research
    evaluator's denominator would have made of the scores.
    """
    if settings is None:
        if config is None:
            raise ConfigError("evaluate() needs config= (a trmlab Config) or settings= (EvalSettings)")
        settings = EvalSettings.from_config(config)
    if not is_arc_dataset(data.paths[0] if hasattr(data, "paths") else data):
        return _evaluate_grid_dataset(model, data, settings, out_dir, info, progress, replace)
    if settings.symmetry_votes > 1:
        raise ConfigError(f"symmetry votes ({settings.symmetry_votes}) are for Sudoku / Maze datasets; ARC "
                          f"evaluation votes over the dataset's own augmentations (set "
                          f"eval.symmetry_votes=0)")
    dataset, test_set = _open_dataset(data)
    _check_model_fits(model, dataset)
    rank, world = _distributed()
    examples, puzzles = selected_items(dataset, test_set, settings)
    if len(examples) == 0:
        raise DataError(f"{test_set.path}: no test rows selected (max_tasks={settings.max_tasks}, "
                        f"num_augmentations={settings.num_augmentations})")
    started = time.perf_counter()
    diagnostics = DiagnosticsAccumulator()
    local = _run_rows(model, dataset, examples, puzzles, settings, rank, world, progress, diagnostics)
    seconds = time.perf_counter() - started
    rows = _gather_rows(local, rank, world)
    diagnostics = _gather_diagnostics(diagnostics, rank, world)
    if rank != 0:
        return None
    assert rows is not None and np.array_equal(rows["position"], np.arange(len(examples))), \
        "every selected row must come back exactly once from the ranks"
    inputs = np.asarray(test_set.inputs()[examples], dtype=np.uint8)  # one path: global example = file row
    raw = RawPredictions(inputs, dataset.puzzle_identifiers[puzzles].astype(np.int32), rows["preds"],
                         rows["q_halt_logits"].astype(np.float32))
    scorer = ArcScorer(test_set, test_set.selected_tasks(settings.max_tasks), settings.pass_ks)
    scorer.add(raw.inputs, raw.puzzle_identifiers, raw.preds, raw.q_halt_logits)
    result = scorer.finish()
    result.counts["rows"] = len(raw)
    if research_figures:
        result.extra["research_evaluator"] = research_evaluator_figures(result, len(test_set.task_ids))
    encoder_metrics = diagnostics.result()
    if encoder_metrics:
        result.extra["diagnostics"] = encoder_metrics
    written = None
    if out_dir is not None:
        extra = info_for(test_set, max_tasks=settings.max_tasks, num_augmentations=settings.num_augmentations,
                         **(info or {}))
        written = write_output_dir(out_dir, result_files(result, raw, extra), replace=replace)
    return EvalResult(result, raw, written, seconds, encoder_metrics)


def _evaluate_grid_dataset(model: torch.nn.Module, data: Any, settings: EvalSettings, out_dir: Any,
                           info: dict[str, Any] | None, progress: bool, replace: bool) -> Any:
    from trmlab.data.dataset import ArcDataset

    dataset = data if isinstance(data, ArcDataset) else ArcDataset([data], "test")
    if dataset.split != "test" or len(dataset.paths) != 1:
        raise ConfigError(f"evaluation needs the test split of one dataset directory, got split "
                          f"'{dataset.split}' of {[str(p) for p in dataset.paths]}")
    _check_model_fits(model, dataset)
    rank, world = _distributed()
    return evaluate_grid(model, dataset, settings, votes=settings.symmetry_votes, out_dir=out_dir, info=info,
                         progress=progress, rank=rank, world=world, replace=replace)


def _gather_diagnostics(local: Any, rank: int, world: int) -> Any:
    """Every rank's diagnostics merged on rank 0 (row-weighted, as within one rank)."""
    if world == 1:
        return local
    parts = [None] * world if rank == 0 else None
    torch.distributed.gather_object(local.state(), parts, dst=0)
    if rank == 0:
        for part in parts[1:]:
            local.merge(part)
    return local
