"""The few-shot benchmark script end to end on a tiny build (2 optimizer steps per model), so it cannot rot.

Run: .venv/bin/python -m pytest -q tests/test_bench_fewshot.py
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["max_steps=2", "arch.hidden_size=16", "arch.num_heads=2", "global_batch_size=4", "eval_interval=null"]


def load_bench(monkeypatch):
    # Importable by name, so --parallel's spawned workers (which get this sys.path) can unpickle run_model.
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("bench_fewshot")


@pytest.mark.parametrize("parallel", [False, True])
def test_bench_fewshot_runs_both_models_and_writes_results(tmp_path, monkeypatch, parallel):
    bench = load_bench(monkeypatch)
    out = tmp_path / "fs"
    argv = ["--out", str(out), "--families", "colour_permutation", "translation", "--train-tasks", "3",
            "--eval-tasks", "1", "--num-aug", "1", "--canvas", "6", "--eval-augmentations", "1",
            "--set-trm", *TINY, "arch.puzzle_emb_ndim=16", "--set-etrm", *TINY,
            "--models", "trm", "etrm", *(["etrmtrm", "--set-etrmtrm", *TINY] if not parallel else [])]
    assert bench.main(argv + (["--parallel"] if parallel else [])) == 0
    summary = json.loads((out / "results.json").read_text())
    assert summary["families"] == ["colour_permutation", "translation"] and summary["canvas"] == 6
    assert set(summary["models"]) == {"trm", "etrm"} | (set() if parallel else {"etrmtrm"})
    for result in summary["models"].values():
        assert result["steps"] == 2
        assert result["train_cpu_seconds"] > 0
        for split in ("training", "validation", "held_out"):
            scores = result["scores"][split]
            assert set(scores) == {"colour_permutation", "translation", "average"}
            assert all(0.0 <= value <= 1.0 for value in scores.values())
    # TRM has no embedding for a held-out task; the ETRM entry carries the encoder diagnostics.
    assert "encoder/effective_rank" in summary["models"]["etrm"]["final_diagnostics"]
    report = (out / "results.md").read_text()
    assert "| trm, held-out tasks |" in report and "| etrm, validation tasks |" in report
    # A second run reuses the build (--data) instead of writing a new one.
    again = tmp_path / "again"
    assert bench.main(["--out", str(again), "--data", str(out / "data"), "--models", "etrm",
                       "--eval-augmentations", "1", "--set-etrm", *TINY]) == 0
    assert not (again / "data").exists()
    # The final checkpoint restores to the same scores (nothing trains).
    assert bench.main(["--out", str(again), "--data", str(out / "data"), "--models", "etrm",
                       "--eval-augmentations", "1", "--evaluate-checkpoint", "--set-etrm", *TINY]) == 0
    trained = json.loads((again / "results.json").read_text())["models"]["etrm"]
    restored = json.loads((again / "results-checkpoint-aug1.json").read_text())["models"]["etrm"]
    assert restored["scores"] == trained["scores"] and restored["steps"] == 2


def test_build_flags_with_data_are_an_error(tmp_path, monkeypatch, capsys):
    bench = load_bench(monkeypatch)
    with pytest.raises(SystemExit) as info:
        bench.main(["--out", str(tmp_path / "x"), "--data", str(tmp_path / "d"), "--num-aug", "3"])
    assert info.value.code == 2
    assert "--data reuses an existing build; --num-aug describe a new one" in capsys.readouterr().err
