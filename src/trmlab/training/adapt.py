"""``trmlab adapt``: test-time adaptation of a TRM checkpoint to new ARC tasks, on the one training loop.

A TRM knows only the puzzles in its identifier table. Adaptation gives new tasks new rows and trains on their
demonstration pairs before predicting. This module is a thin layer around the one training loop
(:class:`~trmlab.training.loop.Trainer`); the phases run in order and each reads only what it needs:

1. **dataset** (``OUT/data``): the official builder (:func:`~trmlab.data.build_arc.build_arc_from_tasks`) on
   the challenges file alone, the tasks as the test set: the train split holds every augmented puzzle's
   demonstration pairs, the test split the test inputs (outputs unknown: the official dummy ``[[0]]``, never
   trained on). Identifiers start after the checkpoint's table rows, so every new puzzle has a new row.
2. **training** (``OUT/run``, a normal run directory): the checkpoint's own recipe, with ``init_from`` the
   checkpoint, ``puzzle_emb_reinit=extend`` (old rows kept, new rows = the mean of the old ones),
   ``freeze_weights`` for ``mode=embeddings``, ``max_steps``/``max_minutes``, no evaluation during training.
3. **prediction**: the EMA weights on the test inputs, voted over augmentations → ``OUT/submission.json``
   (ARC Prize format) and ``OUT/raw_predictions.npz``.
4. **scoring** (only with ``solutions=FILE``): the solutions file is opened here for the first time →
   ``OUT/metrics.json`` and ``OUT/predictions.json``.

Running the same command again resumes: the run continues from its newest checkpoint (or predicts again if it
had finished); ``OUT/adapt.json`` records the settings and a changed setting is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from trmlab.errors import CheckpointError, ConfigError, DataError

MODES = ("embeddings", "full")
SUBSET = "adapt"
SOURCE = "trmlab adapt"
# Config keys adapt sets itself; each has an adapt setting instead (out=, mode=, steps=).
OWNED_KEYS = ("data_paths", "data_paths_test", "init_from", "run_dir", "run_name", "resume",
              "puzzle_emb_reinit", "freeze_weights", "max_steps", "epochs", "eval_interval")
DEFAULT_CHECKPOINT_EVERY = 1000
NOMINAL_STEPS = 100_000  # max_minutes alone: the plan's length (the budget ends the run first)
STEPS_PER_ITERATION = 4096
SETTINGS_FILE = "adapt.json"


@dataclass
class AdaptSettings:
    """What one adaptation does (the command line's adapt words; everything else is a config override)."""

    checkpoint: str
    tasks: str
    out: str
    mode: str = "full"
    steps: int | None = None
    max_minutes: float | None = None
    num_aug: int = 1000
    canvas: int = 30
    aug_seed: int = 42
    solutions: str | None = None
    overrides: list[str] = field(default_factory=list)

    def check(self) -> None:
        """Errors for impossible settings, before anything is read or written."""
        if self.mode not in MODES:
            raise ConfigError(f"mode={self.mode}: choose embeddings (train only the new table rows) or full")
        if self.steps is None and self.max_minutes is None:
            raise ConfigError("give steps=N (optimizer steps) or max_minutes=M (wall-clock budget), or both")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps={self.steps}: must be ≥ 1")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"max_minutes={self.max_minutes}: must be > 0")
        from trmlab.interop.hub import resolve_path

        self.checkpoint = str(resolve_path(self.checkpoint))  # hf://: the cached copy (path names the commit)
        if not Path(self.checkpoint).exists():
            raise CheckpointError(f"{self.checkpoint}: no such checkpoint (a trmlab step_N/ directory or an "
                                  f"official step_N file with all_config.yaml beside it)")
        if not Path(self.tasks).is_file():
            raise DataError(f"{self.tasks}: no such tasks file (an ARC challenges JSON file)")
        if self.solutions is not None and not Path(self.solutions).is_file():  # a stat, not a read
            raise DataError(f"solutions={self.solutions}: no such file")
        owned = sorted({w.split("=", 1)[0].strip() for w in self.overrides} & set(OWNED_KEYS))
        if owned:
            raise ConfigError(f"{', '.join(owned)}: set by trmlab adapt itself (use out=, mode=, steps=); "
                              f"remove them from the overrides")

    def recorded(self) -> dict[str, Any]:
        """adapt.json content: what must match when the command is run again (the budget may change)."""
        record = asdict(self)
        record.pop("max_minutes")
        record["checkpoint"] = str(Path(self.checkpoint).resolve())
        record["tasks"] = str(Path(self.tasks).resolve())
        record.pop("out")
        record.pop("solutions")
        record["tasks_sha256"] = hashlib.sha256(Path(self.tasks).read_bytes()).hexdigest()
        return record


@dataclass
class AdaptResult:
    """Where the outputs are, how far training went, and the scores (with solutions)."""

    out: Path
    step: int
    total_steps: int
    stopped_early: str | None
    train_seconds: float
    predict_seconds: float
    num_tasks: int
    metrics: dict[str, float] | None = None


# ------------------------------------------------------------------------------------------------ checkpoint


def checkpoint_config_and_rows(path: str | Path) -> tuple[Any, int]:
    """(the checkpoint's ResolvedConfig = its recipe, rows of its puzzle table)."""
    from trmlab.checkpoints import is_trmlab_checkpoint, read_checkpoint
    from trmlab.interop.loading import official_config, read_official_state
    from trmlab.interop.official_keys import TABLE_KEY

    path = Path(path)
    if path.is_dir() and is_trmlab_checkpoint(path):
        bundle = read_checkpoint(path, verify=True)
        resolved = bundle.config()
        table = bundle.tensors("puzzle_embedding.safetensors")["weights"] \
            if bundle.has("puzzle_embedding.safetensors") else None
    elif path.is_dir():
        raise CheckpointError(f"{path}: a directory without manifest.json; give a trmlab step_N/ directory "
                              f"or an official step_N file")
    else:
        resolved = official_config(path)  # needs all_config.yaml beside it: the recipe comes from there
        table = read_official_state(path).get(TABLE_KEY)
    if resolved.config.arch.name != "trm" or table is None:
        raise CheckpointError(f"{path}: a {resolved.config.arch.name} checkpoint without a puzzle table; "
                              f"adapt adds table rows for new tasks, so it needs a TRM with puzzle "
                              f"embeddings (ETRM reads the demonstrations directly: use trmlab eval)")
    return resolved, int(table.shape[0])


# ------------------------------------------------------------------------------------------------ dataset


def load_tasks(path: str | Path, canvas: int) -> list[Any]:
    """The challenges file's tasks (solutions are never read here), each checked to fit the canvas."""
    from trmlab.data.sources import load_challenges_file

    tasks = load_challenges_file(path, SUBSET)
    without = [t.task_id for t in tasks if not t.pairs["train"]]
    if without:
        raise DataError(f"{path}: task {without[0]!r} ({len(without)} in all) has an empty \"train\" list; "
                        f"adaptation trains on each task's demonstration pairs, so give it at least one")
    too_big = [t.task_id for t in tasks if t.max_side > canvas]
    if too_big:
        raise DataError(f"{path}: task {too_big[0]!r} ({len(too_big)} in all) has a grid larger than the "
                        f"{canvas}x{canvas} canvas of the checkpoint (canvas={canvas})")
    return tasks


def build_adaptation_data(tasks: list[Any], output: Path, first_identifier: int, settings: AdaptSettings,
                          log: Any = print) -> None:
    """Write the adaptation dataset (see the module docstring) atomically at ``output``."""
    from trmlab.data.build_arc import BuildOptions, build_arc_from_tasks

    options = BuildOptions(output_dir=str(output), subsets=[SUBSET], test_set_name=SUBSET,
                           num_aug=settings.num_aug, seed=settings.aug_seed, canvas=settings.canvas,
                           puzzle_identifiers_start=first_identifier)
    build_arc_from_tasks(options, [tasks], log=log)


def demonstrations(tasks: list[Any]) -> tuple[int, int]:
    """(training items in one epoch: every task's demonstrations, the most demonstrations of one task)."""
    counts = [len(task.pairs["train"]) for task in tasks]
    return sum(counts), max(counts)


def epoch_plan(steps: int, batch: int, items: int, most: int) -> tuple[int, int]:
    """(epochs, epochs per iteration) so the loader's batches and the official estimate both reach ``steps``.

    A batch uses ``batch`` items and drops at most the rest of one puzzle (< ``most`` items), so
    ``steps * (batch + most) / items`` epochs always yield ``steps`` batches; iterations (the sampler plans
    one at a time, and checkpoints at each end) hold about ``STEPS_PER_ITERATION`` steps.
    """
    needed = -(-steps * (batch + most) // items) + 1
    per_iteration = min(needed, -(-STEPS_PER_ITERATION * (batch + most) // items))
    return -(-needed // per_iteration) * per_iteration, per_iteration


# ------------------------------------------------------------------------------------------------ config


def adaptation_config(recipe: Any, settings: AdaptSettings, data: Path, run: Path, tasks: list[Any]) -> Any:
    """The run's ResolvedConfig: the checkpoint's recipe, adapt's settings, then the user's overrides."""
    from trmlab.config import parse_overrides
    from trmlab.config.loader import COMMAND_LINE, Entry, resolve

    values: dict[str, Any] = {
        "data_paths": [str(data)], "data_paths_test": [], "init_from": str(settings.checkpoint),
        "run_dir": str(run), "run_name": None, "resume": None, "puzzle_emb_reinit": "extend",
        "freeze_weights": settings.mode == "embeddings",
        # embeddings: no averaged weight moves (the table is never averaged), so there is no EMA to keep.
        **({"ema": False} if settings.mode == "embeddings" else {}),
        "max_steps": settings.steps, "max_minutes": settings.max_minutes,
    }
    steps = settings.steps or NOMINAL_STEPS
    if recipe.config.lr_warmup_steps > steps // 10:
        values["lr_warmup_steps"] = steps // 10  # a pre-training warmup (2,000 steps for ARC) would not end
    if recipe.config.checkpoint_every is None:
        values["checkpoint_every"] = DEFAULT_CHECKPOINT_EVERY  # something to resume from if killed
    user = [Entry(key, value, COMMAND_LINE) for key, value in parse_overrides(settings.overrides)]
    resolved = resolve([[Entry(key, value, f"{SOURCE} default") for key, value in values.items()], user],
                       start=recipe)
    epochs, per_iteration = epoch_plan(steps, resolved.config.global_batch_size, *demonstrations(tasks))
    # The evaluation hook does nothing during adaptation: eval_interval only sets the iteration length.
    plan = [Entry("epochs", epochs, f"{SOURCE} default"),
            Entry("eval_interval", None if per_iteration == epochs else per_iteration, f"{SOURCE} default")]
    return resolve([plan], start=resolved)


# ------------------------------------------------------------------------------------------------ output dir


def prepare_out(settings: AdaptSettings) -> tuple[Path, bool]:
    """(OUT, resuming): a new OUT gets adapt.json; an existing one must hold the same adaptation."""
    out = Path(settings.out)
    record = settings.recorded()
    marker = out / SETTINGS_FILE
    if marker.is_file():
        stored = json.loads(marker.read_text())
        changed = sorted(k for k in set(stored) | set(record) if stored.get(k) != record.get(k))
        if changed:
            raise ConfigError(f"out={out} holds another adaptation ({', '.join(changed)} differ, see "
                              f"{marker}); use a new out=DIR, or the same settings to resume")
        return out, True
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"out={out}: exists and is not an adaptation directory; choose a new out=DIR")
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(marker, json.dumps(record, indent=1).encode())
    return out, False


def _write_atomic(path: Path, content: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(content)
    os.replace(partial, path)


# ------------------------------------------------------------------------------------------------ phases


def adapt(settings: AdaptSettings, *, progress: bool = True) -> AdaptResult | None:
    """Run the four phases (module docstring). Returns the result on rank 0, None on other ranks."""
    from trmlab.training.cli import resume_config
    from trmlab.training.distributed import barrier, setup_distributed, teardown
    from trmlab.training.loop import Trainer

    settings.check()
    recipe, rows = checkpoint_config_and_rows(settings.checkpoint)
    tasks = load_tasks(settings.tasks, settings.canvas)
    out = Path(settings.out)
    data, run = out / "data", out / "run"
    resolved = adaptation_config(recipe, settings, data, run, tasks)
    if not (out / SETTINGS_FILE).is_file():
        from trmlab.training.transfer import reconcile_init_config

        reconcile_init_config(resolved, settings.checkpoint)  # an architecture conflict: refused before OUT
    # The process group lives across training and prediction (the loop leaves a group it did not open).
    ctx = setup_distributed(resolved.config.device)
    created = not out.exists()
    try:
        resuming = False
        try:
            if ctx.is_main:
                out, resuming = prepare_out(settings)
                if not data.is_dir():
                    build_adaptation_data(tasks, data, rows, settings, log=_say)
                if not resuming or not _has_checkpoint(run):
                    shutil.rmtree(run, ignore_errors=True)  # a run killed before its first checkpoint
            resuming = _shared_flag(resuming and _has_checkpoint(run), ctx)
            barrier(ctx)
            if resuming:
                budget = "null" if settings.max_minutes is None else settings.max_minutes
                resolved = resume_config(str(run), [f"max_minutes={budget}"])  # this command's budget
            started = time.perf_counter()
            trainer = Trainer(resolved, resume=run if resuming else None, progress=progress,
                              evaluate=lambda _trainer, _step: {})
        except BaseException:
            if created and ctx.is_main:  # refused before training: leave no OUT behind to block the retry
                shutil.rmtree(out, ignore_errors=True)
            raise
        if ctx.is_main and not resuming:
            _say(f"adapt: {len(tasks)} task(s), mode={settings.mode}: new table rows {rows:,}.."
                 f"{trainer.dataset.num_puzzle_identifiers - 1:,} (initialised to the mean of the "
                 f"checkpoint's {rows:,} rows)")
        result = trainer.run()
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        predicted = predict(trainer, data)
        predict_seconds = time.perf_counter() - started
        if not ctx.is_main:
            return None
        _write_atomic(out / "submission.json", predicted["submission.json"])
        _write_atomic(out / "raw_predictions.npz", predicted["raw_predictions.npz"])
        _say(f"adapt: wrote {out / 'submission.json'} ({len(tasks)} tasks; training {train_seconds:.1f} s, "
             f"prediction {predict_seconds:.1f} s)")
        metrics = score(out, data, settings.solutions) if settings.solutions else None
        return AdaptResult(out, result.step, result.total_steps, result.stopped_early, train_seconds,
                           predict_seconds, len(tasks), metrics)
    finally:
        teardown(ctx)


def predict(trainer: Any, data: Path) -> dict[str, bytes]:
    """Vote the EMA weights' predictions on the test inputs → {file name: bytes} on rank 0 ({} elsewhere)."""
    import torch

    from trmlab.evaluation.outputs import json_bytes
    from trmlab.evaluation.runner import evaluate

    swap = trainer.ema.swapped_in(trainer.model) if trainer.ema is not None else contextlib.nullcontext()
    with swap, torch.no_grad():
        trainer.model.eval()
        evaluated = evaluate(trainer.model, data, config=trainer.config, progress=True)
    if evaluated is None:
        return {}
    # The test split's labels are the dummy [[0]]: only the voted candidates are kept, no scores.
    return {"submission.json": json_bytes(evaluated.result.submission()),
            "raw_predictions.npz": evaluated.raw.to_bytes()}


def score(out: Path, data: Path, solutions: str) -> dict[str, float]:
    """Score ``OUT/raw_predictions.npz`` with the solutions file (read here, and nowhere before)."""
    from trmlab.data.sources import read_solutions
    from trmlab.evaluation.outputs import json_bytes, load_raw_predictions
    from trmlab.evaluation.scoring import describe, info_for, score_raw
    from trmlab.evaluation.testset import load_test_set

    test_set = load_test_set(data)
    test_set = replace(test_set, test_puzzles=read_solutions(solutions, test_set.test_puzzles))
    result = score_raw(test_set, load_raw_predictions(out / "raw_predictions.npz"))
    result.extra.update(info_for(test_set, solutions=str(Path(solutions).resolve())))
    _write_atomic(out / "metrics.json", json_bytes(result.metrics_json(), indent=1))
    _write_atomic(out / "predictions.json", json_bytes(result.predictions()))
    _say(describe(result))
    return dict(result.metrics)


def _has_checkpoint(run: Path) -> bool:
    from trmlab.training.run_dir import RunDir

    return (run / "config.yaml").is_file() and bool(RunDir(run).checkpoint_steps())


def _shared_flag(value: bool, ctx: Any) -> bool:
    """Rank 0's ``value`` on every rank."""
    import torch

    from trmlab.training.distributed import broadcast_from_main

    return bool(broadcast_from_main(torch.tensor([float(value)], device=ctx.device), ctx).item())


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


__all__ = ["AdaptResult", "AdaptSettings", "adapt", "adaptation_config", "build_adaptation_data",
           "checkpoint_config_and_rows", "load_tasks", "predict", "score"]
