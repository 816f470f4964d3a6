"""Test-time compute settings (trmlab.evaluation.test_time): stochastic trajectories, halting with continuous
batching, deeper recursion, the puzzle checks and the evaluation hooks. Tiny shapes, fp32 on CPU.

Run: PYTHONPATH=src .venv/bin/python -m pytest -q tests/test_test_time.py
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from test_data_build_puzzles import sudoku_input
from test_etrm import make_batch, tiny_arch
from test_eval_grid import SOLVED_6
from trmlab.config.schema import ArchConfig
from trmlab.data.build_sudoku import SudokuBuildOptions, build_sudoku
from trmlab.data.generate_maze import make_maze
from trmlab.errors import ConfigError, TrmlabError
from trmlab.evaluation.cli import EVAL_SETTINGS, make_test_time_settings
from trmlab.evaluation.runner import EvalSettings, evaluate
from trmlab.evaluation.test_time import (
    TestTimeSettings,
    Trajectories,
    maze_valid,
    run_trajectories,
    select,
    sudoku_valid,
)
from trmlab.grammar import parse_words
from trmlab.models import build_model
from trmlab.models.act import answer_step

SEQ = 36
ROWS = 7


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matmuls: a second intra-op thread only spins on a loaded machine (30x the CPU time measured);
    conftest restores the thread count afterwards."""
    torch.set_num_threads(1)


def trm_arch(**overrides) -> ArchConfig:
    base = dict(name="trm", H_cycles=2, L_cycles=2, L_layers=1, hidden_size=32, num_heads=4, expansion=2.0,
                puzzle_emb_ndim=32, puzzle_emb_len=1, halt_max_steps=3, halt_exploration_prob=0.0,
                forward_dtype="float32")
    base.update(overrides)
    return ArchConfig(**base)


def model_and_batch(variant: str, **overrides):
    """A tiny model whose q_halt varies around 0 from row to row (so q-halting stops rows at different
    steps) and a batch of ROWS rows (with demos for the encoder variants)."""
    torch.manual_seed(0)
    if variant == "trm":
        model = build_model(trm_arch(**overrides), seq_len=SEQ, vocab_size=12, num_puzzle_identifiers=1)
        gen = torch.Generator().manual_seed(1)
        batch = {"inputs": torch.randint(1, 12, (ROWS, SEQ), generator=gen, dtype=torch.int32),
                 "puzzle_identifiers": torch.zeros(ROWS, dtype=torch.int32)}
    else:
        from test_encoders import SEQ as ENCODER_SEQ

        assert ENCODER_SEQ == SEQ
        model = build_model(tiny_arch(variant, **overrides), seq_len=SEQ, vocab_size=12,
                            num_puzzle_identifiers=1)
        batch = make_batch(counts=(2, 3, 1, 2, 1, 3, 2), seed=3)
        batch.pop("labels")
    with torch.no_grad():  # rows halt at steps 1, 2 and 4 (q_halt crosses 0 at different steps)
        model.core.q_head.weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(0))
        model.core.q_head.bias.fill_(-0.5)
    return model, batch


def fetcher(batch):
    return lambda rows: {k: v[torch.as_tensor(rows, dtype=torch.long)] for k, v in batch.items()}


def chunked_rollouts(model, batch, size: int):
    """The default evaluation path: fixed batches of ``size`` rows, each answered at answer_step."""
    finals = []
    for start in range(0, ROWS, size):
        part = {k: v[start:start + size] for k, v in batch.items()}
        inputs, ids = part.pop("inputs"), part.pop("puzzle_identifiers")
        finals.append(answer_step(model.rollout(inputs, ids, **part)))
    return (torch.cat([f["preds"] for f in finals]).numpy(),
            torch.cat([f["q_halt_logits"] for f in finals]).numpy(),
            torch.cat([f["steps"] if "steps" in f else torch.zeros(0) for f in finals]))


VARIANTS = ["trm", "etrm", "etrmtrm"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_clean_trajectory_is_the_default_path_exactly(variant):
    model, batch = model_and_batch(variant)
    preds, q, _ = chunked_rollouts(model, batch, 3)
    runs = run_trajectories(model, fetcher(batch), ROWS, TestTimeSettings(), 3)
    assert np.array_equal(runs.preds[:, 0], preds.astype(np.uint8))
    assert np.array_equal(runs.q_halt_logits[:, 0], q)  # bit for bit
    assert (runs.steps == 3).all() and runs.act_steps == ROWS * 3


@pytest.mark.parametrize("variant", ["trm", "etrm"])
def test_seeded_samples_reproduce_bit_for_bit_and_the_first_stays_clean(variant):
    model, batch = model_and_batch(variant)
    noisy = TestTimeSettings(samples=3, noise=0.5, seed=4)
    first = run_trajectories(model, fetcher(batch), ROWS, noisy, 4)
    again = run_trajectories(model, fetcher(batch), ROWS, noisy, 4)
    assert np.array_equal(first.preds, again.preds)
    assert np.array_equal(first.q_halt_logits, again.q_halt_logits)
    clean = run_trajectories(model, fetcher(batch), ROWS, TestTimeSettings(), 4)
    # Trajectory 0 has no noise (its batch mates differ, which moves the encoder variants' last bits).
    np.testing.assert_allclose(first.q_halt_logits[:, 0], clean.q_halt_logits[:, 0], rtol=1e-5, atol=1e-4)
    assert not np.array_equal(first.q_halt_logits[:, 1], first.q_halt_logits[:, 0])  # noise does something
    assert not np.array_equal(first.q_halt_logits[:, 1], first.q_halt_logits[:, 2])  # per-trajectory seeds
    other = run_trajectories(model, fetcher(batch), ROWS, dataclasses.replace(noisy, seed=5), 4)
    assert not np.array_equal(first.q_halt_logits[:, 1:], other.q_halt_logits[:, 1:])
    assert model.core.z_L_noise is None  # the hook is removed afterwards


def test_noise_is_added_after_every_L_update(monkeypatch):
    from trmlab.evaluation import test_time

    model, batch = model_and_batch("trm")
    events = []
    level = model.core.reasoning_level
    noise_call = test_time._SlotNoise.__call__

    def recording_level(h, injection, rotary):
        events.append("level")
        return level(h, injection, rotary)

    def recording_noise(self, z_L):
        events.append("noise")
        return noise_call(self, z_L)

    model.core.reasoning_level = recording_level
    monkeypatch.setattr(test_time._SlotNoise, "__call__", recording_noise)
    run_trajectories(model, fetcher(batch), 1, TestTimeSettings(samples=2, noise=0.1), 2)
    cycle = ["level", "noise", "level", "noise", "level"]  # L_cycles=2 z_L updates, each noised; then z_H
    assert events == cycle * (2 * 3)  # H_cycles=2 per ACT step, 3 ACT steps


@pytest.mark.parametrize("variant", VARIANTS)
def test_q_halting_answers_each_row_at_its_first_halting_step_while_the_batch_refills(variant):
    model, batch = model_and_batch(variant, halt_max_steps=4)
    model.arch = dataclasses.replace(model.arch, eval_q_halting=True)  # the existing rule, in one rollout
    inputs = {k: v for k, v in batch.items() if k not in ("inputs", "puzzle_identifiers")}
    steps = model.rollout(batch["inputs"], batch["puzzle_identifiers"], **inputs)
    expected = answer_step(steps)
    halted = torch.stack([s["halted"] for s in steps]).int().argmax(0) + 1
    model.arch = dataclasses.replace(model.arch, eval_q_halting=False)
    sizes = []
    forward = model.forward

    def recording(carry, data):
        sizes.append(int(data["inputs"].shape[0]))
        return forward(carry, data)

    model.forward = recording
    runs = run_trajectories(model, fetcher(batch), ROWS, TestTimeSettings(halt="q"), 3)
    assert len(set(runs.steps[:, 0].tolist())) > 1, "the test needs rows that halt at different steps"
    assert np.array_equal(runs.steps[:, 0], halted.numpy())
    assert np.array_equal(runs.preds[:, 0], expected["preds"].numpy().astype(np.uint8))
    # Other batch mates than in one rollout: the encoder variants' logits move in the last bits.
    np.testing.assert_allclose(runs.q_halt_logits[:, 0], expected["q_halt_logits"].numpy(), rtol=1e-5,
                               atol=1e-4)
    # Continuous batching: every slot-step the device ran was a live row's step (none idle, no padding).
    assert sum(sizes) == runs.act_steps and max(sizes) == 3


def test_halt_threshold_trades_steps_for_confidence():
    model, batch = model_and_batch("trm", halt_max_steps=4)
    eager = run_trajectories(model, fetcher(batch), ROWS, TestTimeSettings(halt="q", halt_threshold=-50.0), 3)
    never = run_trajectories(model, fetcher(batch), ROWS, TestTimeSettings(halt="q", halt_threshold=50.0), 3)
    assert (eager.steps == 1).all() and (never.steps == 4).all()


@pytest.mark.parametrize("variant", ["trm", "etrm"])
def test_more_steps_continue_the_carry(variant):
    model, batch = model_and_batch(variant)
    runs = run_trajectories(model, fetcher(batch), ROWS, TestTimeSettings(steps=7), 4)
    extra = {k: v for k, v in batch.items() if k not in ("inputs", "puzzle_identifiers")}
    restarted = model.rollout(batch["inputs"], batch["puzzle_identifiers"], steps=7, **extra)[-1]
    model.arch = dataclasses.replace(model.arch, halt_max_steps=7)  # a 7-step model: no reset at step 3
    rollout = model.rollout(batch["inputs"], batch["puzzle_identifiers"], steps=7, **extra)[-1]
    assert (runs.steps == 7).all()
    np.testing.assert_allclose(runs.q_halt_logits[:, 0], rollout["q_halt_logits"].numpy(), rtol=1e-5,
                               atol=1e-5)
    assert np.array_equal(runs.preds[:, 0], rollout["preds"].numpy().astype(np.uint8))
    assert not np.allclose(runs.q_halt_logits[:, 0], restarted["q_halt_logits"].numpy())  # no reset at 3


# -- the puzzle checks and selection ---------------------------------------------------------------------
def test_sudoku_check_needs_no_solution():
    givens = np.where(np.arange(36) % 3 == 0, SOLVED_6, 1)
    swapped = SOLVED_6.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # two digits of a row exchanged: the columns break
    broken_given = SOLVED_6.copy()
    relabelled = np.where(SOLVED_6 == 2, 3, np.where(SOLVED_6 == 3, 2, SOLVED_6))  # valid, drops givens
    ok = sudoku_valid(np.stack([givens] * 3 + [np.full(36, 1)]),
                      np.stack([SOLVED_6, swapped, relabelled, broken_given]))
    assert ok.tolist() == [True, False, False, True]


def maze_tokens(grid: np.ndarray) -> np.ndarray:
    return np.array([1 + "# SGo".index(c) for c in grid.reshape(-1)], dtype=np.uint8)


def test_maze_check_wants_a_shortest_simple_path():
    rng = np.random.default_rng(0)
    drawn = None
    while drawn is None:
        drawn = make_maze(9, 6, 0.0, rng)
    question, answer, _ = drawn
    q, a = maze_tokens(question), maze_tokens(answer)
    no_path = q.copy()
    path_cells = np.flatnonzero(a == 5)
    gap = a.copy()
    gap[path_cells[len(path_cells) // 2]] = 2  # a hole in the path
    detour = a.copy()
    open_cells = np.flatnonzero(q == 2)
    detour[open_cells[0] if open_cells[0] not in path_cells else open_cells[-1]] = 5  # a stray path cell
    through_wall = a.copy()
    through_wall[np.flatnonzero(q == 1)[0]] = 5
    ok = maze_valid(np.stack([q] * 5), np.stack([a, no_path, gap, detour, through_wall]))
    assert ok.tolist() == [True, False, False, False, False]


def test_select_rules():
    preds = np.array([[[1, 1], [2, 2], [2, 2]], [[3, 3], [4, 4], [5, 5]]], dtype=np.uint8)
    q = np.array([[0.0, 1.0, -1.0], [2.0, 2.0, 1.0]], dtype=np.float32)
    runs = Trajectories(preds, q, q, np.ones_like(q, dtype=np.int32), 0.0)
    assert select(runs, "q", np.zeros((2, 2)), "grid").tolist() == [1, 0]  # ties: the clean trajectory
    assert select(runs, "vote", np.zeros((2, 2)), "grid").tolist() == [1, 0]
    with pytest.raises(ConfigError, match="select=valid needs a Sudoku or Maze"):
        select(runs, "valid", np.zeros((2, 2)), "grid")


def test_valid_selection_prefers_a_checked_grid_over_a_confident_one():
    givens = np.where(np.arange(36) % 3 == 0, SOLVED_6, 1)
    wrong = SOLVED_6.copy()
    wrong[[0, 1]] = wrong[[1, 0]]
    preds = np.stack([np.stack([wrong, SOLVED_6, wrong])]).astype(np.uint8)
    q = np.array([[5.0, -3.0, 4.0]], dtype=np.float32)
    runs = Trajectories(preds, q, q, np.ones_like(q, dtype=np.int32), 0.0)
    assert select(runs, "valid", givens[None], "sudoku").tolist() == [1]
    assert select(runs, "q", givens[None], "sudoku").tolist() == [0]


# -- settings and the evaluation hooks ------------------------------------------------------------------
@pytest.mark.parametrize("words, message", [
    (["noise=0.1"], "noise needs samples"), (["samples=0"], "at least 1"), (["select=best"], "select=best"),
    (["halt=always"], "halt=always"), (["halt_threshold=1"], "pass halt=q"), (["seed=-1"], "seed="),
    (["noise=-1", "samples=2"], "noise=-1"), (["halt=none"], "halt=none"),
])
def test_bad_settings_are_named(words, message):
    with pytest.raises(TrmlabError, match=message):  # ConfigError or the grammar's UsageError: exit 2
        make_test_time_settings(parse_words(words, EVAL_SETTINGS, "trmlab eval")[0])


def test_settings_parse_and_the_default_stays_official():
    words = ["samples=4", "noise=0.2", "select=valid", "halt=q", "halt_threshold=1.5", "steps=8", "seed=0"]
    settings = make_test_time_settings(parse_words(words, EVAL_SETTINGS, "trmlab eval")[0])
    assert settings == TestTimeSettings(4, 0.2, "valid", "q", 1.5, 8, 0)
    assert make_test_time_settings({}) is None
    assert TestTimeSettings(samples=1, noise=0.0).is_default and not settings.is_default


@pytest.fixture
def sudoku_dir(tmp_path):
    folder = sudoku_input(tmp_path, 6, train=3, test=9, seed=2)
    out = tmp_path / "sudoku"
    build_sudoku(SudokuBuildOptions(input_dir=str(folder), output_dir=str(out), seed=0, num_aug=0),
                 log=lambda *a, **k: None)
    return out


def test_grid_evaluation_reports_test_time_metrics_beside_the_official_ones(sudoku_dir, tmp_path):
    torch.manual_seed(0)
    model = build_model(trm_arch(), seq_len=36, vocab_size=8, num_puzzle_identifiers=1)
    default = evaluate(model, sudoku_dir, settings=EvalSettings(global_batch_size=4))
    tt = TestTimeSettings(samples=3, noise=0.0, select="vote")
    result = evaluate(model, sudoku_dir, settings=EvalSettings(global_batch_size=4, test_time=tt),
                      out_dir=tmp_path / "eval")
    assert result.metrics["Sudoku/exact_accuracy"] == default.metrics["Sudoku/exact_accuracy"]
    assert result.metrics["Sudoku/token_accuracy"] == default.metrics["Sudoku/token_accuracy"]
    assert result.metrics["Sudoku/test_time/token_accuracy"] == default.metrics["Sudoku/token_accuracy"]
    assert np.array_equal(result.raw.preds, default.raw.preds)  # three clean copies vote for the default
    assert result.counts["act_steps"] == 9 * 3 * 3 and result.counts["relative_compute"] == 3.0
    stored = np.load(tmp_path / "eval" / "trajectories.npz")
    assert stored["preds"].shape == (9, 3, 36)
    shifted = evaluate(model, sudoku_dir, settings=EvalSettings(global_batch_size=4,
                                                                test_time=TestTimeSettings(steps=5)))
    assert "Sudoku/exact_accuracy" not in shifted.metrics  # not the official protocol: not reported as it


def test_arc_trajectories_vote_with_the_augmentations(official_arc_build_small, tmp_path):
    import json

    from trmlab.data.dataset import ArcDataset

    data = official_arc_build_small / "output"
    dataset = ArcDataset([data], "test")
    torch.manual_seed(0)
    model = build_model(trm_arch(), seq_len=dataset.seq_len, vocab_size=dataset.vocab_size,
                        num_puzzle_identifiers=dataset.num_puzzle_identifiers)
    base = dict(global_batch_size=8, max_tasks=1, num_augmentations=2)
    default = evaluate(model, data, settings=EvalSettings(**base))
    doubled = evaluate(model, data, settings=EvalSettings(**base, test_time=TestTimeSettings(samples=2)),
                       out_dir=tmp_path / "eval")  # the eval directory is written (compute counts in JSON)
    assert doubled.result.counts["votes"] == 2 * default.result.counts["votes"]
    assert doubled.metrics == default.metrics  # two clean copies: the same vote, twice
    assert np.array_equal(doubled.raw.preds[::2], default.raw.preds)
    assert np.array_equal(doubled.raw.inputs[1::2], default.raw.inputs)  # each row's trajectories together
    votes = [[(c.hash, c.votes) for c in pair.candidates] for pair in default.result.pairs]
    assert [[(c.hash, c.votes // 2) for c in pair.candidates] for pair in doubled.result.pairs] == votes
    assert doubled.result.counts["relative_compute"] == 2.0
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())["counts"]
    assert written["act_steps"] == written["official_act_steps"] * 2


def test_report_draws_accuracy_against_compute_for_a_settings_directory(tmp_path):
    import json

    from trmlab.cli import main

    evaluations = {"official": {"Sudoku/exact_accuracy": 0.9, "counts": {"rows": 10}},
                   "halt-q": {"Sudoku/test_time/exact_accuracy": 0.875, "Sudoku/exact_accuracy": 0.1,
                              "test_time": {"halt": "q"}, "counts": {"relative_compute": 0.4}}}
    for name, metrics in evaluations.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    assert main(["report", str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "<td>halt-q</td>" in page and "<td>87.50</td><td>0.40×</td>" in page  # the test-time score
    assert "<td>90.00</td><td>1.00×</td>" in page and page.index("halt-q") < page.index("<td>official")


def test_sudoku_check_rejects_a_latin_square_whose_boxes_repeat_digits():
    # rows and columns are permutations, the 2×2 boxes are not
    latin = np.array([[1, 2, 3, 4], [2, 3, 4, 1], [3, 4, 1, 2], [4, 1, 2, 3]])
    sudoku = np.array([[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]])
    blanks = np.full((2, 16), 1)  # builder tokens: blank = 1, digit d = d + 1
    ok = sudoku_valid(blanks, np.stack([latin.reshape(-1) + 1, sudoku.reshape(-1) + 1]))
    assert ok.tolist() == [False, True]
