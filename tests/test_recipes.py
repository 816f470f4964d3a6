"""Sudoku / Maze recipes: presets against the official README commands, and generate → build → train → eval →
report end to end with tiny models (exact and token accuracy, symmetry votes reported separately)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trmlab.cli import main
from trmlab.config import load_config

README_FIXTURES = Path(__file__).parent / "fixtures" / "official-readme"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # conftest restores the thread count


@pytest.mark.parametrize("preset,folder", [("trm-sudoku-mlp", "sudoku-mlp"), ("trm-sudoku-att", "sudoku-att"),
                                           ("trm-maze", "maze")])
def test_presets_diff_cleanly_against_the_official_readme_commands(preset, folder, capsys):
    assert main(["config", "diff", preset, str(README_FIXTURES / folder)]) == 0
    out = capsys.readouterr().out
    assert "`evaluators`: []" in out  # the official key trmlab has no use for is listed, not dropped


def test_presets_differ_where_the_readme_commands_differ(capsys):
    assert main(["config", "diff", "trm-sudoku-mlp", str(README_FIXTURES / "sudoku-att")]) == 1
    out = capsys.readouterr().out
    assert "arch.mlp_t" in out and "arch.pos_encodings" in out
    mlp = load_config("trm-sudoku-mlp").config
    assert (mlp.arch.mlp_t, mlp.arch.pos_encodings, mlp.arch.H_cycles, mlp.arch.L_cycles, mlp.lr,
            mlp.puzzle_emb_lr, mlp.weight_decay, mlp.puzzle_emb_weight_decay, mlp.epochs, mlp.eval_interval,
            mlp.ema) == (True, "none", 3, 6, 1e-4, 1e-4, 1.0, 1.0, 50000, 5000, True)
    maze = load_config("trm-maze").config
    assert (maze.arch.mlp_t, maze.arch.L_cycles) == (False, 4)


def build(kind: str, tmp_path: Path) -> Path:
    csv_dir, data = tmp_path / f"{kind}-csv", tmp_path / f"{kind}-data"
    if kind == "sudoku":
        assert main(["data", "generate-sudoku", "--output-dir", str(csv_dir), "--train", "12", "--test", "6",
                     "--seed", "0", "--size", "4", "--difficulty", "easy"]) == 0
        assert main(["data", "build-sudoku", "--input-dir", str(csv_dir), "--output-dir", str(data),
                     "--num-aug", "2", "--seed", "0", "--quiet"]) == 0
    else:
        assert main(["data", "generate-maze", "--output-dir", str(csv_dir), "--train", "12", "--test", "6",
                     "--seed", "0", "--side", "7", "--min-path", "4"]) == 0
        assert main(["data", "build-maze", "--input-dir", str(csv_dir), "--output-dir", str(data),
                     "--seed", "0", "--quiet"]) == 0
    return data


def recomputed(out: Path, data: Path) -> tuple[float, float]:
    """Exact and token accuracy recomputed from raw_predictions.npz and the test labels (all labelled)."""
    with np.load(out / "raw_predictions.npz") as raw:
        preds = raw["preds"]
    labels = np.load(data / "test" / "all__labels.npy")
    assert preds.shape == labels.shape
    return float((preds == labels).all(axis=1).mean()), float((preds == labels).mean())


@pytest.mark.parametrize("kind,task,votes", [("sudoku", "Sudoku", 4), ("maze", "Maze", 8)])
def test_train_eval_report_end_to_end(kind, task, votes, tmp_path, capsys):
    data = build(kind, tmp_path)
    run = tmp_path / "run"
    assert main(["train", "tiny", f"data_paths=[{data}]", f"run_dir={run}", "max_steps=6", "epochs=4",
                 "eval_interval=null", "device=cpu", "arch.halt_max_steps=2", "--no-progress"]) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [line for line in lines if line["split"] == "eval"]
    assert evals and {f"{task}/exact_accuracy", f"{task}/token_accuracy"} <= set(evals[-1])
    in_training = json.loads((run / "eval" / "step_6" / "metrics.json").read_text())
    assert in_training["task"] == kind and in_training["counts"]["rows"] == 6
    assert (in_training[f"{task}/exact_accuracy"], in_training[f"{task}/token_accuracy"]) == pytest.approx(
        recomputed(run / "eval" / "step_6", data))

    out = tmp_path / "eval"
    assert main(["eval", str(run / "checkpoints" / "step_6"), str(data), f"out={out}", "device=cpu",
                 f"votes={votes}"]) == 0
    printed = capsys.readouterr().out
    assert f"{task}/exact_accuracy" in printed and f"{task}/vote@{votes}/exact_accuracy" in printed
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "raw_predictions.npz",
                                                     "voted_predictions.npz"]
    metrics = json.loads((out / "metrics.json").read_text())
    exact, token = recomputed(out, data)
    assert metrics[f"{task}/exact_accuracy"] == pytest.approx(exact)
    assert metrics[f"{task}/token_accuracy"] == pytest.approx(token)
    assert metrics["votes"] == votes and metrics["counts"] == {"rows": 6, "model_rows": 6 * votes}
    with np.load(out / "voted_predictions.npz") as voted:
        labels = np.load(data / "test" / "all__labels.npy")
        assert metrics[f"{task}/vote@{votes}/exact_accuracy"] == pytest.approx(
            float((voted["preds"] == labels).all(axis=1).mean()))
    # Same checkpoint, same rows: the plain numbers do not depend on the vote.
    assert metrics[f"{task}/exact_accuracy"] == in_training[f"{task}/exact_accuracy"]

    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert f"{task}/exact_accuracy" in page and "6 of 6 test puzzles shown" in page
    assert ('table class="sudoku"' in page) == (kind == "sudoku")
    assert ('alt="target"' in page) == (kind == "maze")


def test_eval_refuses_votes_on_arc_and_too_many_maze_votes(tmp_path, capsys):
    data = build("maze", tmp_path)
    run = tmp_path / "run"
    assert main(["train", "tiny", f"data_paths=[{data}]", f"run_dir={run}", "max_steps=2", "epochs=2",
                 "eval_interval=null", "device=cpu", "arch.halt_max_steps=2", "--no-progress"]) == 0
    code = main(["eval", str(run / "checkpoints" / "step_2"), str(data), f"out={tmp_path / 'e'}", "votes=9"])
    assert code == 2 and "8 dihedral transforms" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_mlp_t_model_matches_the_official_code():
    """The Sudoku-MLP variant (sequence-mixing MLP, no positions) loads from an official checkpoint and
    reproduces the official logits and halting logits at every ACT step (tests/fixtures/official-mlp-t)."""
    from trmlab import load_checkpoint

    folder = Path(__file__).parent / "fixtures" / "official-mlp-t"
    vectors = np.load(folder / "vectors.npz")
    model = load_checkpoint(folder / "step_0", seq_len=16, device="cpu")
    assert model.config.config.arch.mlp_t and model.config.config.arch.pos_encodings == "none"
    model.eval()
    inputs, ids = (torch.from_numpy(vectors[k]) for k in ("inputs", "puzzle_identifiers"))
    steps = model.rollout(inputs, ids)
    assert len(steps) == 3
    for s, step in enumerate(steps):
        for key in ("logits", "q_halt_logits"):
            assert (step[key] - torch.from_numpy(vectors[f"eval_{key}_{s}"])).abs().max() < 1e-5
