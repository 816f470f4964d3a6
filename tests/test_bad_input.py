"""The bad-input harness (issue 20, item 3): every file format trmlab reads, fed truncated, garbled,
non-UTF-8, empty and wrong-typed to every command that reads it, plus read-only and full output locations
and SIGTERM.

Each case asserts what ``../shared/style/cli.md`` promises: exactly one line on stderr starting
``trmlab: error:`` (or, for ``checkpoint inspect``'s negative answer, the report on stdout and exit 1), the
documented exit code, no Python traceback anywhere, and nothing partial on disk (no staging, temporary or
half-written output, not even a parent directory the command created).

Cases run in-process through ``trmlab.cli.main`` on tiny inputs; only the signal cases start a subprocess.
The read-only and full locations are small tmpfs mounts (root only; skipped with a message elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import shared_path
from train_helpers import tiny_config, write_tiny_dataset
from trmlab.cli import main

PARTIAL = re.compile(r"\.partial-|\.tmp|\.old-|\.lock|\.trmlab-lock")


# ----------------------------------------------------------------------------------------------- the world


@dataclass
class World:
    """Inputs every case starts from (never modified: cases corrupt copies)."""

    root: Path
    tiny: Path            # a tiny grid dataset (3x3, train and test splits)
    preset: Path          # a YAML preset for a tiny TRM on it
    run: Path             # a finished tiny run: config.yaml, metrics.jsonl, checkpoints/step_2, step_4
    arc_input: Path       # the official ARC builder's small input (kaggle-combined prefix files)
    arc_data: Path        # the dataset the official builder made of it (with test_puzzles.json)
    raw: Path             # raw_predictions.npz for arc_data's test split
    official: Path        # an official step_N folder (step_100, all_config.yaml)
    sudoku: Path          # train.csv / test.csv of the Hub Sudoku format
    tasks: Path           # a challenges file of two small tasks that fit the tiny canvas

    @property
    def checkpoint(self) -> Path:
        return self.run / "checkpoints" / "step_4"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("world")
    arc_small = shared_path("fixtures/official-arc-build/small")
    official = root / "official"
    shutil.copytree(shared_path("fixtures/official-trm/tiny"), official,
                    ignore=shutil.ignore_patterns("*.npz"))
    tiny = write_tiny_dataset(root / "tiny")
    config = tiny_config(tiny, root / "unused", max_steps=4)
    from trmlab.config.loader import config_to_dict

    document = config_to_dict(config)
    for key in ("data_paths", "run_dir"):
        document.pop(key)
    preset = root / "tiny.yaml"
    preset.write_text(yaml.safe_dump(document))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", str(preset), f"data_paths=[{tiny}]", f"run_dir={root / 'run'}",
                     "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    tasks = root / "tasks.json"
    grid = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    task = {"train": [{"input": grid, "output": grid[::-1]}], "test": [{"input": grid[::-1]}]}
    tasks.write_text(json.dumps({"aaaa0001": task, "aaaa0002": task}))
    return World(root, tiny, preset, root / "run", arc_small / "input", arc_small / "output",
                 shared_path("fixtures/official-eval/small/raw_predictions.npz"), official,
                 shared_path("fixtures/official-sudoku-build/small/input"), tasks)


# ----------------------------------------------------------------------------------------------- mutations


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, len(data) // 2)])


def garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 24] = b"}{ ]]:: @@ \x00\x01 garbage !!"[:24]
    path.write_bytes(bytes(data))


def garble_start(path: Path) -> None:
    """Garbage where a binary format keeps its header."""
    data = bytearray(path.read_bytes())
    data[:16] = b"\x13\x37garbage-header"[:16]
    path.write_bytes(bytes(data))


def non_utf8(path: Path) -> None:
    data = path.read_bytes()
    middle = len(data) // 2
    path.write_bytes(data[:middle] + b"\xff\xfe\xc3\x28" + data[middle:])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def write_json(content: object) -> Callable[[Path], None]:
    return lambda path: path.write_text(json.dumps(content))


def write_text(content: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(content)


def write_bytes(content: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(content)


def resign(checkpoint: Path) -> None:
    """Update manifest.json's checksums after a deliberate change (a corruption the hashes cannot see)."""
    manifest_path = checkpoint / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for name, info in manifest["files"].items():
        data = (checkpoint / name).read_bytes()
        info.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


def replace_tensor(file: Path, key: str, make: Callable[[torch.Tensor], torch.Tensor]) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(file))
    tensors[key] = make(tensors[key])
    save_file(tensors, str(file))


class CodeRunningPickle:
    """Unpickling this would run a shell command: a weights-only loader must refuse it."""

    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned > /tmp/trmlab-pwned",))


# ----------------------------------------------------------------------------------------------- cases


@dataclass
class Here:
    """One case's scratch directory and the world it copies from."""

    tmp: Path
    world: World
    absent: list[Path] = field(default_factory=list)
    present: list[Path] = field(default_factory=list)

    def copy(self, source: Path, name: str | None = None) -> Path:
        target = self.tmp / (name or source.name)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)
        return target

    def must_not_exist(self, *paths: Path) -> None:
        self.absent.extend(paths)

    def must_exist(self, *paths: Path) -> None:
        self.present.extend(paths)


@dataclass
class Case:
    """``setup(here) -> argv``; the command must exit ``code`` and its message (or report) say ``says``."""

    name: str
    setup: Callable[[Here], list[str]]
    code: int = 2
    says: str = ""
    needs: str = ""   # "ro" / "full": a mount this case writes to
    logs: bool = False  # the command ran (and logged) before it failed: the error is the last line


CASES: list[Case] = []


def case(name: str, code: int = 2, says: str = "", needs: str = "", logs: bool = False) -> Callable:
    def register(setup: Callable[[Here], list[str]]) -> Callable:
        CASES.append(Case(name, setup, code, says, needs, logs))
        return setup
    return register


# -- score: raw_predictions.npz, test_puzzles.json, identifiers.json ---------------------------------------

def _score(here: Here, *, npz: Callable | None = None, data_file: str | None = None,
           data_change: Callable | None = None) -> list[str]:
    raw = here.copy(here.world.raw)
    data = here.copy(here.world.arc_data, "data")
    if npz:
        npz(raw)
    if data_file:
        data_change(data / data_file)
    out = here.tmp / "new" / "scored"
    here.must_not_exist(here.tmp / "new")
    return ["score", str(data), str(raw), f"out={out}"]


def _npz_with(**changes: np.ndarray) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        with np.load(path) as loaded:
            arrays = {k: loaded[k] for k in loaded.files}
        arrays.update(changes)
        for key in [k for k, v in changes.items() if v is None]:
            arrays.pop(key)
        np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return change


for _name, _mutate in {"truncated": truncate, "garbled": garble_start, "empty": empty,
                       "text": write_text("not an npz\n"),
                       "wrong-typed": _npz_with(preds=np.zeros((3, 3), np.float32)),
                       "missing-array": _npz_with(q_halt_logits=None)}.items():
    case(f"score-npz-{_name}", says="raw_predictions.npz")(lambda here, m=_mutate: _score(here, npz=m))
for _name, _mutate in {"truncated": truncate, "non-utf8": non_utf8, "empty": empty,
                       "wrong-typed": write_json([1, 2, 3])}.items():
    case(f"score-test_puzzles-{_name}", says="test_puzzles.json")(
        lambda here, m=_mutate: _score(here, data_file="test_puzzles.json", data_change=m))
for _name, _mutate in {"garbled": garble, "wrong-typed": write_json({"a": 1})}.items():
    case(f"score-identifiers-{_name}", says="identifiers.json")(
        lambda here, m=_mutate: _score(here, data_file="identifiers.json", data_change=m))


# -- report: metrics.jsonl, config.yaml, an eval directory's metrics.json, out= -----------------------------

def _report(here: Here, file: str, mutate: Callable) -> list[str]:
    run = here.copy(here.world.run)
    mutate(run / file)
    here.must_not_exist(run / "report.html")
    return ["report", str(run)]


for _name, _mutate in {
        "non-utf8": non_utf8,
        "garbled-line": write_text('{"step": 1}\nnot json\n{"step": 2}\n'),
        "wrong-typed-line": write_text('[1, 2]\n{"step": 2}\n'),
        "wrong-typed-step": write_text('{"step": "two", "split": "train", "lr": 1.0}\n{"step": 3}\n'),
}.items():
    case(f"report-metrics.jsonl-{_name}", says="metrics.jsonl")(
        lambda here, m=_mutate: _report(here, "metrics.jsonl", m))
for _name, _mutate in {"garbled": write_text("config: [unclosed\n  : : :\n"), "non-utf8": non_utf8,
                       "wrong-typed": write_text("- a\n- b\n")}.items():
    case(f"report-config.yaml-{_name}", says="config.yaml")(
        lambda here, m=_mutate: _report(here, "config.yaml", m))
for _name, _mutate in {"truncated": truncate, "non-utf8": non_utf8, "empty": empty}.items():
    case(f"report-eval-metrics.json-{_name}", says="metrics.json")(
        lambda here, m=_mutate: _report(here, "eval/step_4/metrics.json", m))


@case("report-out-in-missing-directory", says="does not exist")
def _report_out_missing(here: Here) -> list[str]:
    here.must_not_exist(here.tmp / "nonexistent")
    return ["report", str(here.world.run), f"out={here.tmp / 'nonexistent' / 'x.html'}"]


# -- train on a broken dataset: dataset.json, .npy arrays, identifiers.json --------------------------------

def _train_on(here: Here, file: str, mutate: Callable) -> list[str]:
    data = here.copy(here.world.tiny)
    mutate(data / file)
    run = here.tmp / "runs" / "r"
    here.must_not_exist(here.tmp / "runs")
    return ["train", str(here.world.preset), f"data_paths=[{data}]", f"run_dir={run}", "--no-progress"]


for _name, _mutate in {"truncated": truncate, "non-utf8": non_utf8, "empty": empty,
                       "wrong-typed": write_json([1, 2]),
                       "missing-key": lambda p: p.write_text(json.dumps(
                           {k: v for k, v in json.loads(p.read_text()).items() if k != "seq_len"}))}.items():
    case(f"train-dataset.json-{_name}", says="dataset.json")(
        lambda here, m=_mutate: _train_on(here, "train/dataset.json", m))
for _name, _mutate in {"truncated": truncate, "garbled": garble_start, "empty": empty,
                       "wrong-typed": lambda p: np.save(p, np.load(p).astype(np.float32)),
                       "wrong-shape": lambda p: np.save(p, np.load(p).reshape(-1))}.items():
    case(f"train-inputs.npy-{_name}", says="inputs.npy")(
        lambda here, m=_mutate: _train_on(here, "train/all__inputs.npy", m))
case("train-labels.npy-truncated", says="labels.npy")(
    lambda here: _train_on(here, "train/all__labels.npy", truncate))
case("train-puzzle_indices.npy-wrong-typed", says="puzzle_indices")(
    lambda here: _train_on(here, "train/all__puzzle_indices.npy",
                           lambda p: np.save(p, np.load(p).astype(np.float64) + 0.5)))


# -- data inspect ------------------------------------------------------------------------------------------

def _inspect_data(here: Here, file: str, mutate: Callable) -> list[str]:
    data = here.copy(here.world.tiny)
    mutate(data / file)
    return ["data", "inspect", str(data)]


case("data-inspect-dataset.json-garbled", says="dataset.json")(
    lambda here: _inspect_data(here, "train/dataset.json", garble))
case("data-inspect-labels.npy-truncated", says="labels")(
    lambda here: _inspect_data(here, "test/all__labels.npy", truncate))
case("data-inspect-group_indices.npy-wrong-typed", says="group_indices")(
    lambda here: _inspect_data(here, "train/all__group_indices.npy",
                               lambda p: np.save(p, np.array(["a", "b"]))))


# -- data build-arc: challenges and solutions JSON ----------------------------------------------------------

def _build_arc(here: Here, file: str, mutate: Callable) -> list[str]:
    inputs = here.copy(here.world.arc_input, "input")
    mutate(inputs / file)
    out = here.tmp / "made" / "for" / "this"
    here.must_not_exist(here.tmp / "made")
    return ["data", "build-arc", "--input-file-prefix", str(inputs / "mini"), "--output-dir", str(out),
            "--subsets", "training", "evaluation", "--test-set-name", "evaluation", "--num-aug", "2",
            "--quiet"]


for _name, _mutate in {"truncated": truncate, "garbled": garble, "non-utf8": non_utf8, "empty": empty,
                       "wrong-typed": write_json(["not", "a", "mapping"])}.items():
    case(f"build-arc-challenges-{_name}", says="mini_training_challenges.json")(
        lambda here, m=_mutate: _build_arc(here, "mini_training_challenges.json", m))
case("build-arc-solutions-wrong-typed", says="mini_evaluation_solutions.json")(
    lambda here: _build_arc(here, "mini_evaluation_solutions.json", write_json({"x": "y"})))


# -- data build-sudoku: CSV --------------------------------------------------------------------------------

def _build_sudoku(here: Here, mutate: Callable) -> list[str]:
    inputs = here.copy(here.world.sudoku, "csv")
    mutate(inputs / "train.csv")
    out = here.tmp / "made" / "sudoku"
    here.must_not_exist(here.tmp / "made")
    return ["data", "build-sudoku", "--input-dir", str(inputs), "--output-dir", str(out), "--seed", "1",
            "--quiet"]


def _csv_row(change: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    def mutate(path: Path) -> None:
        lines = path.read_text().splitlines()
        fields = lines[1].split(",")
        lines[1] = ",".join(change(fields))
        path.write_text("\n".join(lines) + "\n")
    return mutate


for _name, _mutate in {"garbled-row": _csv_row(lambda f: f[:1]), "non-utf8": non_utf8, "empty": empty,
                       "wrong-typed": _csv_row(lambda f: [f[0], "x" * len(f[1]), *f[2:]])}.items():
    case(f"build-sudoku-csv-{_name}", says="train.csv")(lambda here, m=_mutate: _build_sudoku(here, m))


# -- adapt: the challenges file, and a conflicting architecture ---------------------------------------------

def _adapt(here: Here, mutate: Callable | None = None, *extra: str) -> list[str]:
    tasks = here.copy(here.world.tasks)
    if mutate:
        mutate(tasks)
    out = here.tmp / "adapted"
    here.must_not_exist(out)
    return ["adapt", str(here.world.checkpoint), str(tasks), f"out={out}", "steps=1", "canvas=3",
            "device=cpu", *extra]


for _name, _mutate in {"truncated": truncate, "non-utf8": non_utf8, "empty": empty,
                       "wrong-typed": write_json({"aaaa0001": [1, 2]})}.items():
    case(f"adapt-tasks-{_name}", says="tasks.json")(lambda here, m=_mutate: _adapt(here, m))
case("adapt-empty-train-list", says="train")(lambda here: _adapt(here, write_json(
    {"aaaa0001": {"train": [], "test": [{"input": [[1, 2], [3, 4]]}]}})))
case("adapt-conflicting-L_cycles", says="L_cycles")(lambda here: _adapt(here, None, "arch.L_cycles=3"))


# -- eval of a damaged trmlab checkpoint --------------------------------------------------------------------

def _eval(here: Here, mutate: Callable[[Path], None]) -> list[str]:
    checkpoint = here.copy(here.world.checkpoint, "step_4")
    mutate(checkpoint)
    out = here.tmp / "evaluated"
    here.must_not_exist(out)
    return ["eval", str(checkpoint), str(here.world.tiny), f"out={out}", "device=cpu", "--no-progress"]


case("eval-manifest-truncated", says="manifest.json")(lambda here: _eval(here, lambda c: truncate(
    c / "manifest.json")))
case("eval-manifest-non-utf8", says="manifest.json")(lambda here: _eval(here, lambda c: non_utf8(
    c / "manifest.json")))
case("eval-safetensors-truncated-resigned", says=".safetensors")(lambda here: _eval(
    here, lambda c: (truncate(c / "ema.safetensors"), truncate(c / "model.safetensors"), resign(c))))
case("eval-config.yaml-garbled-resigned", says="config.yaml")(lambda here: _eval(
    here, lambda c: (write_text("arch: [\n")(c / "config.yaml"), resign(c))))


# -- checkpoint inspect / convert of a trmlab checkpoint ---------------------------------------------------

def _inspect(here: Here, mutate: Callable[[Path], None]) -> list[str]:
    checkpoint = here.copy(here.world.checkpoint, "step_4")
    mutate(checkpoint)
    return ["checkpoint", "inspect", str(checkpoint)]


for _name, _mutate in {"truncated": truncate, "garbled": garble, "non-utf8": non_utf8, "empty": empty,
                       "wrong-typed": write_json([1, 2])}.items():
    case(f"inspect-manifest-{_name}", says="manifest.json")(
        lambda here, m=_mutate: _inspect(here, lambda c, m=m: m(c / "manifest.json")))


def _wrong_shape(checkpoint: Path, file: str = "model.safetensors") -> None:
    replace_tensor(checkpoint / file, "core.lm_head.weight",
                   lambda t: torch.zeros(t.shape[0] + 1, t.shape[1]))
    resign(checkpoint)


case("inspect-model-wrong-shape-resigned", code=1, says="core.lm_head.weight")(
    lambda here: _inspect(here, _wrong_shape))
case("inspect-ema-wrong-shape-resigned", code=1, says="core.lm_head.weight")(
    lambda here: _inspect(here, lambda c: _wrong_shape(c, "ema.safetensors")))
case("inspect-table-wrong-dtype-resigned", code=1, says="puzzle_embedding.safetensors")(
    lambda here: _inspect(here, lambda c: (replace_tensor(c / "puzzle_embedding.safetensors", "weights",
                                                          lambda t: t.to(torch.int32)), resign(c))))
case("inspect-table-rows-resigned", code=1, says="puzzle identifiers")(
    lambda here: _inspect(here, lambda c: (replace_tensor(c / "puzzle_embedding.safetensors", "weights",
                                                          lambda t: t[:-1].clone()), resign(c))))
case("inspect-model-truncated-resigned", code=1, says="model.safetensors")(
    lambda here: _inspect(here, lambda c: (truncate(c / "model.safetensors"), resign(c))))


@case("convert-wrong-shape-resigned", says="core.lm_head.weight")
def _convert_wrong_shape(here: Here) -> list[str]:
    checkpoint = here.copy(here.world.checkpoint, "step_4")
    _wrong_shape(checkpoint)
    here.must_not_exist(here.tmp / "exported")
    return ["checkpoint", "convert", str(checkpoint), str(here.tmp / "exported"), "to=official"]


# -- official torch pickles and their all_config.yaml -------------------------------------------------------

def _official(here: Here, file: str, mutate: Callable[[Path], None]) -> list[str]:
    folder = here.copy(here.world.official, "official")
    mutate(folder / file)
    return ["checkpoint", "inspect", str(folder / "step_100")]


for _name, _mutate in {"truncated": truncate, "garbled": garble_start, "empty": empty,
                       "wrong-typed": lambda p: torch.save([1, 2, 3], p),
                       "code-running": lambda p: p.write_bytes(pickle.dumps(CodeRunningPickle()))}.items():
    case(f"inspect-official-pickle-{_name}", says="step_100")(
        lambda here, m=_mutate: _official(here, "step_100", m))
for _name, _mutate in {"garbled": write_text("arch: {name: [\n"), "non-utf8": non_utf8,
                       "empty": empty, "wrong-typed": write_text("- 1\n- 2\n")}.items():
    case(f"inspect-official-all_config-{_name}", says="all_config.yaml")(
        lambda here, m=_mutate: _official(here, "all_config.yaml", m))


# -- a YAML preset file --------------------------------------------------------------------------------------

def _preset(here: Here, mutate: Callable[[Path], None]) -> list[str]:
    preset = here.copy(here.world.preset)
    mutate(preset)
    here.must_not_exist(here.tmp / "runs")
    return ["train", str(preset), f"data_paths=[{here.world.tiny}]", f"run_dir={here.tmp / 'runs' / 'r'}"]


for _name, _mutate in {"garbled": write_text("arch: {H_cycles: [\n"), "non-utf8": non_utf8,
                       "wrong-typed": write_text("- lr\n- 1\n"),
                       "wrong-typed-value": lambda p: p.write_text(p.read_text().replace(
                           "lr: 0.001", "lr: [fast]"))}.items():
    case(f"train-preset-yaml-{_name}", says="tiny.yaml")(lambda here, m=_mutate: _preset(here, m))


# -- resume: the run's config.yaml and metrics.jsonl, damaged checkpoints -----------------------------------

def _resume(here: Here, mutate: Callable[[Path], None], *extra: str) -> list[str]:
    run = here.copy(here.world.run)
    mutate(run)
    return ["train", f"resume={run}", "--no-progress", *extra]


for _name, _mutate in {"garbled": write_text("config: {arch: [\n"), "non-utf8": non_utf8, "empty": empty,
                       "wrong-typed": write_text("- 1\n")}.items():
    case(f"resume-config.yaml-{_name}", says="config.yaml")(
        lambda here, m=_mutate: _resume(here, lambda r, m=m: m(r / "config.yaml")))


def _all_checkpoints(change: Callable[[Path], None]) -> Callable[[Path], None]:
    def mutate(run: Path) -> None:
        for checkpoint in (run / "checkpoints").iterdir():
            change(checkpoint)
    return mutate


case("resume-wrong-shape-resigned", says="core.lm_head.weight")(
    lambda here: _resume(here, _all_checkpoints(_wrong_shape)))
case("resume-train_state-code-running-resigned", says="no complete checkpoint", logs=True)(
    lambda here: _resume(here, _all_checkpoints(lambda c: (
        write_bytes(pickle.dumps(CodeRunningPickle()))(c / "train_state.pt"), resign(c)))))


# -- train --dry-run checks what the run checks ------------------------------------------------------------

def _dry(here: Here, *words: str) -> list[str]:
    here.must_not_exist(here.tmp / "runs")
    return ["train", str(here.world.preset), f"data_paths=[{here.world.tiny}]",
            f"run_dir={here.tmp / 'runs' / 'r'}", *words, "--dry-run"]


@case("dry-run-init_from-code-running-pickle", says="step_100")
def _dry_pickle(here: Here) -> list[str]:
    folder = here.copy(here.world.official, "official")
    (folder / "step_100").write_bytes(pickle.dumps(CodeRunningPickle()))
    return _dry(here, f"init_from={folder / 'step_100'}")


case("dry-run-init_from-architecture-conflict", says="L_cycles")(
    lambda here: _dry(here, f"init_from={here.world.checkpoint}", "arch.L_cycles=3"))
case("dry-run-device-cuda-without-cuda", code=3, says="CUDA")(lambda here: _dry(here, "device=cuda"))
case("dry-run-resume-wrong-shape", says="core.lm_head.weight")(
    lambda here: [*_resume(here, _all_checkpoints(_wrong_shape)), "--dry-run"])
case("dry-run-init_from-truncated-safetensors", says="safetensors")(
    lambda here: _dry(here, f"init_from={_damaged_copy(here)}"))


def _damaged_copy(here: Here) -> Path:
    checkpoint = here.copy(here.world.checkpoint, "step_4")
    truncate(checkpoint / "ema.safetensors")
    truncate(checkpoint / "model.safetensors")
    resign(checkpoint)
    return checkpoint


# -- read-only and full output locations -------------------------------------------------------------------

def _build_into(here: Here, target: Path) -> list[str]:
    return ["data", "build-arc", "--input-file-prefix", str(here.world.arc_input / "mini"), "--output-dir",
            str(target), "--subsets", "training", "evaluation", "--test-set-name", "evaluation",
            "--num-aug", "2", "--quiet"]


MOUNT_BASE = Path(tempfile.gettempdir()) / f"trmlab-bad-input-{os.getpid()}"
# ro: a read-only tmpfs; full: a tmpfs with no room left; nearly-full: room for a run's config.yaml and
# metrics.jsonl but not for its first checkpoint (a tiny one is ~270 KB).
MOUNT_ROOM = {"ro": None, "full": 0, "nearly-full": 16 * 1024}


def _outputs(kind: str) -> None:
    directory = MOUNT_BASE / kind

    def gone(here: Here, path: Path) -> Path:
        here.must_not_exist(path)
        return path

    case(f"{kind}-build-arc", code=3, needs=kind)(
        lambda here: _build_into(here, gone(here, directory / "data")))
    case(f"{kind}-score", code=3, needs=kind)(lambda here: [
        "score", str(here.world.arc_data), str(here.world.raw), f"out={gone(here, directory / 'scored')}"])
    case(f"{kind}-report", code=3, needs=kind)(lambda here: [
        "report", str(here.world.run), f"out={gone(here, directory / 'report.html')}"])
    case(f"{kind}-convert", code=3, needs=kind)(lambda here: [
        "checkpoint", "convert", str(here.world.checkpoint), str(gone(here, directory / "exported")),
        "to=official"])
    case(f"{kind}-train", code=3, needs=kind)(lambda here: [
        "train", str(here.world.preset), f"data_paths=[{here.world.tiny}]",
        f"run_dir={gone(here, directory / 'run')}", "--no-progress"])


_outputs("ro")
_outputs("full")


@case("nearly-full-train-at-the-first-checkpoint", code=3, says="resume", needs="nearly-full", logs=True)
def _train_until_the_disk_fills(here: Here) -> list[str]:
    run = MOUNT_BASE / "nearly-full" / "run"
    here.must_exist(run / "config.yaml")  # kept, with no partial checkpoint: resume=RUN starts it over
    return ["train", str(here.world.preset), f"data_paths=[{here.world.tiny}]", f"run_dir={run}",
            "--no-progress"]


# -- demo: validate first, keep earlier runs, old flags ----------------------------------------------------

@case("demo-invalid-override-keeps-the-previous-run", says="lr")
def _demo_invalid(here: Here) -> list[str]:
    from trmlab.training.demo import DEMO_BUILD, MARKER

    previous = here.tmp / "runs" / "demo"
    previous.mkdir(parents=True)
    (previous / "config.yaml").write_text("config: {}\n")
    data = here.tmp / "runs" / "data" / "demo-arc1"
    data.mkdir(parents=True)
    (data / MARKER).write_text(json.dumps(DEMO_BUILD))
    here.must_exist(previous / "config.yaml")
    here.must_not_exist(here.tmp / "runs" / "demo-2")
    return ["demo", "lr=oops"]


case("demo-old-out-flag", says="out=")(lambda here: ["demo", "--out", str(here.tmp / "d")])


# ----------------------------------------------------------------------------------------------- the runner


@pytest.fixture(scope="module")
def mounts() -> dict[str, Path]:
    """The tmpfs mounts of MOUNT_ROOM that could be made (none where mounting is not permitted)."""
    made: dict[str, Path] = {}
    for kind, room in MOUNT_ROOM.items():
        target = MOUNT_BASE / kind
        target.mkdir(parents=True, exist_ok=True)
        options = "size=64k" + (",ro" if room is None else "")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                                capture_output=True, text=True, check=False)
        if result.returncode == 0:
            made[kind] = target
            if room is not None:
                _fill(target, room)
    yield made
    for target in made.values():
        subprocess.run(["umount", str(target)], capture_output=True, check=False)
    shutil.rmtree(MOUNT_BASE, ignore_errors=True)


def _fill(target: Path, room: int) -> None:
    """Fill the file system of ``target`` until only ``room`` bytes are free."""
    with open(target / "filler", "wb") as handle:
        try:
            while shutil.disk_usage(target).free > room:
                handle.write(b"\0" * 4096)
                handle.flush()
        except OSError:
            pass


def _empty_mounts(mounts: dict[str, Path]) -> None:
    for target in mounts.values():
        for child in target.iterdir():
            if child.name != "filler":
                shutil.rmtree(child) if child.is_dir() else child.unlink()


def _leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if PARTIAL.search(p.name)]


@pytest.mark.parametrize("bad", CASES, ids=[c.name for c in CASES])
def test_bad_input(bad: Case, world: World, mounts: dict[str, Path], tmp_path: Path,
                   capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    if bad.needs and bad.needs not in mounts:
        pytest.skip(f"cannot mount a tmpfs here (not root, or mount not permitted): the {bad.needs} output "
                    f"cases need one")
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    here = Here(tmp_path, world)
    try:
        argv = bad.setup(here)
        capsys.readouterr()
        code = main(argv)
        out, err = capsys.readouterr()
        mounted = {kind: _leftovers(target) for kind, target in mounts.items()}
        for path in here.absent + here.present:  # checked before the mounts are emptied
            assert path.exists() == (path in here.present), f"{path} {'is gone' if path.exists() else 'left'}"
    finally:
        torch.set_num_threads(threads)
        _empty_mounts(mounts)
    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if line.strip()]
    if bad.code == 1:  # checkpoint inspect's negative answer: the report on stdout, nothing on stderr
        assert code == 1, f"exit {code}, stderr: {err}"
        assert bad.says in out, out
        assert not lines, err
    else:
        assert code == bad.code, f"exit {code} (expected {bad.code}); stderr:\n{err}"
        if bad.logs:  # what ran is logged; the error is still one line, the last
            lines = [line for line in lines if line.startswith("trmlab: error:")] + lines[-1:]
        assert len(lines) == 1 or (bad.logs and len(set(lines)) == 1), f"expected one error line:\n{err}"
        assert lines[0].startswith("trmlab: error: "), lines[0]
        assert bad.says in lines[0], lines[0]
    assert not _leftovers(tmp_path), _leftovers(tmp_path)
    assert not any(mounted.values()), mounted
    assert not _leftovers(world.root), _leftovers(world.root)
    assert not Path("/tmp/trmlab-pwned").exists(), "a pickle's code ran"


# ----------------------------------------------------------------------------------------------- signals


def _start(argv: list[str], cwd: Path) -> subprocess.Popen:
    # The PYTHONPATH given (a worktree's src/ first) is passed through; without one, this checkout's src/.
    source = os.environ.get("PYTHONPATH") or str(Path(__file__).parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": source, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "trmlab", *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"finished before the signal: {process.communicate()}"
        assert time.monotonic() < deadline, "timed out waiting for the moment to signal"
        time.sleep(0.02)


SIGNAL_POINTS = ("build-arc-staging-created", "build-arc-writing-splits", "train-mid-run")


@pytest.mark.parametrize("point", SIGNAL_POINTS)
def test_sigterm(point: str, world: World, tmp_path: Path) -> None:
    """SIGTERM at several points: exit 143, no traceback, nothing partial (training: a checkpoint to
    resume from)."""
    if point.startswith("build-arc"):
        inputs = shutil.copytree(world.arc_input, tmp_path / "input")
        # Enough augmentations that the build is still running when the signal comes: with 300 an idle
        # machine finished the whole build (0.2 s) between seeing the staging folder and the signal.
        argv = ["data", "build-arc", "--input-file-prefix", str(inputs / "mini"), "--output-dir",
                str(tmp_path / "new" / "arc"), "--num-aug", "2000"]
        process = _start(argv, tmp_path)
        staging = lambda: list((tmp_path / "new").glob(".arc.partial-*"))  # noqa: E731
        if point == "build-arc-staging-created":
            _wait_for(lambda: bool(staging()), process)
        else:
            _wait_for(lambda: any((s / "train").exists() for s in staging()), process)
    else:
        argv = ["train", str(world.preset), f"data_paths=[{world.tiny}]", f"run_dir={tmp_path / 'run'}",
                "max_steps=100000", "epochs=100000", "checkpoint_every=1000", "--no-progress"]
        process = _start(argv, tmp_path)
        _wait_for(lambda: (tmp_path / "run" / "metrics.jsonl").exists(), process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in out + err, err
    assert not _leftovers(tmp_path), _leftovers(tmp_path)
    if point.startswith("build-arc"):
        assert err.strip().splitlines()[-1].startswith("trmlab: error: terminated"), err
        assert not (tmp_path / "new").exists(), "the parent directory the build created was left behind"
    else:
        assert list((tmp_path / "run" / "checkpoints").glob("step_*")), "no checkpoint written on SIGTERM"
        assert "resume" in err


def test_the_harness_is_big_enough() -> None:
    assert len(CASES) + len(SIGNAL_POINTS) >= 80
