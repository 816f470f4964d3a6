"""Accuracy versus evaluation compute for one Sudoku / Maze checkpoint: the test-time settings of
``trmlab eval`` (stochastic trajectories, halting with continuous batching, deeper recursion;
docs/evaluation.md).

Settings are chosen on a **validation** split and reported on the held-out **test** split:

- ``halt=q``: every ``halt_threshold`` of ``--thresholds`` runs on validation; the chosen threshold is the one
  with the fewest ACT steps whose exact accuracy is within 0.3 points of the official protocol's there.
- ``samples=K noise=SIGMA``: one run of ``--samples`` trajectories per noise scale of ``--noises`` on
  validation; every ``select`` rule and every K ≤ ``--samples`` is scored from the stored trajectories
  (trajectory k is seeded by (seed, row, k), so the first K of a run *are* the run with samples=K). The
  chosen (SIGMA, select) has the best validation exact accuracy at the largest K (ties: smaller SIGMA).
- ``steps=N`` for every N of ``--steps``, the official protocol, and the chosen settings together, on test.

Compute = ACT steps summed over every trajectory of every row (the official protocol: rows × halt_max_steps)
and the process CPU seconds of each run (one torch thread; a K-prefix is charged its share K / samples of its
run). Writes ``OUT/results.md`` (tables), ``OUT/results.json``, ``OUT/accuracy_vs_compute.png`` and each
run's eval directory under ``OUT/evals/<split>/<setting>`` (``trmlab report OUT/evals/test`` draws the curve).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_test_time.py runs/sudoku-cpu/checkpoints/step_2500 \
        runs/data/sudoku6 runs/data/sudoku6-val --out runs/bench-test-time/sudoku
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trmlab.data.dataset import ArcDataset
from trmlab.evaluation.grid import accuracies, dataset_task
from trmlab.evaluation.runner import EvalSettings, evaluate
from trmlab.evaluation.test_time import SELECT_RULES, TestTimeSettings, Trajectories, select
from trmlab.interop.loading import load_checkpoint

HALT_TOLERANCE = 0.003  # halt=q must stay within 0.3 points of the official accuracy (the target)


@dataclass
class Point:
    """One measured setting: where it ran, what it scored, what it cost."""

    split: str
    name: str
    settings: dict[str, Any]
    exact: float
    token: float
    act_steps: int
    relative_compute: float
    cpu_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def _parse_floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


class Bench:
    """Runs settings of one checkpoint on one split and keeps the points."""

    def __init__(self, model: Any, data: Path, split: str, out: Path, batch: int, seed: int,
                 max_rows: int | None) -> None:
        self.model, self.data, self.split, self.out = model, data, split, out
        self.batch, self.seed, self.max_rows = batch, seed, max_rows
        dataset = ArcDataset([data], "test")
        self.task = dataset_task(dataset)
        examples = dataset.items()[0][:max_rows]
        self.labels = np.asarray(dataset.gather("labels", examples)).astype(np.int64)
        self.inputs = np.asarray(dataset.gather("inputs", examples))
        self.ignore = dataset.ignore_label_id
        self.halt_max_steps = model.arch.halt_max_steps
        self.points: list[Point] = []

    def run(self, name: str, tt: TestTimeSettings | None) -> tuple[Point, Any]:
        """Evaluate one setting (None: the official protocol) and record its point."""
        settings = EvalSettings(global_batch_size=self.batch, max_tasks=self.max_rows, test_time=tt)
        started = time.process_time()
        result = evaluate(self.model, self.data, settings=settings, out_dir=self.out / self.split / name,
                          replace=True)
        cpu = time.process_time() - started
        prefix = f"{result.task.capitalize()}/" if tt is None else f"{result.task.capitalize()}/test_time/"
        counts = result.counts
        act = counts.get("act_steps", counts["rows"] * self.halt_max_steps)
        point = Point(self.split, name, (tt or TestTimeSettings()).as_dict(),
                      result.metrics[prefix + "exact_accuracy"], result.metrics[prefix + "token_accuracy"],
                      act, act / (counts["rows"] * self.halt_max_steps), cpu,
                      {k: v for k, v in result.metrics.items() if "oracle" in k})
        self.points.append(point)
        print(f"[{self.split}] {name}: exact {point.exact * 100:.2f}%  compute "
              f"{point.relative_compute:.2f}x  cpu {cpu:.1f}s", flush=True)
        return point, result

    def prefixes(self, name: str, tt: TestTimeSettings, cpu: float, ks: list[int]) -> list[Point]:
        """Score every select rule at every K of ``ks`` from the trajectories of run ``name``."""
        stored = np.load(self.out / self.split / name / "trajectories.npz")
        points = []
        for k in ks:
            runs = Trajectories(stored["preds"][:, :k], stored["q_halt_logits"][:, :k],
                                stored["q_continue_logits"][:, :k], stored["steps"][:, :k], 0.0)
            for rule in SELECT_RULES:
                if rule == "valid" and self.task not in ("sudoku", "maze"):
                    continue
                index = select(runs, rule, self.inputs, self.task)
                preds = runs.preds[np.arange(len(index)), index].astype(np.int64)
                exact, token = accuracies(preds, self.labels, self.ignore)
                every = np.stack([accuracies(runs.preds[:, j].astype(np.int64), self.labels, self.ignore)[0]
                                  for j in range(k)], axis=1)
                settings = {**tt.as_dict(), "samples": k, "select": rule}
                point = Point(self.split, f"K{k}-s{tt.noise:g}-{rule}", settings, float(exact.mean()),
                              float(token.mean()), runs.act_steps,
                              runs.act_steps / (len(index) * self.halt_max_steps), cpu * k / tt.samples,
                              {"oracle_exact": float(every.any(axis=1).mean())})
                points.append(point)
        self.points.extend(points)
        return points


def choose_threshold(points: list[Point], default: Point) -> Point:
    """The cheapest halt=q point within HALT_TOLERANCE of the official accuracy (else the most accurate)."""
    good = [p for p in points if p.exact >= default.exact - HALT_TOLERANCE]
    if good:
        return min(good, key=lambda p: (p.act_steps, -p.exact))
    return max(points, key=lambda p: p.exact)


def choose_stochastic(points: list[Point], k: int) -> Point:
    candidates = [p for p in points if p.settings["samples"] == k]
    return max(candidates, key=lambda p: (p.exact, -p.settings["noise"]))


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    probe = ArcDataset([args.test], "test")
    model = load_checkpoint(args.checkpoint, seq_len=probe.seq_len, device="cpu", use_ema=True)
    evals = args.out / "evals"
    val = Bench(model, args.val, "validation", evals, args.batch, args.seed, args.max_rows)
    test = Bench(model, args.test, "test", evals, args.batch, args.seed, args.max_rows)
    ks = [k for k in (1, 2, 4, 8, 16, 32) if k <= args.samples]

    # -- choose on validation ----------------------------------------------------------------------------
    val_default, _ = val.run("official", None)
    val_halts = [val.run(f"halt-q-T{t:g}", TestTimeSettings(halt="q", halt_threshold=t, seed=args.seed))[0]
                 for t in args.thresholds]
    threshold = choose_threshold(val_halts, val_default).settings["halt_threshold"]
    val_noisy = []
    for sigma in args.noises:
        tt = TestTimeSettings(samples=args.samples, noise=sigma, seed=args.seed)
        point, _ = val.run(f"samples{args.samples}-noise{sigma:g}", tt)
        val_noisy += val.prefixes(point.name, tt, point.cpu_seconds, [args.samples])
    best = choose_stochastic(val_noisy, args.samples)
    sigma, rule = best.settings["noise"], best.settings["select"]

    # -- report on test -----------------------------------------------------------------------------------
    test.run("official", None)
    for n in args.steps:
        test.run(f"steps{n}", TestTimeSettings(steps=n, seed=args.seed))
    for t in args.thresholds:
        test.run(f"halt-q-T{t:g}", TestTimeSettings(halt="q", halt_threshold=t, seed=args.seed))
    tt = TestTimeSettings(samples=args.samples, noise=sigma, select=rule, seed=args.seed)
    point, _ = test.run(f"samples{args.samples}-noise{sigma:g}-{rule}", tt)
    test.prefixes(point.name, tt, point.cpu_seconds, ks)
    combined = TestTimeSettings(samples=args.samples, noise=sigma, select=rule, halt="q",
                                halt_threshold=threshold, seed=args.seed)
    test.run(f"samples{args.samples}-noise{sigma:g}-{rule}-halt-q-T{threshold:g}", combined)
    return {"checkpoint": str(args.checkpoint), "task": test.task, "chosen": {
        "halt_threshold": threshold, "noise": sigma, "select": rule},
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                   f"torch {torch.__version__}, 1 thread", "command": " ".join(sys.argv),
        "points": [vars(p) for p in val.points + test.points]}


def _row(p: dict[str, Any]) -> str:
    s = p["settings"]
    what = (f"samples={s['samples']} noise={s['noise']:g} select={s['select']}" if s["samples"] > 1 else "")
    what += f" halt={s['halt']} T={s['halt_threshold']:g}" if s["halt"] else ""
    what += f" steps={s['steps']}" if s["steps"] else ""
    oracle = p["extra"].get("oracle_exact", next(iter(p["extra"].values()), None))
    return (f"| {p['name']} | {what.strip() or 'official protocol'} | {p['exact'] * 100:.1f} | "
            f"{p['token'] * 100:.2f} | {p['relative_compute']:.2f}x | {p['cpu_seconds']:.1f} | "
            f"{'' if oracle is None else f'{oracle * 100:.1f}'} |")


def write_outputs(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    lines = [f"# Test-time compute: {results['task']} ({results['checkpoint']})", "",
             f"Chosen on validation: halt_threshold={results['chosen']['halt_threshold']:g}, "
             f"noise={results['chosen']['noise']:g}, select={results['chosen']['select']}.", "",
             f"Machine: {results['machine']}. Command: `{results['command']}`", ""]
    for split in ("validation", "test"):
        lines += [f"## {split}", "", "| run | settings | exact % | token % | compute (ACT steps × rows, "
                  "vs official) | CPU s | oracle exact % |", "|---|---|---|---|---|---|---|"]
        lines += [_row(p) for p in results["points"] if p["split"] == split]
        lines.append("")
    (out / "results.md").write_text("\n".join(lines))
    plot(results, out / "accuracy_vs_compute.png")


def plot(results: dict[str, Any], path: Path) -> None:
    """Exact accuracy against relative compute and CPU seconds (test split), one colour per setting kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    test = [p for p in results["points"] if p["split"] == "test"]
    kinds = {"official": lambda p: p["name"] == "official",
             "steps=N": lambda p: p["name"].startswith("steps"),
             "halt=q": lambda p: p["name"].startswith("halt"),
             "samples=K (prefix)": lambda p: p["name"].startswith("K"),
             "samples+halt": lambda p: p["name"].startswith("samples") and "halt" in p["name"]}
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, key, label in ((axes[0], "relative_compute", "ACT steps × rows (official = 1)"),
                             (axes[1], "cpu_seconds", "CPU seconds (1 thread)")):
        for kind, member in kinds.items():
            chosen = [p for p in test if member(p)]
            if chosen:
                axis.scatter([p[key] for p in chosen], [p["exact"] * 100 for p in chosen], label=kind, s=22)
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel(label)
        axis.set_ylabel("exact accuracy % (held-out test)")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"{results['task']}: accuracy versus evaluation compute")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("test", type=Path, help="dataset directory whose test split is the held-out set")
    parser.add_argument("val", type=Path, help="dataset directory whose test split is the validation set")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-rows", type=int, default=None, help="first N puzzles of each split (smoke)")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--noises", type=_parse_floats, default=[0.1, 0.2, 0.4, 0.8])
    parser.add_argument("--thresholds", type=_parse_floats, default=[-2.0, -1.0, 0.0, 1.0, 2.0, 4.0])
    parser.add_argument("--steps", type=_parse_ints, default=[1, 2, 3, 6, 8])
    args = parser.parse_args()
    started = time.process_time()
    results = run_bench(args)
    results["total_cpu_seconds"] = time.process_time() - started
    write_outputs(results, args.out)
    print(f"wrote {args.out}/results.md, results.json, accuracy_vs_compute.png "
          f"({results['total_cpu_seconds']:.0f} CPU s)")


if __name__ == "__main__":
    main()
