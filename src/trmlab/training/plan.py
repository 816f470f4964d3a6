"""The step plan of a run (trm-reference §6.5-6.7, §7.5), known before the first batch.

An *iteration* is ``eval_interval`` epochs (all epochs when ``eval_interval`` is null); the sampler packs
batches across the whole iteration. The official trainer takes ``min(batches, estimate)`` optimizer steps,
``estimate = int(epochs × total_groups × mean_puzzle_examples / global_batch_size)``, and the estimate is its
LR schedule's ``num_training_steps``; trmlab does the same, stops exactly there (no EMA update without an
optimizer update) and optionally earlier at ``max_steps``. Evaluations follow the official cadence: after
iteration ``i`` (0-based) when ``i >= min_eval_interval``, and always at the last step.

``trmlab train ... --dry-run`` prints this plan (:func:`describe_plan`, :func:`plan_summary`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trmlab.errors import ConfigError
from trmlab.training.schedule import lr_at

FIRST_BATCHES_SHOWN = 3


@dataclass
class StepPlan:
    """Optimizer steps, schedule length and evaluation/checkpoint cadence of a run."""

    optimizer_steps: int         # updates the run makes (min of batches, estimate, max_steps)
    schedule_steps: int          # the LR schedule's num_training_steps (the official estimate)
    batches: int                 # batches the loader yields in the iterations planned
    epochs_per_iteration: int
    iterations: int              # iterations of the whole run (epochs / epochs_per_iteration)
    batches_per_iteration: list[int] = field(default_factory=list)  # of the iterations the run reaches
    iteration_ends: list[int] = field(default_factory=list)         # step at each reached iteration's end
    eval_steps: list[int] = field(default_factory=list)
    checkpoint_steps: list[int] = field(default_factory=list)


def epochs_per_iteration(config: Any) -> int:
    """``eval_interval`` epochs, or all epochs when ``eval_interval`` is null (the official loop)."""
    interval = config.eval_interval if config.eval_interval is not None else config.epochs
    if config.epochs % interval:
        raise ConfigError(f"eval_interval={interval} must divide epochs={config.epochs} (the official loop "
                          f"runs epochs / eval_interval iterations)")
    return interval


def make_sampler(config: Any, dataset: Any, rank: int = 0, world_size: int = 1) -> Any:
    """The training sampler of a run from its config."""
    from trmlab.data.dataset import TrainSampler

    return TrainSampler(dataset, config.global_batch_size, config.seed, rank=rank, world_size=world_size,
                        max_demos=config.max_demos, max_groups=config.max_train_groups,
                        leave_one_out=config.demo_sampling == "leave_one_out",
                        epochs_per_iteration=epochs_per_iteration(config))


def plan_steps(sampler: Any, config: Any) -> StepPlan:
    """The run's :class:`StepPlan`; computes each reached iteration's batches (indices only)."""
    per_iteration = sampler.epochs_per_iteration
    iterations = config.epochs // per_iteration
    estimate = sampler.estimated_batches(config.epochs)
    cap = estimate if config.max_steps is None else min(estimate, config.max_steps)
    counts, ends, total = [], [], 0
    for iteration in range(iterations):
        if total >= cap:
            break  # the optimizer stops before this iteration: no need to plan it
        counts.append(sampler.batches_per_iteration(iteration))
        total += counts[-1]
        ends.append(min(total, cap))
    steps = min(total, cap)
    if steps < 1:
        raise ConfigError(f"the plan has no optimizer step (estimate {estimate}, {total} batches); raise "
                          f"epochs or lower global_batch_size")
    evals = {end for index, end in enumerate(ends) if index >= config.min_eval_interval and
             config.eval_interval is not None}
    evals.add(steps)
    checkpoints = set(evals)
    if config.checkpoint_every is not None:
        checkpoints.update(range(config.checkpoint_every, steps + 1, config.checkpoint_every))
    return StepPlan(steps, estimate, total, per_iteration, iterations, counts, ends, sorted(evals),
                    sorted(checkpoints))


def plan_summary(plan: StepPlan, config: Any, sampler: Any) -> dict[str, Any]:
    """The plan as one JSON-able object (what ``--dry-run --json`` prints)."""
    first = []
    for iteration, count in enumerate(plan.batches_per_iteration):
        for batch in range(count):
            if len(first) == FIRST_BATCHES_SHOWN:
                break
            _, puzzles = sampler.global_items(iteration, batch)
            first.append(sorted({int(p) for p in puzzles}))
    return {
        "optimizer_steps": plan.optimizer_steps,
        "schedule_steps": plan.schedule_steps,
        "batches": plan.batches,
        "epochs": config.epochs,
        "epochs_per_iteration": plan.epochs_per_iteration,
        "iterations": plan.iterations,
        "batches_per_iteration": plan.batches_per_iteration,
        "global_batch_size": config.global_batch_size,
        "eval_steps": plan.eval_steps,
        "checkpoint_steps": plan.checkpoint_steps,
        "lr": _lr_points(config.lr, plan, config),
        "puzzle_emb_lr": _lr_points(config.puzzle_emb_lr, plan, config),
        "first_batches": first,
    }


def _lr_points(base: float, plan: StepPlan, config: Any) -> dict[str, float]:
    warmup_end = min(config.lr_warmup_steps, plan.optimizer_steps)
    return {"at_warmup_end": lr_at(warmup_end, base, config.lr_warmup_steps, plan.schedule_steps,
                                   config.lr_min_ratio),
            "warmup_end_step": warmup_end,
            "at_end": lr_at(plan.optimizer_steps, base, config.lr_warmup_steps, plan.schedule_steps,
                            config.lr_min_ratio)}


def describe_plan(summary: dict[str, Any]) -> str:
    """Human-readable lines of :func:`plan_summary`."""
    counts = summary["batches_per_iteration"]
    shown = ", ".join(str(c) for c in counts[:8]) + (f", … ({len(counts)} in all)" if len(counts) > 8 else "")
    steps_ = summary["optimizer_steps"]
    stop = ("the loader's batches" if steps_ == summary["batches"] else
            "the official estimate" if steps_ == summary["schedule_steps"] else "max_steps")
    lr, emb = summary["lr"], summary["puzzle_emb_lr"]

    def steps(values: list[int]) -> str:
        return ", ".join(f"{v:,}" for v in values[:10]) + (f", … ({len(values)} in all)" if len(values) > 10
                                                          else "")

    return "\n".join([
        f"optimizer steps:       {summary['optimizer_steps']:,} (stops at {stop}; the loader yields "
        f"{summary['batches']:,} batches, official estimate {summary['schedule_steps']:,})",
        f"iterations:            {summary['iterations']} of {summary['epochs_per_iteration']} epoch(s), "
        f"global batch {summary['global_batch_size']}",
        f"batches per iteration: {shown}",
        f"evaluation steps:      {steps(summary['eval_steps'])}",
        f"checkpoint steps:      {steps(summary['checkpoint_steps'])}",
        f"lr schedule:           {summary['schedule_steps']:,} steps; lr {lr['at_warmup_end']:.3g} at "
        + (f"step {lr['warmup_end_step']:,} (warmup end)" if lr["warmup_end_step"] else "step 1 (no warmup)")
        + f", {lr['at_end']:.3g} at the last step; puzzle_emb_lr {emb['at_warmup_end']:.3g} / "
        f"{emb['at_end']:.3g}",
        "first batches' puzzles: " + "; ".join(_shorten(batch) for batch in summary["first_batches"]),
    ])


def _shorten(values: list[int], shown: int = 6) -> str:
    return "[" + ", ".join(str(v) for v in values[:shown]) + (f", … ({len(values)})" if len(values) > shown
                                                               else "") + "]"


def dry_run(resolved: Any, *, as_json: bool = False, resume: str | None = None) -> str:
    """``trmlab train ... --dry-run``: every check the run makes before its first step, then the plan.

    The trainer is built as for the run (device, data, ``init_from`` loaded and reconciled, the model, the
    evaluation data, the loggers' settings); with ``resume`` the checkpoint it would resume from is checked
    and loaded into the model, without setting anything aside. Nothing is written.
    """
    import json

    from trmlab.training.distributed import teardown
    from trmlab.training.loop import Trainer
    from trmlab.training.state import check_resumable

    trainer = Trainer(resolved, resume=resume, progress=False)
    try:
        resumed = check_resumable(trainer) if resume is not None else None
    finally:
        teardown(trainer.ctx)
    config, dataset = trainer.config, trainer.dataset
    summary = plan_summary(trainer.plan, config, trainer.sampler)
    if as_json:
        return json.dumps(summary | ({"resume": resumed} if resumed else {}))
    header = (f"trmlab train --dry-run: {config.arch.name} on {', '.join(config.data_paths)} "
              f"({dataset.total_groups} groups, {dataset.num_puzzles} puzzles, {dataset.num_examples} "
              f"examples), device {trainer.ctx.device}; nothing is written")
    return "\n".join([header, *([resumed] if resumed else []), describe_plan(summary)])
