"""Evaluation during training: the evaluator (``trmlab.evaluation``) on the weights the loop swapped in."""

from __future__ import annotations

import sys
from typing import Any

from trmlab.errors import ConfigError


def eval_data_path(config: Any) -> str:
    """The one dataset directory whose test split is evaluated during training."""
    paths = list(config.data_paths_test) or list(config.data_paths)
    if len(paths) != 1:
        raise ConfigError(f"evaluation during training needs one test dataset, got {paths} "
                          f"(set data_paths_test=[DIR], or eval_interval=null to only evaluate at the end "
                          f"with `trmlab eval`)")
    return paths[0]


def check_eval_data(config: Any) -> None:
    """Open the evaluation test set up front so a missing or broken one fails before training starts."""
    from trmlab.evaluation.grid import is_arc_dataset

    path = eval_data_path(config)
    if is_arc_dataset(path):
        from trmlab.evaluation.testset import load_test_set

        load_test_set(path)
    else:  # Sudoku / Maze: exact and token accuracy need only the test split
        from trmlab.data.dataset import ArcDataset

        ArcDataset([path], "test")


def evaluate_during_training(trainer: Any, step: int) -> dict[str, float]:
    """Run the dataset's evaluator (ARC pass@K, or Sudoku/Maze exact and token accuracy) on the model as it is
    now (EMA weights, eval mode) and write ``eval/step_<N>``.

    Every rank calls it (the evaluator shards rows under torchrun); returns the metrics on every rank (empty
    on ranks other than 0). An ``eval/step_<N>`` left by a killed run that resumed before step N is replaced.
    """
    from trmlab.evaluation.runner import evaluate

    out_dir = trainer.run_dir.eval_path(step) if trainer.ctx.is_main else None
    weights = "ema" if trainer.ema is not None else "raw"
    info: dict[str, Any] = {"step": step, "weights": weights}
    checkpoint = trainer.run_dir.checkpoint_path(step)
    if checkpoint.is_dir():  # written just before (checkpoint first, then evaluate)
        info["checkpoint"] = str(checkpoint.resolve())
    if trainer.ctx.is_main:  # an evaluation can take minutes: never leave the terminal silent
        limit = trainer.config.eval.max_tasks
        tasks = "all tasks" if limit is None else f"eval.max_tasks={limit}"
        print(f"evaluating at step {step} ({weights} weights, {tasks})...", file=sys.stderr, flush=True)
    result = evaluate(trainer.model, eval_data_path(trainer.config), config=trainer.config, out_dir=out_dir,
                      replace=True, info=info, progress=True)
    if result is None:
        return {}
    metrics = {k: float(v) for k, v in result.metrics.items()}
    metrics["eval/samples_per_s"] = float(result.samples_per_second)
    metrics.update(result.diagnostics)  # encoder/* (ETRM variants), same names as in training
    return metrics
