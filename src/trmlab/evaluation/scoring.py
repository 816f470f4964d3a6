"""Re-vote and re-score raw predictions without the model (``trmlab score``) and assemble the output files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trmlab.errors import DataError
from trmlab.evaluation.arc import DEFAULT_PASS_KS, ArcResult, ArcScorer
from trmlab.evaluation.outputs import RawPredictions, json_bytes
from trmlab.evaluation.testset import ArcTestSet


def score_raw(test_set: ArcTestSet, raw: RawPredictions, *, max_tasks: int | None = None,
              num_augmentations: int | None = None,
              pass_ks: tuple[int, ...] | list[int] = DEFAULT_PASS_KS) -> ArcResult:
    """Vote and score ``raw`` against ``test_set``.

    ``max_tasks=K`` scores the first K tasks of test_puzzles.json (denominator K); ``num_augmentations=K``
    keeps the rows of each task's first K puzzles in the test split (1 = the un-augmented original only). Rows
    outside the selection are dropped and counted in ``counts["rows_not_selected"]``.
    """
    if raw.inputs.shape[1] != test_set.seq_len:
        raise DataError(f"raw predictions have seq_len {raw.inputs.shape[1]} but {test_set.path} has "
                        f"seq_len {test_set.seq_len}; score them against the dataset they were made on")
    if num_augmentations is not None and num_augmentations < 1:
        raise DataError(f"num_augmentations must be at least 1, got {num_augmentations}")
    tasks = test_set.selected_tasks(max_tasks)
    blank = raw.puzzle_identifiers == 0
    keep = test_set.row_mask(raw.puzzle_identifiers, tasks, num_augmentations)
    scorer = ArcScorer(test_set, tasks, pass_ks)
    chosen = raw.select(keep)
    scorer.add(chosen.inputs, chosen.puzzle_identifiers, chosen.preds, chosen.q_halt_logits)
    result = scorer.finish()
    result.counts["rows"] = len(raw)
    result.counts["rows_blank"] = int(blank.sum())
    result.counts["rows_not_selected"] = int((~keep & ~blank).sum())
    return result


def result_files(result: ArcResult, raw: RawPredictions | None, info: dict[str, Any]) -> dict[str, bytes]:
    """The eval directory's files: metrics.json (with ``info``), submission.json, predictions.json, raw."""
    result.extra.update(info)
    files = {
        "metrics.json": json_bytes(result.metrics_json(), indent=1),
        "submission.json": json_bytes(result.submission()),
        "predictions.json": json_bytes(result.predictions()),
    }
    if raw is not None:
        files["raw_predictions.npz"] = raw.to_bytes()
    return files


def describe(result: ArcResult) -> str:
    """A few lines for the terminal: the pass@K table and the counts."""
    c = result.counts
    head = (f"{c['tasks']} tasks, {c['test_inputs']} test inputs ({c['test_inputs_with_votes']} with votes), "
            f"{c['votes']} votes")
    scores = "  ".join(f"{key} {value * 100:.2f}%" for key, value in result.metrics.items())
    lost = c["votes"] - c["votes_matched"]
    warning = (f"\nwarning: {lost} votes matched no test input of their task after undoing the augmentation "
               f"(predictions made on another dataset build?)") if lost > 0 else ""
    return f"{head}\n{scores}{warning}"


def research_evaluator_figures(result: ArcResult, total_tasks: int) -> dict[str, Any]:
    """What the ETRM research code's evaluator would have printed for ``result``: the same pass@K sums divided
    by every task of test_puzzles.json (``total_tasks``) instead of the tasks evaluated (etrm-reference §9.3,
    the denominator bug; identical when every task is evaluated)."""
    evaluated = result.counts["tasks"]
    return {"denominator": total_tasks, "tasks_evaluated": evaluated,
            "metrics": {key: value * evaluated / total_tasks for key, value in result.metrics.items()}}


def describe_research_figures(figures: dict[str, Any]) -> str:
    """One terminal line for :func:`research_evaluator_figures`."""
    scores = "  ".join(f"{key} {value * 100:.2f}%" for key, value in figures["metrics"].items())
    return (f"the research evaluator would have printed (÷ {figures['denominator']} tasks instead of the "
            f"{figures['tasks_evaluated']} evaluated): {scores}")


def info_for(test_set: ArcTestSet, **settings: Any) -> dict[str, Any]:
    """metrics.json's extras: the dataset (so `trmlab report` finds demos) and the settings used.

    ``max_tasks`` is recorded as the number of tasks actually scored; a larger request is kept beside it as
    ``max_tasks_requested``.
    """
    requested = settings.get("max_tasks")
    if requested is not None:
        scored = len(test_set.selected_tasks(requested))
        if scored != requested:
            settings = {**settings, "max_tasks": scored, "max_tasks_requested": requested}
    return {"dataset": str(Path(test_set.path).resolve()), **settings}
