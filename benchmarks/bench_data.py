"""Benchmark the dataset builders (`trmlab data build-arc`, and with ``--puzzles`` `build-sudoku` /
`build-maze`) as a user runs them, optionally side by side with the official builder on the same input.

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

``--puzzles sudoku|maze`` generates valid CSV rows in the Hub format (``--train-rows``, ``--test-rows``;
puzzle hardness does not matter to a builder) and builds them with the official recipe's options by default
(Sudoku: ``--subsample-size 1000 --num-aug 1000``; Maze: 30x30, add ``--aug`` for the dihedral copies). The
official Sudoku/Maze builders download from the Hub and are unseeded: here they read the same local files
and run after ``np.random.seed(--seed)``, which is what trmlab's ``--seed`` reproduces.

    .venv/bin/python benchmarks/bench_data.py --puzzles sudoku --repeat 1 --official ../TinyRecursiveModels \\
        --official-python ../offvenv/bin/python                  # 1,000 puzzles x 1,001 copies
    .venv/bin/python benchmarks/bench_data.py --puzzles maze --train-rows 1000 --test-rows 1000 --aug
"""

from __future__ import annotations

import argparse
import csv
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

import numpy as np

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
    puzzles = parser.add_argument_group("Sudoku and Maze (--puzzles): generated CSV input, official options")
    puzzles.add_argument("--puzzles", choices=("sudoku", "maze"), default=None,
                         help="benchmark build-sudoku / build-maze instead of build-arc (uses --num-aug, "
                         "--repeat, --official)")
    puzzles.add_argument("--train-rows", type=int, default=10000, help="rows of the generated train.csv")
    puzzles.add_argument("--test-rows", type=int, default=10000, help="rows of the generated test.csv")
    puzzles.add_argument("--subsample-size", type=int, default=1000, help="0 = all training rows")
    puzzles.add_argument("--side", type=int, default=30, help="maze side")
    puzzles.add_argument("--aug", action="store_true", help="maze: the 8 dihedral transforms")
    puzzles.add_argument("--seed", type=int, default=0, help="input generation and --seed of the builds")
    args = parser.parse_args()
    if args.puzzles:
        bench_puzzles(args)
        return
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
        env = trmlab_env()
        commands = {"trmlab": (trmlab, REPO, env)}
        if args.official is not None:
            commands["official"] = (official, args.official.resolve(), None)
        runs = alternate_runs(commands, args.repeat, scratch)
        tasks = "all" if args.full else "+".join(map(str, args.tasks))
        print_machine()
        print(f"tasks {tasks} ({' '.join(args.subsets)}), num_aug {args.num_aug}, layout {args.layout}"
              f"{', count only' if args.count_only else ''}; each build a fresh process, start to exit")
        report(runs, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def trmlab_env() -> dict[str, str]:
    """The environment of a trmlab build process: this checkout's ``src`` first on the path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"),
                                                                    os.environ.get("PYTHONPATH")]))}


def alternate_runs(commands: dict[str, tuple[list[str], Path, dict[str, str] | None]], repeat: int,
                   scratch: Path) -> dict[str, list[Run]]:
    """Run each named command (writing ``scratch / name``) ``repeat`` times, alternating the order."""
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    for index in range(repeat):
        for name in list(commands) if index % 2 == 0 else list(commands)[::-1]:
            shutil.rmtree(scratch / name, ignore_errors=True)
            command, cwd, env = commands[name]
            runs[name].append(timed(command, cwd, env))
    return runs


def print_machine() -> None:
    print(f"{platform.node()} ({os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}), {time.strftime('%Y-%m-%d %H:%M %Z')}")


def report(runs: dict[str, list[Run]], scratch: Path) -> None:
    """Best times, CPU and peak RSS of each builder; with the official one, speed-up and output identity."""
    best_trmlab, line = describe("trmlab", runs["trmlab"])
    print(line)
    if "official" in runs:
        best_official, line = describe("official", runs["official"])
        print(line)
        print(f"  speed-up: {best_official.seconds / best_trmlab.seconds:.1f}x wall (best vs best), "
              f"{best_official.cpu_seconds / best_trmlab.cpu_seconds:.1f}x CPU")
        same, count, size = same_files(scratch / "trmlab", scratch / "official")
        print(f"  outputs identical file by file: {'yes' if same else 'NO'} ({count} files, "
              f"{size / 1e6:.0f} MB)")
        if not same:
            raise SystemExit("the two builders' outputs differ")


# ----------------------------------------------------------------------------------------------------------
# Sudoku and Maze (--puzzles sudoku|maze): build-sudoku / build-maze against the official builders

# Runs an official CSV builder on local files: its Hub download is replaced by the input directory, and its
# unseeded global RNG is seeded once before the train split (what trmlab's --seed means).
OFFICIAL_CSV_DRIVER = """
import json, os, sys
root, kind, input_dir, output_dir, seed, fields = sys.argv[1:7]
sys.path.insert(0, os.path.join(root, "dataset"))
import numpy as np
import importlib
builder = importlib.import_module(f"build_{kind}_dataset")
builder.hf_hub_download = lambda repo, name, repo_type=None: os.path.join(input_dir, name)
config = builder.DataProcessConfig(output_dir=output_dir, **json.loads(fields))
np.random.seed(int(seed))
builder.convert_subset("train", config)
builder.convert_subset("test", config)
"""


def write_rows(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", "question", "answer", "rating"])
        writer.writerows(rows)


def sudoku_rows(count: int, rng: np.random.Generator) -> list[tuple[str, str, str, str]]:
    """Valid 9×9 rows (a builder's speed does not depend on hardness): a shuffled pattern, ~60% blank."""
    r, c = np.meshgrid(np.arange(9), np.arange(9), indexing="ij")
    pattern = (3 * (r % 3) + r // 3 + c) % 9 + 1
    rows = []
    for k in range(count):
        grid = np.concatenate([[0], rng.permutation(9) + 1])[pattern]
        grid = grid[np.concatenate([b * 3 + rng.permutation(3) for b in rng.permutation(3)])]
        grid = grid[:, np.concatenate([s * 3 + rng.permutation(3) for s in rng.permutation(3)])]
        answer = (grid.T if rng.random() < 0.5 else grid).ravel()
        question = np.where(rng.random(81) < 0.6, 0, answer)
        rows.append((f"bench{k}", "".join("." if v == 0 else str(v) for v in question),
                     "".join(map(str, answer)), str(int(rng.integers(0, 100)))))
    return rows


def maze_rows(count: int, side: int, rng: np.random.Generator) -> list[tuple[str, str, str, str]]:
    """Valid side×side rows: a depth-first maze, S and G on two random open cells, the path between marked."""
    rows = []
    for k in range(count):
        grid = np.full((side, side), "#")
        start = (1, 1)
        grid[start] = " "
        stack, seen = [start], {start}
        while stack:
            r, c = stack[-1]
            options = [(r + dr, c + dc) for dr, dc in ((2, 0), (-2, 0), (0, 2), (0, -2))
                       if 0 < r + dr < side - 1 and 0 < c + dc < side - 1 and (r + dr, c + dc) not in seen]
            if not options:
                stack.pop()
                continue
            nr, nc = options[rng.integers(len(options))]
            grid[(r + nr) // 2, (c + nc) // 2] = grid[nr, nc] = " "
            seen.add((nr, nc))
            stack.append((nr, nc))
        free = np.argwhere(grid == " ")
        s, g = (tuple(free[i]) for i in rng.choice(len(free), 2, replace=False))
        previous = {s: s}
        queue = [s]
        for cell in queue:  # breadth-first: the unique path of a perfect maze
            for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                step = (cell[0] + dr, cell[1] + dc)
                if grid[step] == " " and step not in previous:
                    previous[step] = cell
                    queue.append(step)
        grid[s], grid[g] = "S", "G"
        question = "".join(grid.ravel())
        cell = previous[g]
        while cell != s:
            grid[cell] = "o"
            cell = previous[cell]
        rows.append((f"bench{k}", question, "".join(grid.ravel()), str(len(queue))))
    return rows


def bench_puzzles(args: argparse.Namespace) -> None:
    """Generate the input CSVs, then time build-sudoku / build-maze (and the official builder) on them."""
    kind = args.puzzles
    scratch = Path(tempfile.mkdtemp(prefix=f"trmlab-bench-{kind}-"))
    try:
        rng = np.random.default_rng(args.seed)
        (scratch / "input").mkdir()
        for split, count in (("train", args.train_rows), ("test", args.test_rows)):
            rows = sudoku_rows(count, rng) if kind == "sudoku" else maze_rows(count, args.side, rng)
            write_rows(scratch / "input" / f"{split}.csv", rows)
        subsample = args.subsample_size or None  # 0: every training row
        fields: dict = {"subsample_size": subsample}
        flags = ["--seed", str(args.seed)] + (["--subsample-size", str(subsample)] if subsample else [])
        if kind == "sudoku":
            fields["num_aug"] = args.num_aug
            flags += ["--num-aug", str(args.num_aug)]
        else:
            fields["aug"] = args.aug
            flags += ["--aug"] if args.aug else []
        trmlab = [sys.executable, "-m", "trmlab", "data", f"build-{kind}", "--input-dir",
                  str(scratch / "input"), "--output-dir", str(scratch / "trmlab"), *flags, "--quiet"]
        env = {**trmlab_env(), "TQDM_DISABLE": "1"}
        commands = {"trmlab": (trmlab, REPO, env)}
        if args.official is not None:
            official = [args.official_python, "-c", OFFICIAL_CSV_DRIVER, str(args.official.resolve()), kind,
                        str(scratch / "input"), str(scratch / "official"), str(args.seed), json.dumps(fields)]
            commands["official"] = (official, REPO, env)
        runs = alternate_runs(commands, args.repeat, scratch)
        copies = (1 + args.num_aug) if kind == "sudoku" else (8 if args.aug else 1)
        train = min(subsample or args.train_rows, args.train_rows)
        print_machine()
        print(f"{kind}: CSV {args.train_rows:,} train + {args.test_rows:,} test rows; train {train:,} "
              f"puzzles x {copies} copies = {train * copies:,} examples; each build a fresh process, start "
              f"to exit")
        report(runs, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
