"""Benchmark the ARC builder: `trmlab data build-arc` as a user runs it, optionally side by side with the
official builder on the same input.

Each build is a fresh process timed from start to exit (interpreter start and imports included, as a user
waits for them), with its own CPU time (user + sys) and peak RSS from ``wait4``. The default input is the
issue's: the first 20 training + 10 evaluation + 10 concept tasks (file order) of the official kaggle-combined
ARC-AGI-1 files x 1000 augmentations. Those tasks are written to a scratch input prefix that both builders
read, so they see the same bytes.

``--official PATH`` (a checkout of SamsungSAILMontreal/TinyRecursiveModels; run with ``--official-python``, a
Python that has its dependencies) runs the official ``dataset/build_arc_dataset.py`` on the same input in the
same run, alternating which goes first, and then checks that both outputs are identical file by file.

    .venv/bin/python benchmarks/bench_data.py                      # trmlab only, 40 tasks x 1000
    .venv/bin/python benchmarks/bench_data.py --official ../TinyRecursiveModels \\
        --official-python ../offvenv/bin/python --repeat 3         # side by side
    .venv/bin/python benchmarks/bench_data.py --num-aug 100 --repeat 1
    .venv/bin/python benchmarks/bench_data.py --full --repeat 1    # all of ARC-AGI-1 (writes ~7 GB, temp dir)
    .venv/bin/python benchmarks/bench_data.py --full --count-only  # whole ARC-AGI-1, identifiers only
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PREFIX = REPO.parent / "shared" / "data" / "arc-kaggle-combined" / "arc-agi"


@dataclass
class Run:
    """One build process: wall seconds (start to exit), CPU seconds (user + sys), peak RSS in MB."""

    seconds: float
    cpu_seconds: float
    peak_rss_mb: float


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> Run:
    """Run ``command`` to completion and measure it; its output is discarded (a failure shows its stderr)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{stderr}")
    return Run(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)  # ru_maxrss in KiB


def write_first_tasks(prefix: str, subsets: list[str], counts: list[int], out_prefix: Path) -> None:
    """Copy the first K tasks (file order) of each subset's challenges (and solutions, if present)."""
    for subset, count in zip(subsets, counts):
        keep = None
        for kind in ("challenges", "solutions"):
            source = Path(f"{prefix}_{subset}_{kind}.json")
            if not source.is_file():
                continue
            content = json.loads(source.read_text())
            keep = list(content)[:count] if keep is None else keep
            Path(f"{out_prefix}_{subset}_{kind}.json").write_text(json.dumps({k: content[k] for k in keep}))


def same_files(a: Path, b: Path) -> tuple[bool, int, int]:
    """(identical file lists and bytes, file count, total bytes) of two directory trees."""
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    other = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    same = names == other and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)
    return same, len(other), sum((b / n).stat().st_size for n in other)


def describe(name: str, runs: list[Run]) -> tuple[Run, str]:
    best = min(runs, key=lambda r: r.seconds)
    return best, (f"  {name:8s} best {best.seconds:6.2f} s wall of {len(runs)} "
                  f"({', '.join(format(r.seconds, '.2f') for r in runs)}); CPU of that run "
                  f"{best.cpu_seconds:.2f} s; peak RSS {max(r.peak_rss_mb for r in runs):.0f} MB")


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
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each builder; the best time is reported")
    parser.add_argument("--full", action="store_true", help="all tasks of every subset (ARC-AGI-1 by "
                        "default)")
    parser.add_argument("--count-only", action="store_true", help="augment and count only, write nothing")
    parser.add_argument("--official", type=Path, default=None,
                        help="checkout of the official TinyRecursiveModels repository: also time its builder")
    parser.add_argument("--official-python", default=sys.executable,
                        help="Python with the official code's dependencies (numpy, pydantic, argdantic)")
    args = parser.parse_args()
    if args.official and (args.count_only or args.layout != "trm"):
        parser.error("--official compares full TRM-layout builds: drop --count-only / --layout encoder")
    if len(args.tasks) != len(args.subsets):
        parser.error("--tasks needs one count per subset")

    scratch = Path(tempfile.mkdtemp(prefix="trmlab-bench-data-"))
    try:
        prefix = args.input_file_prefix
        if not args.full:
            prefix = str(scratch / "input" / "arc")
            (scratch / "input").mkdir()
            write_first_tasks(args.input_file_prefix, args.subsets, args.tasks, Path(prefix))
        common = ["--input-file-prefix", prefix, "--subsets", *args.subsets, "--test-set-name",
                  args.test_set_name, "--num-aug", str(args.num_aug)]
        trmlab = [sys.executable, "-m", "trmlab", "data", "build-arc", *common, "--output-dir",
                  str(scratch / "trmlab"), "--layout", args.layout, "--quiet",
                  *(["--count-only"] if args.count_only else [])]
        official = [args.official_python, "-m", "dataset.build_arc_dataset", *common, "--output-dir",
                    str(scratch / "official")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"),
                                                                       os.environ.get("PYTHONPATH")]))}
        runs: dict[str, list[Run]] = {"trmlab": [], "official": []}
        for index in range(args.repeat):
            order = ["trmlab", "official"] if index % 2 == 0 else ["official", "trmlab"]
            for name in order:
                if name == "official" and args.official is None:
                    continue
                shutil.rmtree(scratch / name, ignore_errors=True)
                if name == "trmlab":
                    runs[name].append(timed(trmlab, REPO, env))
                else:
                    runs[name].append(timed(official, args.official.resolve()))

        tasks = "all" if args.full else "+".join(map(str, args.tasks))
        print(f"{platform.node()} ({os.cpu_count()} CPUs, load average "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}), {time.strftime('%Y-%m-%d %H:%M %Z')}")
        print(f"tasks {tasks} ({' '.join(args.subsets)}), num_aug {args.num_aug}, layout {args.layout}"
              f"{', count only' if args.count_only else ''}; each build a fresh process, start to exit")
        best_trmlab, line = describe("trmlab", runs["trmlab"])
        print(line)
        if args.official is not None:
            best_official, line = describe("official", runs["official"])
            print(line)
            print(f"  speed-up: {best_official.seconds / best_trmlab.seconds:.1f}x wall (best vs best), "
                  f"{best_official.cpu_seconds / best_trmlab.cpu_seconds:.1f}x CPU")
            same, count, size = same_files(scratch / "trmlab", scratch / "official")
            print(f"  outputs identical file by file: {'yes' if same else 'NO'} ({count} files, "
                  f"{size / 1e6:.0f} MB)")
            if not same:
                raise SystemExit("the two builders' outputs differ")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
