"""Benchmark the ARC builder: build time and peak RSS.

Default: the issue's measurement, the first 20 training + 10 evaluation + 10 concept tasks (file order) of the
official kaggle-combined files x 1000 augmentations (the official builder: 45.5 s, 749 MB peak RSS on the
2-core development machine). Each run is a fresh subprocess (so its peak RSS is its own); the best time of
``--repeat`` runs is reported (the CPU is shared).

    .venv/bin/python benchmarks/bench_data.py                      # 40 tasks x 1000 augmentations
    .venv/bin/python benchmarks/bench_data.py --num-aug 100 --repeat 1
    .venv/bin/python benchmarks/bench_data.py --full               # all of ARC-AGI-1 (writes ~7 GB, temp dir)
    .venv/bin/python benchmarks/bench_data.py --full --count-only  # whole ARC-AGI-1, identifiers only
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PREFIX = REPO.parent / "shared" / "data" / "arc-kaggle-combined" / "arc-agi"


def _child(options: dict) -> None:
    """Run one build in this process and print its wall/CPU seconds, peak RSS and identifier count."""
    from trmlab.data.build_arc import BuildOptions, build_arc

    before = resource.getrusage(resource.RUSAGE_SELF)
    baseline = before.ru_maxrss / 1024
    started = time.perf_counter()
    summary = build_arc(BuildOptions(**options), log=lambda _message: None)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": after.ru_maxrss / 1024,  # KiB
                      "baseline_rss_mb": baseline, "identifiers": summary.num_identifiers}))


def run_once(options: dict) -> dict:
    """One build in a fresh interpreter (own peak RSS)."""
    result = subprocess.run([sys.executable, __file__, "--child", json.dumps(options)], check=True,
                            capture_output=True, text=True, cwd=REPO)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input-file-prefix", default=str(DEFAULT_PREFIX))
    parser.add_argument("--subsets", nargs="+", default=["training", "evaluation", "concept"])
    parser.add_argument("--test-set-name", default="evaluation")
    parser.add_argument("--tasks", type=int, nargs="+", default=[20, 10, 10],
                        help="first K tasks of each subset (ignored with --full)")
    parser.add_argument("--num-aug", type=int, default=1000)
    parser.add_argument("--layout", choices=("trm", "encoder"), default="trm")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best time is reported")
    parser.add_argument("--full", action="store_true", help="all tasks of every subset (ARC-AGI-1 by "
                        "default)")
    parser.add_argument("--count-only", action="store_true", help="augment and count only, write nothing")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return
    scratch = Path(tempfile.mkdtemp(prefix="trmlab-bench-data-"))
    try:
        options = {"input_file_prefix": args.input_file_prefix, "subsets": args.subsets,
                   "test_set_name": args.test_set_name, "num_aug": args.num_aug, "layout": args.layout,
                   "max_tasks_per_subset": None if args.full else args.tasks, "count_only": args.count_only,
                   "output_dir": str(scratch / "out"), "overwrite": True}
        runs = []
        for _ in range(args.repeat):
            runs.append(run_once(options))
            shutil.rmtree(scratch / "out", ignore_errors=True)
        best = min(runs, key=lambda r: r["seconds"])
        tasks = "all" if args.full else "+".join(map(str, args.tasks))
        print(f"tasks {tasks} ({' '.join(args.subsets)}), num_aug {args.num_aug}, layout {args.layout}"
              f"{', count only' if args.count_only else ''}: identifiers {best['identifiers']:,}")
        print(f"  build time: best {best['seconds']:.2f} s of {len(runs)} "
              f"({', '.join(format(r['seconds'], '.2f') for r in runs)}); CPU (user + sys) of that run "
              f"{best['cpu_seconds']:.2f} s")
        print(f"  peak RSS: {max(r['peak_rss_mb'] for r in runs):.0f} MB "
              f"(interpreter + imports before the build: {best['baseline_rss_mb']:.0f} MB)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
