"""Accuracy versus evaluation compute for one Sudoku / Maze / ARC checkpoint: the test-time settings of
``trmlab eval`` (stochastic trajectories, halting with continuous batching, deeper recursion, the ARC
augmentation budget; docs/evaluation.md).

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

An **ARC** dataset (``test_puzzles.json``) runs a plain grid instead, with nothing chosen and so no validation
split: pass@1 / pass@2 for every augmentation budget ``num_augmentations=K`` of ``--augmentations`` (the first
K augmented versions of each task, original first) at every step limit of ``--steps`` (default: the
checkpoint's halt_max_steps, 2× and 4× it; the first runs the official protocol, the others ``steps=N``), then
``steps=halt_max_steps`` through the test-time engine (must score as the official protocol) and
``samples=--samples noise=SIGMA`` for each SIGMA of ``--noises``, both with every augmentation. Compute is
relative to the official protocol with every augmentation.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_test_time.py runs/demo/checkpoints/step_4036 \
        runs/data/demo-arc1 --out runs/bench-test-time/arc --augmentations 1,2,4,9 --samples 4 --noises 0.4
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
from trmlab.evaluation.grid import accuracies, dataset_task, is_arc_dataset
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
        "machine": _machine(), "command": " ".join(sys.argv),
        "points": [vars(p) for p in val.points + test.points]}


def _machine() -> str:
    processor = platform.processor() or platform.machine()
    return f"{platform.node()} {processor}, torch {torch.__version__}, 1 thread"


def _row(p: dict[str, Any]) -> str:
    s = p["settings"]
    what = (f"samples={s['samples']} noise={s['noise']:g} select={s['select']}" if s["samples"] > 1 else "")
    what += f" halt={s['halt']} T={s['halt_threshold']:g}" if s["halt"] else ""
    what += f" steps={s['steps']}" if s["steps"] else ""
    oracle = p["extra"].get("oracle_exact", next(iter(p["extra"].values()), None))
    return (f"| {p['name']} | {what.strip() or 'official protocol'} | {p['exact'] * 100:.1f} | "
            f"{p['token'] * 100:.2f} | {p['relative_compute']:.2f}x | {p['cpu_seconds']:.1f} | "
            f"{'' if oracle is None else f'{oracle * 100:.1f}'} |")


def _write_results(results: dict[str, Any], out: Path, preamble: list[str], table: list[str],
                   plotter: Any) -> None:
    """OUT/results.json, OUT/results.md (title, ``preamble``, machine, command, ``table``) and the chart."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    lines = [f"# Test-time compute: {results['task']} ({results['checkpoint']})", "", *preamble,
             f"Machine: {results['machine']}. Command: `{results['command']}`", "", *table]
    (out / "results.md").write_text("\n".join(lines))
    plotter(results, out / "accuracy_vs_compute.png")


def write_outputs(results: dict[str, Any], out: Path) -> None:
    chosen = results["chosen"]
    preamble = [f"Chosen on validation: halt_threshold={chosen['halt_threshold']:g}, "
                f"noise={chosen['noise']:g}, select={chosen['select']}.", ""]
    lines: list[str] = []
    for split in ("validation", "test"):
        lines += [f"## {split}", "", "| run | settings | exact % | token % | compute (ACT steps × rows, "
                  "vs official) | CPU s | oracle exact % |", "|---|---|---|---|---|---|---|"]
        lines += [_row(p) for p in results["points"] if p["split"] == split]
        lines.append("")
    _write_results(results, out, preamble, lines, plot)


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


# -- ARC: pass@K versus the augmentation budget and the step limit (nothing chosen) ------------------------


def _arc_point(model: Any, data: Path, out: Path, name: str, augmentations: int, tt: TestTimeSettings | None,
               batch: int) -> dict[str, Any]:
    """One ARC evaluation: pass@1 / pass@2, the test inputs solved, its ACT steps and CPU seconds."""
    settings = EvalSettings(global_batch_size=batch, num_augmentations=augmentations, test_time=tt)
    started = time.process_time()
    result = evaluate(model, data, settings=settings, out_dir=out / name, replace=True)
    cpu = time.process_time() - started
    arc = result.result
    counts = arc.counts
    act = int(counts.get("act_steps", counts["rows"] * model.arch.halt_max_steps))
    return {"split": "test", "name": name, "settings": (tt or TestTimeSettings()).as_dict(),
            "num_augmentations": augmentations, "pass@1": result.metrics["ARC/pass@1"],
            "pass@2": result.metrics["ARC/pass@2"], "solved@2": sum(p.passed(2) for p in arc.pairs),
            "test_inputs": len(arc.pairs), "act_steps": act, "cpu_seconds": cpu}


def run_arc_bench(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    probe = ArcDataset([args.test], "test")
    model = load_checkpoint(args.checkpoint, seq_len=probe.seq_len, device="cpu", use_ema=True)
    halt_max_steps = model.arch.halt_max_steps
    steps = args.steps or [halt_max_steps, 2 * halt_max_steps, 4 * halt_max_steps]
    every = max(args.augmentations)
    evals, points = args.out / "evals" / "test", []

    def run(name: str, augmentations: int, tt: TestTimeSettings | None) -> None:
        point = _arc_point(model, args.test, evals, name, augmentations, tt, args.batch)
        points.append(point)
        print(f"[arc] {name}: pass@1 {point['pass@1'] * 100:.1f}%  pass@2 {point['pass@2'] * 100:.1f}%  "
              f"ACT steps {point['act_steps']}  cpu {point['cpu_seconds']:.1f}s", flush=True)

    for n in steps:
        for k in args.augmentations:
            official = n == halt_max_steps
            run(f"aug{k}" if official else f"aug{k}-steps{n}", k,
                None if official else TestTimeSettings(steps=n, seed=args.seed))
    engine = TestTimeSettings(steps=halt_max_steps, seed=args.seed)  # must score as the official protocol
    run(f"aug{every}-steps{halt_max_steps}-engine", every, engine)
    for sigma in args.noises:
        run(f"aug{every}-samples{args.samples}-noise{sigma:g}", every,
            TestTimeSettings(samples=args.samples, noise=sigma, seed=args.seed))
    reference = next(p for p in points if p["name"] == f"aug{every}")
    for point in points:
        point["relative_compute"] = point["act_steps"] / reference["act_steps"]
    return {"checkpoint": str(args.checkpoint), "task": "arc", "halt_max_steps": halt_max_steps,
            "machine": _machine(), "command": " ".join(sys.argv), "points": points}


def _arc_row(p: dict[str, Any]) -> str:
    s = p["settings"]
    what = f"num_augmentations={p['num_augmentations']}"
    what += f" steps={s['steps']}" if s["steps"] else ""
    what += f" samples={s['samples']} noise={s['noise']:g}" if s["samples"] > 1 else ""
    return (f"| {p['name']} | {what} | {p['pass@1'] * 100:.1f} | {p['pass@2'] * 100:.1f} | "
            f"{p['solved@2']} / {p['test_inputs']} | {p['act_steps']:,} | {p['relative_compute']:.2f}x | "
            f"{p['cpu_seconds']:.1f} |")


def write_arc_outputs(results: dict[str, Any], out: Path) -> None:
    table = ["| run | settings | pass@1 % | pass@2 % | test inputs solved (pass@2) | ACT steps | "
             "compute (vs official, every augmentation) | CPU s |", "|---|---|---|---|---|---|---|---|"]
    _write_results(results, out, [], table + [_arc_row(p) for p in results["points"]] + [""], plot_arc)


def plot_arc(results: dict[str, Any], path: Path) -> None:
    """pass@2 against relative compute and CPU seconds: one line per step limit across the augmentation
    budgets, the stochastic runs as single points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = results["points"]
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    compute = "ACT steps × rows (official, all augmentations = 1)"
    for axis, key, label in ((axes[0], "relative_compute", compute),
                             (axes[1], "cpu_seconds", "CPU seconds (1 thread)")):
        for n in sorted({p["settings"]["steps"] or results["halt_max_steps"] for p in points}):
            line = [p for p in points if (p["settings"]["steps"] or results["halt_max_steps"]) == n
                    and p["settings"]["samples"] == 1 and not p["name"].endswith("engine")]
            line.sort(key=lambda p: p["num_augmentations"])
            budgets = ", ".join(str(p["num_augmentations"]) for p in line)
            drawn = axis.plot([p[key] for p in line], [p["pass@2"] * 100 for p in line], marker="o", ms=4,
                              label=f"{n} ACT steps, K = {budgets}")
            axis.plot([p[key] for p in line], [p["pass@1"] * 100 for p in line], ls="--", lw=0.8,
                      color=drawn[0].get_color())  # pass@1, dashed
        noisy = [p for p in points if p["settings"]["samples"] > 1]
        if noisy:
            axis.scatter([p[key] for p in noisy], [p["pass@2"] * 100 for p in noisy], marker="x", color="k",
                         label="samples + noise (all augmentations)", zorder=3)
        axis.set_xscale("log")
        axis.set_xlabel(label, fontsize=8)
        axis.set_ylabel("pass@2 % (dashed: pass@1)", fontsize=8)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(f"ARC ({results['checkpoint']}): pass@2 versus evaluation compute", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("test", type=Path, help="dataset directory whose test split is the held-out set")
    parser.add_argument("val", type=Path, nargs="?",
                        help="dataset directory whose test split is the validation set (not for ARC)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-rows", type=int, default=None, help="first N puzzles of each split (smoke)")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--noises", type=_parse_floats, default=[0.1, 0.2, 0.4, 0.8])
    parser.add_argument("--thresholds", type=_parse_floats, default=[-2.0, -1.0, 0.0, 1.0, 2.0, 4.0])
    parser.add_argument("--steps", type=_parse_ints, default=None,
                        help="step limits (default 1,2,3,6,8; ARC: halt_max_steps, 2x and 4x it)")
    parser.add_argument("--augmentations", type=_parse_ints, default=[1, 2, 4, 9],
                        help="ARC: augmentation budgets num_augmentations=K (the largest is the reference)")
    args = parser.parse_args()
    arc = is_arc_dataset(args.test)
    if not arc and args.val is None:
        parser.error("a Sudoku / Maze dataset needs the validation dataset directory as well")
    if not arc and args.steps is None:
        args.steps = [1, 2, 3, 6, 8]
    started = time.process_time()
    results = run_arc_bench(args) if arc else run_bench(args)
    results["total_cpu_seconds"] = time.process_time() - started
    (write_arc_outputs if arc else write_outputs)(results, args.out)
    print(f"wrote {args.out}/results.md, results.json, accuracy_vs_compute.png "
          f"({results['total_cpu_seconds']:.0f} CPU s)")


if __name__ == "__main__":
    main()
