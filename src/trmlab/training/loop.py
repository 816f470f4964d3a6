"""The one training loop for every variant (TRM, ETRM, ETRMTRM), with the official step dynamics.

One optimizer step per ACT step; the carry persists across batches, epochs and evaluations; the loss sum
is divided by the *global* batch size; gradients are summed over ranks, optionally clipped (global norm,
after the reduction), then AdamATan2 and the puzzle-table sign-SGD step with the scheduled lr, then the EMA.
The step plan is the official trainer's and known before the first batch (``trmlab.training.plan``):
``min(batches, official estimate)`` optimizer steps, optionally capped by ``max_steps``, with the estimate as
the LR schedule's length; the loop stops exactly there, so the EMA never moves without an update.

Model hooks (all optional, documented in design.md "Training"):

- ``model.param_groups(config) -> list[dict(name, params, lr_scale, wd_scale)]``: AdamATan2 groups (default:
  one group "all" with every trainable parameter). Groups must partition the trainable parameters.
- ``model.decoder_parameter_names() -> list[str]``: the parameters ``freeze_decoder_steps`` holds still.
- ``model.compute_loss(outputs) -> (loss_sum, metrics)``: default ``trmlab.models.losses.act_loss``.
- ``model.diagnostics(outputs) -> dict[str, float]``: computed outside the step, every ``log_every`` steps.
- ``model.exploration_generator``: set by the loop to a per-rank generator (seed + rank), saved on resume.
- ``model.puzzle_embedding`` (with ``weights``, ``local_weights``, ``local_ids``): trained by sign-SGD.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trmlab.errors import ConfigError
from trmlab.training.distributed import (
    DistContext,
    all_reduce_grads,
    all_reduce_sum,
    barrier,
    broadcast_from_main,
    broadcast_module,
    setup_distributed,
    teardown,
)
from trmlab.training.ema import EMA
from trmlab.training.optim import AdamATan2, SparseSignSGD
from trmlab.training.run_dir import RunDir, RunLock, with_absolute_data_paths
from trmlab.training.schedule import lr_at
from trmlab.training.signals import StopOnSignal, TrainingInterrupted


@dataclass
class ParamGroup:
    """One AdamATan2 parameter group as the loop uses it."""

    name: str
    names: list[str]
    params: list[torch.nn.Parameter]
    lr_scale: float = 1.0
    wd_scale: float = 1.0


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    run_dir: Path
    step: int
    total_steps: int
    checkpoints: list[Path] = field(default_factory=list)
    last_metrics: dict[str, float] = field(default_factory=dict)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: str | None = None  # why the run stopped before total_steps (e.g. "max_minutes")


def param_groups(model: torch.nn.Module, config: Any) -> list[ParamGroup]:
    """The model's AdamATan2 groups (``model.param_groups(config)``), checked to partition its parameters."""
    named = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not hasattr(model, "param_groups"):
        return [ParamGroup("all", list(named), list(named.values()))]
    by_id = {id(p): name for name, p in named.items()}
    groups, seen = [], set()
    for spec in model.param_groups(config):
        names = []
        for p in spec["params"]:
            name = by_id.get(id(p))
            if name is None or name in seen:
                raise ConfigError(f"model.param_groups: group {spec['name']!r} lists a parameter that is not "
                                  f"trainable or is already in another group ({name})")
            seen.add(name)
            names.append(name)
        groups.append(ParamGroup(spec["name"], names, [named[n] for n in names],
                                 float(spec.get("lr_scale", 1.0)), float(spec.get("wd_scale", 1.0))))
    missing = sorted(set(named) - seen)
    if missing:
        raise ConfigError(f"model.param_groups leaves trainable parameters out of every group: {missing[:5]}")
    return groups


def normalise_metrics(sums: dict[str, float], steps: int, global_batch_size: int) -> dict[str, float]:
    """Turn metric sums over ``steps`` optimizer steps into the logged means (documented in docs/training.md).

    Losses are per sample: ÷ (global_batch_size · steps), as the official trainer. ``count`` is
    rows per step. The official population (``train/accuracy`` ...: rows that halted this step) is ÷ its
    ``train/count``; ``train/all_rows/*`` (every in-flight row) is ÷ ``train/all_rows/count``.
    """
    out = {}
    for name, value in sums.items():
        population = "train/all_rows/count" if name.startswith("train/all_rows/") else "train/count"
        if name.endswith("count"):
            out[name] = value / steps
        elif name.endswith("loss"):
            out[name] = value / (global_batch_size * steps)
        else:
            out[name] = value / max(sums.get(population, 0.0), 1.0)
    return out


def _default_loss(config: Any) -> Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict]]:
    from trmlab.models.losses import act_loss

    return lambda outputs: act_loss(outputs, config.arch.loss_type)


class Trainer:
    """Builds everything a run needs from a resolved config, then :meth:`run` trains it.

    ``resume`` is a run directory to continue (its newest valid checkpoint). ``evaluate`` overrides the
    evaluation during training (``callable(trainer, step) -> dict``); default: ``trmlab.evaluation``.
    """

    def __init__(self, resolved: Any, *, resume: str | Path | None = None, progress: bool = True,
                 evaluate: Callable[[Trainer, int], dict[str, Any]] | None = None) -> None:
        self.resolved = with_absolute_data_paths(resolved)  # resume works from any directory
        self.config = self.resolved.config
        self.progress = progress
        self.evaluate_fn = evaluate
        self.started = time.monotonic()  # max_minutes counts from here
        self.ctx: DistContext = setup_distributed(self.config.device)
        self.resume_dir = Path(resume) if resume else None
        self._progress: Any = None  # the training progress while the loop runs (log lines go above its bar)
        self._build()

    # -- construction ----------------------------------------------------------------------------------------

    def _build(self) -> None:
        from trmlab.models import build_model
        from trmlab.training.plan import make_sampler, plan_steps

        config, ctx = self.config, self.ctx
        if not config.data_paths:
            raise ConfigError("data_paths is empty: name the training dataset directories (data_paths=[DIR])")
        _seed_everything(config.seed)
        self.dataset = self._open_dataset()
        self.sampler = make_sampler(config, self.dataset, ctx.rank, ctx.world_size)
        self.init_variant: str | None = None
        init_path = None
        if config.init_from and not self.resume_dir:
            from trmlab.interop.hub import resolve_path
            from trmlab.training.transfer import reconcile_init_config

            # hf:// is fetched once: the config and the weights below come from the same commit.
            init_path = Path(resolve_path(config.init_from))
            # The checkpoint's architecture becomes the run's (refused on conflict) before the model exists.
            self.resolved, self.init_variant = reconcile_init_config(self.resolved, config.init_from,
                                                                     fetched=init_path)
            self.config = config = self.resolved.config
        self.model = build_model(config, seq_len=self.dataset.seq_len, vocab_size=self.dataset.vocab_size,
                                 num_puzzle_identifiers=self.dataset.num_puzzle_identifiers).to(ctx.device)
        self.init_report: dict[str, Any] = {}
        if init_path is not None:
            from trmlab.training.transfer import load_init_weights

            self.init_report = load_init_weights(self, init_path)
        if config.freeze_weights:
            # Only the puzzle table learns (sign-SGD on the rows in each batch); AdamATan2 gets no parameter.
            self.model.requires_grad_(False)
        broadcast_module(self.model, ctx)
        # Exploration differs per rank (seed + rank) and lives in its own generator, saved with the RNG state.
        self.exploration = torch.Generator(device=ctx.device)
        self.exploration.manual_seed(config.seed + ctx.rank)
        self.model.exploration_generator = self.exploration

        self.groups = param_groups(self.model, config)
        self.adam = AdamATan2([{"params": g.params, "name": g.name} for g in self.groups], lr=0.0,
                              betas=(config.beta1, config.beta2), weight_decay=config.weight_decay)
        for opt_group, group in zip(self.adam.param_groups, self.groups):
            opt_group["weight_decay"] = config.weight_decay * group.wd_scale
        table = getattr(self.model, "puzzle_embedding", None)
        self.sparse = SparseSignSGD(table, 0.0, config.puzzle_emb_weight_decay) if table is not None else None
        self.ema = EMA(self.model, config.ema_rate) if config.ema else None
        self.decoder_names = self._decoder_names()
        self.loss_fn = getattr(self.model, "compute_loss", None) or _default_loss(config)
        self.forward = torch.compile(self.model) if config.compile else self.model
        if config.compile and hasattr(self.model, "use_compiled_step"):
            self.model.use_compiled_step(self.forward)  # evaluation reuses the compiled step

        from trmlab.training.loggers import check_loggers

        check_loggers(config)
        if self.evaluate_fn is None:
            from trmlab.training.evaluate import check_eval_data

            check_eval_data(config)  # fail now, not after days of training
        self.plan = plan_steps(self.sampler, config)
        self.total_steps, self.schedule_steps = self.plan.optimizer_steps, self.plan.schedule_steps
        self.eval_steps = set(self.plan.eval_steps)
        self.step = 0
        self.carry: Any = None
        self._saved_carry: dict[str, Any] | None = None
        self.run_dir = RunDir(self._run_dir_path())
        self.loggers: list[Any] = []

    def _open_dataset(self) -> Any:
        from trmlab.data.dataset import ArcDataset
        from trmlab.errors import DataError

        try:
            return ArcDataset(list(self.config.data_paths), "train")
        except DataError as error:
            if self.resume_dir is None:
                raise
            raise DataError(f"{error} (if the dataset moved, resume with data_paths=[NEW_DIR]: its "
                            f"fingerprint must match the checkpoint's)") from None

    def _decoder_names(self) -> list[str]:
        if self.config.freeze_decoder_steps <= 0:
            return []
        if not hasattr(self.model, "decoder_parameter_names"):
            raise ConfigError(f"freeze_decoder_steps={self.config.freeze_decoder_steps} but model "
                              f"{self.config.arch.name!r} names no decoder parameters; set "
                              "freeze_decoder_steps=0")
        names = list(self.model.decoder_parameter_names())
        trainable = {n for g in self.groups for n in g.names}
        unknown = [n for n in names if n not in trainable]
        if unknown:
            raise ConfigError(f"model.decoder_parameter_names() lists non-trainable parameters {unknown[:3]}")
        return names

    def _run_dir_path(self) -> Path:
        if self.resume_dir is not None:
            return self.resume_dir
        if self.config.run_dir:
            return Path(self.config.run_dir)
        from trmlab.training.run_dir import generate_run_name

        return Path("runs") / (self.config.run_name or generate_run_name())

    # -- the run ---------------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train to ``total_steps`` (or resume and finish), checkpointing and evaluating on schedule."""
        lock = RunLock(self.run_dir.path, self._say)
        try:
            if self.ctx.is_main:
                lock.acquire()  # one writer per run directory: a second resume is refused, naming this one
            self._start()
            result = TrainResult(self.run_dir.path, self.step, self.total_steps)
            self._train(result)
            return result
        finally:
            for logger in self.loggers:
                logger.close()
            lock.release()
            teardown(self.ctx)

    def _start(self) -> None:
        if self.resume_dir is not None:
            self._resume()
        elif self.ctx.is_main:
            self.run_dir.create(self.resolved)
        barrier(self.ctx)
        if self.ctx.is_main:
            self._open_loggers()
            self._say(self._summary())

    def _summary(self) -> str:
        n_params = sum(p.numel() for g in self.groups for p in g.params)
        lines = [f"trmlab train: {self.config.arch.name} with {n_params:,} trainable parameters "
                 f"({', '.join(f'{g.name}: {sum(p.numel() for p in g.params):,}' for g in self.groups)})",
                 f"  device {self.ctx.device} × {self.ctx.world_size} process(es), forward dtype "
                 f"{getattr(self.model, 'forward_dtype', 'n/a')}, "
                 f"global batch {self.config.global_batch_size}",
                 f"  optimizer steps: {self.total_steps:,} exactly ({len(self.plan.batches_per_iteration)} "
                 f"iteration(s) of {self.plan.epochs_per_iteration} epoch(s), "
                 f"{self.plan.batches_per_iteration[0]:,} batches in the first; LR schedule "
                 f"{self.schedule_steps:,} steps"
                 + (f"; capped by max_steps={self.config.max_steps}" if self.config.max_steps else "") + ")",
                 f"  run directory: {self.run_dir.path}"]
        if self.step:
            lines.append(f"  resumed at step {self.step:,}")
        return "\n".join(lines)

    def _train(self, result: TrainResult) -> None:
        from trmlab.progress import Progress

        # A bar on a terminal; in a log, a plain line every ~10 s (throughput, ETA, last loss) between the
        # log_every lines, so a run with a large log_every is never silent.
        bar = Progress("train", self.total_steps, unit="steps", initial=self.step, enabled=self.ctx.is_main,
                       bars=self.progress, per_unit=(self.config.global_batch_size, "samples"))
        self._progress = bar
        window = _MetricWindow()
        stop = StopOnSignal(self.ctx).install()
        try:
            if self._evaluation_lost():
                result.evaluations.append(self._evaluate())
            while self.step < self.total_steps:
                iteration = self.sampler.state_dict()["iteration"]
                for batch in self.sampler.iter_iteration(iteration):
                    metrics = self._train_step(batch)
                    window.add(metrics)
                    bar.update(1)
                    if self.step % self.config.log_every == 0 or self.step == self.total_steps:
                        record = self._log(window, iteration)
                        result.last_metrics = record
                        bar.set_status(f"lm_loss {record.get('train/lm_loss', float('nan')):.4f}, exact "
                                       f"{record.get('train/exact_accuracy', float('nan')):.3f}")
                        if not self.show_progress:
                            self._say(log_line(record, self.total_steps))
                    self._checkpoint_then_evaluate(result)
                    result.step = self.step
                    if self._over_budget():
                        if not self._checkpoint_due():
                            result.checkpoints.append(self.save_checkpoint())
                        result.stopped_early = "max_minutes"
                        self._say(f"max_minutes={self.config.max_minutes:g} reached at step {self.step:,} of "
                                  f"{self.total_steps:,}: checkpoint written, stopping (resume continues)")
                        return
                    if self.step >= self.total_steps:
                        break
                    self._stop_if_signalled(stop, result)
        finally:
            stop.close()
            bar.close(finished=self.step >= self.total_steps)
            self._progress = None

    def _checkpoint_then_evaluate(self, result: TrainResult) -> None:
        # Checkpoint first: a crash or kill during the (long) evaluation loses no training.
        if self._checkpoint_due():
            result.checkpoints.append(self.save_checkpoint())
        if self.step in self.eval_steps:
            result.evaluations.append(self._evaluate())

    def _stop_if_signalled(self, stop: StopOnSignal, result: TrainResult) -> None:
        """After a stop signal (agreed by all ranks): checkpoint this step, then raise TrainingInterrupted."""
        signum = stop.should_stop()
        if signum is None:
            return
        if not self._checkpoint_due():
            result.checkpoints.append(self.save_checkpoint())
        raise TrainingInterrupted(self.step, signum, self.run_dir.path.resolve())

    def _evaluation_lost(self) -> bool:
        """On resume: the run was killed during the evaluation of the step it resumes from (checkpoint
        written, evaluation record not), so evaluate that step again. Decided by rank 0 for every rank."""
        if self.resume_dir is None or self.step not in self.eval_steps:
            return False
        lost = torch.zeros(1, device=self.ctx.device)
        if self.ctx.is_main:
            lost += not self.run_dir.has_eval_record(self.step)
        return bool(all_reduce_sum(lost, self.ctx).item())

    def _over_budget(self) -> bool:
        """True once max_minutes have passed and steps remain; rank 0's clock decides for every rank."""
        if self.config.max_minutes is None or self.step >= self.total_steps:
            return False
        over = torch.tensor([float(time.monotonic() - self.started > 60.0 * self.config.max_minutes)],
                            device=self.ctx.device)
        broadcast_from_main(over, self.ctx)
        return bool(over.item())

    def _checkpoint_due(self) -> bool:
        every = self.config.checkpoint_every
        return self.step == self.total_steps or self.step in self.eval_steps or \
            (every is not None and self.step % every == 0)

    # -- one optimizer step ----------------------------------------------------------------------------------

    def _train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        config = self.config
        batch = {k: v.to(self.ctx.device, non_blocking=True) for k, v in batch.items()}
        self.model.train()
        if self.carry is None:
            self.carry = self.model.initial_carry(batch)
            if self._saved_carry is not None:
                from trmlab.training.state import unflatten_into

                self.carry = unflatten_into(self.carry, self._saved_carry, self.ctx.device)
                self._saved_carry = None
        self.step += 1
        self.carry, outputs = self.forward(self.carry, batch)
        loss_sum, metrics = self.loss_fn(outputs)
        (loss_sum / config.global_batch_size).backward()

        params = [p for g in self.groups for p in g.params]
        all_reduce_grads(params, self.ctx)
        if self.step <= config.freeze_decoder_steps:
            # Frozen decoder: no gradient → AdamATan2 skips it entirely (no decay, no moments, no step count).
            named = dict(self.model.named_parameters())
            for name in self.decoder_names:
                named[name].grad = None
        updated = sum(p.numel() for p in params if p.grad is not None)
        grad_norm = None
        if config.grad_clip_norm > 0:
            with_grad = [p for p in params if p.grad is not None]
            grad_norm = torch.nn.utils.clip_grad_norm_(with_grad, config.grad_clip_norm)

        for opt_group, group in zip(self.adam.param_groups, self.groups):
            opt_group["lr"] = lr_at(self.step, config.lr * group.lr_scale, config.lr_warmup_steps,
                                    self.schedule_steps, config.lr_min_ratio)
        self.adam.step()
        self.adam.zero_grad(set_to_none=True)
        if self.sparse is not None:
            self.sparse.lr = lr_at(self.step, config.puzzle_emb_lr, config.lr_warmup_steps,
                                   self.schedule_steps, config.lr_min_ratio)
            self.sparse.step()
            self.sparse.zero_grad()
        if self.ema is not None:
            self.ema.update(self.model)

        step_metrics = {f"train/{k}": v.detach().float() for k, v in metrics.items()}
        if grad_norm is not None:
            step_metrics["grad_norm"] = grad_norm.detach().float()
        step_metrics["updated_params"] = torch.tensor(float(updated))
        self._last_outputs = outputs
        return step_metrics

    # -- metrics -------------------------------------------------------------------------------------------

    def _log(self, window: _MetricWindow, iteration: int) -> dict[str, Any]:
        """Reduce the window over ranks and write one metrics.jsonl line (rank 0)."""
        sums, steps = window.take()
        names = sorted(sums)
        per_rank = {"grad_norm", "updated_params"}  # identical on every rank: not summed over ranks
        stacked = torch.stack([sums[n].to(self.ctx.device) for n in names if n not in per_rank])
        all_reduce_sum(stacked, self.ctx)
        reduced = dict(zip([n for n in names if n not in per_rank], stacked.tolist()))
        # "epoch": the iteration's first epoch, as the official trainer prints it.
        record: dict[str, Any] = {"step": self.step, "epoch": iteration * self.plan.epochs_per_iteration,
                                  "split": "train",
                                  "lr": self.adam.param_groups[0]["lr"]}
        record.update(normalise_metrics(reduced, steps, self.config.global_batch_size))
        for name in per_rank & set(sums):
            record[name] = float(sums[name]) / steps
        record["samples_per_s"] = steps * self.config.global_batch_size / max(window.elapsed, 1e-9)
        record["steps_per_s"] = steps / max(window.elapsed, 1e-9)
        window.restart_clock()
        if hasattr(self.model, "diagnostics"):
            with torch.no_grad():
                diagnostics = self.model.diagnostics(self._last_outputs)
            # Already namespaced by the model (e.g. encoder/context_variance): logged as they are.
            record.update({k: float(v) for k, v in diagnostics.items()})
        if self.ctx.is_main:
            self.run_dir.append_metrics(record)
            for logger in self.loggers:
                logger.log(record, self.step)
        return record

    def _open_loggers(self) -> None:
        from trmlab.training.loggers import open_loggers

        self.loggers = open_loggers(self.config, self.run_dir.path)

    # -- evaluation ------------------------------------------------------------------------------------------

    def _evaluate(self) -> dict[str, Any]:
        """Evaluate the EMA weights (swapped into the live model, no deep copy) and log the result."""
        evaluate = self.evaluate_fn
        if evaluate is None:
            from trmlab.training.evaluate import evaluate_during_training as evaluate
        swap = self.ema.swapped_in(self.model) if self.ema is not None else contextlib.nullcontext()
        with swap, torch.no_grad():
            self.model.eval()
            try:
                metrics = evaluate(self, self.step)
            finally:
                self.model.train()
        epoch = self._iteration_of(self.step) * self.plan.epochs_per_iteration
        record = {"step": self.step, "epoch": epoch, "split": "eval", **metrics}
        if self.ctx.is_main:
            self.run_dir.append_metrics(record)
            for logger in self.loggers:
                logger.log(record, self.step)
            shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            if shown:
                self._say(f"eval at step {self.step}: {shown}")
        return record

    def _iteration_of(self, step: int) -> int:
        """0-based iteration whose batches include ``step``."""
        return next((i for i, end in enumerate(self.plan.iteration_ends) if step <= end),
                    len(self.plan.iteration_ends) - 1)

    # -- checkpoints -----------------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_<N>`` (rank 0; every rank contributes its carry and RNG state)."""
        from trmlab.training.state import save_training_checkpoint

        return save_training_checkpoint(self)

    def _resume(self) -> None:
        from trmlab.training.state import load_latest_checkpoint

        if not self.run_dir.checkpoint_steps():
            # Stopped (or failed, e.g. on a full disk) before its first checkpoint: nothing to restore.
            self._say(f"trmlab train: {self.run_dir.path} has no checkpoint yet; starting the run over from "
                      f"step 0")
            if self.ctx.is_main:
                self.run_dir.truncate_metrics(0)
            return
        load_latest_checkpoint(self)
        if self.ctx.is_main:
            self.run_dir.truncate_metrics(self.step)

    @property
    def show_progress(self) -> bool:
        """A progress bar only on rank 0 of an interactive terminal: in a log file its carriage-return
        updates are noise; there (and with ``--no-progress``) a line is printed every ``log_every`` steps
        and a progress line every ~10 s (trmlab.progress)."""
        from trmlab.progress import uses_bar

        return self.ctx.is_main and uses_bar(sys.stderr, self.progress)

    def _say(self, message: str) -> None:
        if not self.ctx.is_main:
            return
        if self._progress is not None:
            self._progress.write(message)  # above the bar, which stays whole
        else:
            print(message, file=sys.stderr, flush=True)


def log_line(record: dict[str, Any], total_steps: int) -> str:
    """One training log line: ``step 20/100 (epoch 4): lm_loss 1.2345, accuracy 0.5000, ...``."""
    shown = [f"{key.removeprefix('train/')} {record[key]:.4f}" for key in LOGGED_METRICS if key in record]
    shown += [f"lr {record['lr']:.3g}"] if "lr" in record else []
    shown += [f"{record['steps_per_s']:.2f} steps/s"] if "steps_per_s" in record else []
    return f"step {record['step']:,}/{total_steps:,} (epoch {record['epoch']}): {', '.join(shown)}"


LOGGED_METRICS = ("train/lm_loss", "train/accuracy", "train/exact_accuracy", "train/q_halt_accuracy",
                  "grad_norm")


class _MetricWindow:
    """Sums of the per-step metric tensors since the last log (kept on device: no sync per step)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.started = time.perf_counter()

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for name, value in metrics.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
        self.steps += 1

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def take(self) -> tuple[dict[str, torch.Tensor], int]:
        sums, steps = self.sums, max(self.steps, 1)
        self.sums, self.steps = {}, 0
        return sums, steps

    def restart_clock(self) -> None:
        self.started = time.perf_counter()


def _seed_everything(seed: int) -> None:
    """Model init and every global stream start from ``seed`` (identical on all ranks)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(resolved: Any, *, resume: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Train a run from a resolved config (``trmlab.config.load_config``), or resume one."""
    return Trainer(resolved, resume=resume, progress=progress).run()


__all__ = ["ParamGroup", "TrainResult", "Trainer", "normalise_metrics", "param_groups", "train"]
