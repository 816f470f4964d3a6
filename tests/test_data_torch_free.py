"""Every ``trmlab data`` subcommand runs where torch cannot be imported at all.

Each command runs as ``python -m trmlab data ...`` in its own subprocess whose PYTHONPATH starts with a
directory holding a ``sitecustomize.py`` that makes ``import torch`` (and any ``torch.*``) raise ImportError,
so an ``import torch`` anywhere on a data command's code path (module level or inside a function) ends the
command with exit 4 instead of 0. The commands chain: generated CSVs feed the Sudoku and Maze builders, and
``inspect`` reads every kind of dataset (ARC, Sudoku, Maze, synthetic).

Run: .venv/bin/python -m pytest -q tests/test_data_torch_free.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

BLOCKER = '''
import sys


class _NoTorch:
    """Refuse torch, as on a machine without it."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is blocked in this test (import of {name!r})")
        return None


sys.meta_path.insert(0, _NoTorch())
'''


@pytest.fixture(scope="module")
def no_torch_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment whose Python refuses torch; crash tracebacks (exit 4) land in its own temp directory."""
    root = tmp_path_factory.mktemp("no-torch")
    (root / "site").mkdir()
    (root / "site" / "sitecustomize.py").write_text(textwrap.dedent(BLOCKER))
    (root / "tmp").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(root / "tmp"),
           "PYTHONPATH": os.pathsep.join([str(root / "site"), str(SRC)])}
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "torch is blocked" in probe.stderr, "the blocker must work"
    return env


def run_data(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess:
    """``trmlab data ARGS`` run without torch."""
    return subprocess.run([sys.executable, "-m", "trmlab", "data", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120)


def failure(process: subprocess.CompletedProcess) -> str:
    return f"exit {process.returncode} (4 = a crash, e.g. an import of the blocked torch): {process.stderr}"


# (name, arguments after `trmlab data`, a file the command must have written); in order: later ones read
# what earlier ones wrote. {work} is a fresh directory, {arc} the official ARC builder's small fixture.
COMMANDS = [
    ("build-arc", ["build-arc", "--input-file-prefix", "{arc}/input/mini", "--output-dir", "{work}/arc",
                   "--subsets", "training", "evaluation", "--num-aug", "2", "--quiet"],
     "arc/identifiers.json"),
    ("generate-sudoku", ["generate-sudoku", "--output-dir", "{work}/sudoku-csv", "--train", "4", "--test",
                         "2", "--seed", "0", "--size", "4", "--difficulty", "easy"], "sudoku-csv/train.csv"),
    ("build-sudoku", ["build-sudoku", "--input-dir", "{work}/sudoku-csv", "--output-dir", "{work}/sudoku",
                      "--num-aug", "1", "--seed", "0", "--quiet"], "sudoku/test/dataset.json"),
    ("generate-maze", ["generate-maze", "--output-dir", "{work}/maze-csv", "--train", "3", "--test", "2",
                       "--seed", "0", "--side", "7", "--min-path", "4"], "maze-csv/test.csv"),
    ("build-maze", ["build-maze", "--input-dir", "{work}/maze-csv", "--output-dir", "{work}/maze", "--seed",
                    "0", "--aug", "--quiet"], "maze/test/dataset.json"),
    ("build-synthetic", ["build-synthetic", "--output-dir", "{work}/synthetic", "--families", "gravity",
                         "--train-tasks", "2", "--eval-tasks", "1", "--canvas", "6", "--num-aug", "1"],
     "synthetic/encoder/identifiers.json"),
]
# Dataset directory → a line `data inspect` must print for it (Sudoku and Maze are classified as boards).
INSPECTED = {"arc": "train: layout official, canvas 30x30 (seq_len 900)",
             "sudoku": "train: layout official, sudoku boards, canvas 4x4 (seq_len 16)",
             "maze": "train: layout official, maze boards, canvas 7x7 (seq_len 49)",
             "synthetic/trm": "train: layout official, canvas 6x6 (seq_len 36)",
             "synthetic/encoder": "train: layout encoder, canvas 6x6 (seq_len 36)"}


@pytest.fixture(scope="module")
def built(no_torch_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Path, dict[str, subprocess.CompletedProcess]]:
    """Every builder and generator, run in order without torch: the work directory and each one's result."""
    from conftest import shared_path

    arc, work = shared_path("fixtures/official-arc-build/small"), tmp_path_factory.mktemp("data-commands")
    results = {name: run_data(no_torch_env, *(a.format(work=work, arc=arc) for a in args))
               for name, args, _ in COMMANDS}
    return work, results


@pytest.mark.parametrize("name,written", [(name, written) for name, _, written in COMMANDS])
def test_each_builder_and_generator_runs_without_torch(built, name: str, written: str):
    work, results = built
    assert results[name].returncode == 0, failure(results[name])
    assert (work / written).is_file()


@pytest.mark.parametrize("dataset", list(INSPECTED))
def test_inspect_runs_without_torch(built, no_torch_env: dict[str, str], dataset: str):
    work, _ = built
    assert (work / dataset).is_dir(), f"{dataset} was not built (see the builder tests)"
    process = run_data(no_torch_env, "inspect", work / dataset)
    assert process.returncode == 0, failure(process)
    assert INSPECTED[dataset] in process.stdout.splitlines()


def test_every_data_subcommand_is_covered():
    from trmlab.cli import build_parser

    parser = build_parser("data")
    data = next(a for a in parser._subparsers._group_actions).choices["data"]
    subcommands = {name for action in data._subparsers._group_actions for name in action.choices}
    assert subcommands == {name for name, _, _ in COMMANDS} | {"inspect"}
