"""Few-shot benchmark a CPU can run: TRM (puzzle ids) vs ETRM / ETRMTRM (demo encoders) on synthetic rules.

1. ``trmlab data build-synthetic`` tasks (colour permutation, translation, gravity, recolour by size,
   composition) in three splits: training, validation and held-out tasks, whose rule instances differ from
   everything training shows, augmented copies and composition parts included (``trmlab.data.synthetic``).
2. Trains ``trm-synthetic`` on the TRM layout and ``etrm-synthetic`` / ``etrmtrm-synthetic`` on the encoder
   layout with the one training loop (``trmlab.training.loop.Trainer``); every ``eval_interval`` epochs it
   measures the **validation** pass@2 and the encoder diagnostics (the learning curve: choose settings here).
3. Evaluates each (final EMA weights) on the test inputs of the training, validation and held-out tasks with
   the ARC evaluator (voting over augmentations), and reports pass@2 per family and averaged, per split.
   Held-out scores are for reporting only.

Writes ``OUT/results.md`` (tables, learning curves, collapse metrics) and ``OUT/results.json``.

    .venv/bin/python benchmarks/bench_fewshot.py --out runs/fewshot --models trm etrm etrmtrm
    .venv/bin/python benchmarks/bench_fewshot.py --out runs/fs --models etrm --families colour_permutation \
        --set-etrm max_steps=1200                                                # one family, one model
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from trmlab.config import load_config
from trmlab.data.synthetic import DEFAULT_FAMILIES, FAMILIES, build_synthetic
from trmlab.evaluation.runner import EvalSettings, evaluate
from trmlab.models.diagnostics import context_diagnostics
from trmlab.training.loop import Trainer

PRESETS = {"trm": ("trm-synthetic", "trm"), "etrm": ("etrm-synthetic", "encoder"),
           "etrmtrm": ("etrmtrm-synthetic", "encoder")}
SPLITS = (("training", "train"), ("validation", "validation"), ("held_out", "held_out"))  # report, tasks.json
DIAGNOSTICS = ("encoder/context_variance", "encoder/cosine_similarity", "encoder/effective_rank",
               "encoder/context_norm")


def task_table(data: Path) -> dict[str, tuple[str, str]]:
    """Task name → (family, split) from the generator's tasks.json (split: train, validation, held_out)."""
    tasks = json.loads((data / "tasks.json").read_text())["tasks"]
    if tasks and "split" not in tasks[0]:
        raise SystemExit(f"{data}/tasks.json was built before the validation split existed (no 'split' per "
                         f"task); rebuild it with this version of `trmlab data build-synthetic`")
    return {t["name"]: (t["family"], t["split"]) for t in tasks}


def per_family(per_task: dict[str, dict[str, Any]], tasks: dict[str, tuple[str, str]], k: int = 2
               ) -> dict[str, dict[str, float]]:
    """{"training" | "validation" | "held_out": {family: pass@k, ..., "average": mean over families}} for
    the splits with scored tasks."""
    out: dict[str, dict[str, float]] = {}
    for label, split in SPLITS:
        scores: dict[str, list[float]] = {}
        for name, result in per_task.items():
            family, task_split = tasks[name]
            if task_split == split:
                scores.setdefault(family, []).append(float(result[f"pass@{k}"]))
        table = {f: sum(v) / len(v) for f, v in scores.items()}
        if table:
            table["average"] = sum(table.values()) / len(table)
        out[label] = table
    return out


def count_split(tasks: dict[str, tuple[str, str]], split: str) -> int:
    return sum(task_split == split for _, task_split in tasks.values())


def context_stats(model: torch.nn.Module, data_dir: Path, rows: int, max_demos: int) -> dict[str, float]:
    """Encoder diagnostics on the first test rows (validation tasks come first in the test split)."""
    if not hasattr(model, "encoder"):
        return {}
    from trmlab.data.dataset import ArcDataset, iter_test_batches

    dataset = ArcDataset([str(data_dir)], "test")
    batch, _ = next(iter(iter_test_batches(dataset, rows, max_demos=max_demos)))
    device = next(model.parameters()).device
    extra = {k: v.to(device) for k, v in batch.items() if k.startswith("demo_")}
    step = model.rollout(batch["inputs"].to(device), batch["puzzle_identifiers"].to(device), steps=1, **extra)
    return context_diagnostics(step[-1])


class CurveEvaluator:
    """Evaluation during training: validation pass@2 (few augmentations) and encoder diagnostics."""

    def __init__(self, data_dir: Path, tasks: dict[str, tuple[str, str]], augmentations: int):
        self.data_dir, self.tasks, self.augmentations = data_dir, tasks, augmentations
        self.validation = count_split(tasks, "validation")  # the first tasks of the test split
        self.seconds = self.cpu_seconds = 0.0  # time spent here, subtracted from the training time

    def __call__(self, trainer: Trainer, step: int) -> dict[str, Any]:
        started, cpu = time.perf_counter(), time.process_time()
        try:
            return self._evaluate(trainer)
        finally:
            self.seconds += time.perf_counter() - started
            self.cpu_seconds += time.process_time() - cpu

    def _evaluate(self, trainer: Trainer) -> dict[str, Any]:
        config = trainer.config
        settings = EvalSettings(global_batch_size=config.eval.global_batch_size or config.global_batch_size,
                                max_tasks=self.validation, num_augmentations=self.augmentations,
                                pass_ks=(1, 2), max_demos=config.max_demos)
        result = evaluate(trainer.model, str(self.data_dir), settings=settings)
        families = per_family(result.result.per_task, self.tasks)["validation"]
        metrics: dict[str, Any] = {"validation/pass@2": families.get("average", 0.0)}
        metrics.update({f"validation/{f}/pass@2": v for f, v in families.items() if f != "average"})
        metrics.update(context_stats(trainer.model, self.data_dir, 64, config.max_demos))
        return metrics


def train_one(name: str, data: Path, out: Path, tasks: dict[str, tuple[str, str]], overrides: list[str],
              curve_augmentations: int) -> tuple[Trainer, float, float]:
    """The trained model, its training wall seconds and process CPU seconds (both without curve evals)."""
    preset, layout = PRESETS[name]
    run_dir = out / name
    resolved = load_config(preset, [f"data_paths=[{data / layout}]", f"run_dir={run_dir}", *overrides])
    evaluator = CurveEvaluator(data / layout, tasks, curve_augmentations)
    trainer = Trainer(resolved, progress=True, evaluate=evaluator)
    started, cpu = time.perf_counter(), time.process_time()
    trainer.run()
    return (trainer, time.perf_counter() - started - evaluator.seconds,
            time.process_time() - cpu - evaluator.cpu_seconds)


def load_trained(name: str, data: Path, out: Path, overrides: list[str]) -> Trainer:
    """The run ``OUT/<name>`` restored from its newest checkpoint (the same preset and overrides)."""
    from trmlab.training.state import load_latest_checkpoint

    preset, layout = PRESETS[name]
    run_dir = out / name
    resolved = load_config(preset, [f"data_paths=[{data / layout}]", f"run_dir={run_dir}", *overrides])
    trainer = Trainer(resolved, resume=run_dir, progress=False, evaluate=lambda *_: {})
    load_latest_checkpoint(trainer)
    return trainer


def final_eval(trainer: Trainer, data_dir: Path, tasks: dict[str, tuple[str, str]], augmentations: int
               ) -> tuple[dict[str, dict[str, float]], dict[str, float], float]:
    """Every split with the final EMA weights (as evaluation during training uses them)."""
    config = trainer.config
    settings = EvalSettings(global_batch_size=config.eval.global_batch_size or config.global_batch_size,
                            num_augmentations=augmentations, pass_ks=(1, 2), max_demos=config.max_demos)
    swap = trainer.ema.swapped_in(trainer.model) if trainer.ema is not None else nullcontext()
    with swap, torch.no_grad():
        trainer.model.eval()
        started = time.perf_counter()
        result = evaluate(trainer.model, str(data_dir), settings=settings)
        seconds = time.perf_counter() - started
        diagnostics = context_stats(trainer.model, data_dir, 64, config.max_demos)
    return per_family(result.result.per_task, tasks), diagnostics, seconds


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def results_markdown(summary: dict[str, Any]) -> str:
    """The results tables, learning curves and collapse metrics as markdown."""
    models = summary["models"]
    families = [f for f in FAMILIES if any(f in row for m in models.values() for row in m["scores"].values())]
    lines = [f"Data: {summary['data']} ({summary['tasks']} tasks: {summary['validation']} validation, "
             f"{summary['held_out']} held out; seed {summary['seed']}, num_aug {summary['num_aug']}); final "
             f"evaluation votes over {summary['eval_augmentations']} augmentations per test input. Choose "
             f"settings on validation; held-out scores are for reporting only.", "",
             "| model, tasks | " + " | ".join(families) + " | average |",
             "|" + "|".join(["---"] * (len(families) + 2)) + "|"]
    labels = {"training": "training tasks (test inputs)", "validation": "validation tasks",
              "held_out": "held-out tasks"}
    for name, m in models.items():
        for split, label in labels.items():
            row = m["scores"].get(split, {})
            lines.append(f"| {name}, {label} | " + " | ".join(fmt(row.get(f)) for f in families)
                         + f" | **{fmt(row.get('average'))}** |")
    lines += ["", "| model | train wall time | train CPU time | optimizer steps | final train exact acc | "
              "final eval time |", "|---|---|---|---|---|---|"]
    for name, m in models.items():
        lines.append(f"| {name} | {m['train_seconds'] / 60:.1f} min | "
                     f"{m['train_cpu_seconds'] / 60:.1f} min | {m['steps']} | "
                     f"{fmt(m.get('train_exact_accuracy'))} | {m['eval_seconds']:.0f} s |")
    for name, m in models.items():
        curve = m["curve"]
        if not curve:
            continue
        lines += ["", f"Learning curve, {name} (train metrics of the logging window; validation pass@2 with "
                  f"{summary['curve_augmentations']} augmentation(s), EMA weights):", "",
                  "| step | train lm_loss | train token acc | train exact acc | validation pass@2 | "
                  "context variance | cosine | eff. rank |", "|---|---|---|---|---|---|---|---|"]
        for point in curve:
            lines.append(f"| {point['step']} | {point.get('lm_loss', float('nan')):.3f} | "
                         f"{fmt(point.get('accuracy'))} | {fmt(point.get('exact_accuracy'))} | "
                         f"{fmt(point.get('validation'))} | "
                         + " | ".join(f"{point[k]:.4g}" if k in point else "—" for k in DIAGNOSTICS[:3])
                         + " |")
    return "\n".join(lines) + "\n"


def learning_curve(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per evaluation: the last train record before it plus the validation pass@2 and diagnostics
    (per family too)."""
    points, last_train = [], {}
    for record in records:
        if record.get("split") == "train":
            last_train = record
        elif record.get("split") == "eval":
            point = {"step": record["step"], "validation": record.get("validation/pass@2"),
                     "lm_loss": last_train.get("train/lm_loss", float("nan")),
                     "accuracy": last_train.get("train/accuracy"),
                     "exact_accuracy": last_train.get("train/exact_accuracy")}
            point.update({k: record[k] for k in DIAGNOSTICS if k in record})
            point.update({k: v for k, v in record.items() if k.startswith("validation/")})
            points.append(point)
    return points


def run_model(name: str, data: Path, out: Path, tasks: dict[str, tuple[str, str]], overrides: list[str],
              curve_augmentations: int, eval_augmentations: int, threads: int, trained: bool = False
              ) -> dict[str, Any]:
    """Train one model (``trained``: restore ``OUT/<name>``'s newest checkpoint instead), evaluate it; its
    entry of ``results.json`` (also run in a worker process)."""
    torch.set_num_threads(threads)
    if trained:
        trainer, seconds, cpu_seconds = load_trained(name, data, out, overrides), float("nan"), float("nan")
    else:
        trainer, seconds, cpu_seconds = train_one(name, data, out, tasks, overrides, curve_augmentations)
        trainer.save_checkpoint()  # the final weights (EMA included), for later evaluations
    scores, diagnostics, eval_seconds = final_eval(trainer, data / PRESETS[name][1], tasks,
                                                   eval_augmentations)
    records = read_metrics(trainer.run_dir.path)
    train_records = [r for r in records if r.get("split") == "train"]
    return {"preset": PRESETS[name][0], "overrides": overrides, "train_seconds": seconds,
            "train_cpu_seconds": cpu_seconds,
            "process_cpu_seconds": resource.getrusage(resource.RUSAGE_SELF).ru_utime,
            "steps": trainer.step, "eval_seconds": eval_seconds, "scores": scores,
            "final_diagnostics": diagnostics,
            "train_exact_accuracy": train_records[-1].get("train/exact_accuracy") if train_records else None,
            "curve": learning_curve(records)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory (data, runs, results)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic tasks")
    parser.add_argument("--num-aug", type=int, default=50, help="augmented copies per task in the data")
    parser.add_argument("--train-tasks", type=int, default=64, help="training tasks per family")
    parser.add_argument("--val-tasks", type=int, default=16, help="validation tasks per family")
    parser.add_argument("--eval-tasks", type=int, default=16, help="held-out tasks per family")
    parser.add_argument("--families", nargs="+", default=list(DEFAULT_FAMILIES), choices=FAMILIES,
                        metavar="FAMILY", help=f"rule families to build: {', '.join(FAMILIES)}")
    parser.add_argument("--canvas", type=int, default=10, help="canvas side of the built tasks")
    parser.add_argument("--data", default=None,
                        help="an existing build-synthetic directory to use instead of building OUT/data")
    parser.add_argument("--models", nargs="+", default=["trm", "etrm"], choices=sorted(PRESETS))
    parser.add_argument("--set-trm", nargs="*", default=[], metavar="KEY=VALUE",
                        help="trm-synthetic overrides")
    parser.add_argument("--set-etrm", nargs="*", default=[], metavar="KEY=VALUE",
                        help="etrm-synthetic overrides")
    parser.add_argument("--set-etrmtrm", nargs="*", default=[], metavar="KEY=VALUE",
                        help="etrmtrm-synthetic overrides")
    parser.add_argument("--eval-augmentations", type=int, default=4,
                        help="augmentations voted over in the final evaluation")
    parser.add_argument("--curve-augmentations", type=int, default=1,
                        help="augmentations in the held-out evaluations during training")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op CPU threads (default 1 unless OMP_NUM_THREADS is set: on a shared, "
                        "busy 2-core CPU two threads ran many times slower than one)")
    parser.add_argument("--evaluate-checkpoint", action="store_true",
                        help="do not train: evaluate the newest checkpoint of each OUT/<model> run (needs "
                        "--data and the overrides it was trained with), e.g. with other --eval-augmentations")
    parser.add_argument("--parallel", action="store_true",
                        help="train the models at the same time, one process each (2 cores: one per model)")
    args = parser.parse_args(argv)
    build_flags = ("seed", "num_aug", "train_tasks", "val_tasks", "eval_tasks", "families", "canvas")
    given = [f"--{f.replace('_', '-')}" for f in build_flags if getattr(args, f) != parser.get_default(f)]
    if args.data and given:
        parser.error(f"--data reuses an existing build; {', '.join(given)} describe a new one (drop them, or "
                     f"drop --data)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    if not (data / "tasks.json").exists():
        build_synthetic(data, seed=args.seed, families=args.families, train_tasks=args.train_tasks,
                        eval_tasks=args.eval_tasks, canvas=args.canvas, num_aug=args.num_aug,
                        val_tasks=args.val_tasks)
    tasks = task_table(data)
    built = json.loads((data / "tasks.json").read_text())  # the build's own settings (with --data too)
    summary: dict[str, Any] = {"data": str(data), "seed": built["seed"], "num_aug": built["num_aug"],
                               "canvas": built["canvas"], "families": built["families"],
                               "tasks": len(tasks), "validation": count_split(tasks, "validation"),
                               "held_out": count_split(tasks, "held_out"),
                               "eval_augmentations": args.eval_augmentations,
                               "curve_augmentations": args.curve_augmentations, "models": {}}
    overrides = {"trm": args.set_trm, "etrm": args.set_etrm, "etrmtrm": args.set_etrmtrm}
    jobs = [(name, data, out, tasks, overrides[name],
             args.curve_augmentations, args.eval_augmentations, torch.get_num_threads(),
             args.evaluate_checkpoint) for name in args.models]
    if args.parallel and len(jobs) > 1:
        # One process per model (spawned: a fresh interpreter each), each with its own intra-op threads.
        with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(run_model, *zip(*jobs)))
    else:
        results = [run_model(*job) for job in jobs]
    for name, result in zip(args.models, results):
        summary["models"][name] = result
        scores = result["scores"]
        print(f"{name}: validation pass@2 {fmt(scores['validation'].get('average'))}, held-out pass@2 "
              f"{fmt(scores['held_out'].get('average'))}, training-task pass@2 "
              f"{fmt(scores['training'].get('average'))}, trained {result['train_seconds'] / 60:.1f} min "
              f"({result['train_cpu_seconds'] / 60:.1f} CPU-min)", flush=True)
    stem = f"results-checkpoint-aug{args.eval_augmentations}" if args.evaluate_checkpoint else "results"
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / f"{stem}.md").write_text(results_markdown(summary))
    print(results_markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
