"""The eval runner: row selection, batching with padding, raw rows in file order, atomic eval directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_eval_support import IDENTITY, build_dataset, simple_task
from trmlab.cli import main
from trmlab.errors import CheckpointError, ConfigError
from trmlab.evaluation.outputs import load_raw_predictions
from trmlab.evaluation.runner import EvalSettings, evaluate
from trmlab.evaluation.scoring import score_raw
from trmlab.evaluation.testset import load_test_set

AUGS = [IDENTITY, (1, "0213456789"), (4, "0987654321")]


class AddOneModel(torch.nn.Module):
    """Predicts colour + 1 (mod 10) on every cell: right on un-augmented puzzles of simple_task tasks only.

    Records the identifiers it was asked to run, and the number of rollouts.
    """

    def __init__(self, num_ids: int) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.puzzle_embedding = torch.nn.Module()
        self.puzzle_embedding.weights = torch.zeros(num_ids, 4)
        self.seen: list[int] = []
        self.calls = 0

    def rollout(self, inputs, puzzle_identifiers, steps=None, **extra):
        self.calls += 1
        self.seen += puzzle_identifiers.tolist()
        colour = (inputs >= 2) & (inputs <= 11)
        preds = torch.where(colour, (inputs - 2 + 1) % 10 + 2, inputs)
        q = puzzle_identifiers.float() * 0.1 - 0.3  # deterministic, distinct per puzzle
        return [{"preds": torch.zeros_like(preds), "q_halt_logits": -q}, {"preds": preds, "q_halt_logits": q}]


@pytest.fixture
def dataset(tmp_path):
    tasks = {f"task{i}": simple_task(i, n_test=1 + i % 2) for i in range(3)}
    return build_dataset(tmp_path / "data", tasks, {t: AUGS for t in tasks}), tasks


def test_evaluate_scores_the_final_step_and_writes_the_eval_dir(dataset, tmp_path):
    root, _ = dataset
    test_set = load_test_set(root)
    model = AddOneModel(test_set.num_puzzle_identifiers)
    out = tmp_path / "eval"
    result = evaluate(model, root, settings=EvalSettings(global_batch_size=5), out_dir=out, info={"step": 7})
    n_rows = test_set.num_rows
    assert n_rows % 5 != 0 and model.calls == -(-n_rows // 5)
    assert model.seen.count(0) == 0  # the last batch is shrunk to the rows left, not padded
    assert sorted(set(model.seen) - {0}) == sorted(set(test_set.puzzle_identifiers.tolist()))
    assert len(result.raw) == n_rows
    # Raw rows come back in dataset file order with the dataset's inputs.
    assert np.array_equal(result.raw.inputs, test_set.inputs())
    assert np.array_equal(result.raw.puzzle_identifiers, test_set.row_identifiers())
    # Only the identity puzzle is solved: one vote for the right answer, distinct wrong grids elsewhere.
    assert result.result.counts == {"tasks": 3, "test_inputs": 4, "test_inputs_with_votes": 4,
                                    "votes": n_rows, "votes_matched": n_rows, "rows": n_rows}
    assert sorted(p.name for p in out.iterdir()) == [
        "metrics.json", "predictions.json", "raw_predictions.npz", "submission.json"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 7 and metrics["dataset"] == str(root.resolve())
    assert {k: metrics[k] for k in result.metrics} == result.metrics
    # Re-scoring the written raw predictions gives the same answer (trmlab score's contract).
    again = score_raw(test_set, load_raw_predictions(out / "raw_predictions.npz"))
    assert again.metrics == result.metrics
    assert again.submission() == result.result.submission()


def test_evaluate_skips_unselected_rows_entirely(dataset):
    root, _ = dataset
    test_set = load_test_set(root)
    model = AddOneModel(test_set.num_puzzle_identifiers)
    settings = EvalSettings(global_batch_size=8, max_tasks=2, num_augmentations=2)
    result = evaluate(model, root, settings=settings)
    allowed = {test_set.identifiers.index(n) for n in ("task0", "task1", "task0|||t1|||0213456789",
                                                       "task1|||t1|||0213456789")}
    assert set(model.seen) - {0} == allowed
    assert result.result.counts["tasks"] == 2 and result.raw.puzzle_identifiers.size == 1 + 1 + 2 + 2
    # The identity puzzle is always right, so the answer is among at most two candidates.
    assert result.metrics["ARC/pass@2"] == 1.0
    assert all(p.label_rank in (1, 2) and len(p.candidates) <= 2 for p in result.result.pairs)


def test_two_evaluations_do_not_share_votes(dataset):
    root, _ = dataset
    test_set = load_test_set(root)
    model = AddOneModel(test_set.num_puzzle_identifiers)
    first = evaluate(model, root, settings=EvalSettings(global_batch_size=16))
    second = evaluate(model, root, settings=EvalSettings(global_batch_size=16))
    assert first.result.counts == second.result.counts
    assert first.metrics == second.metrics


def test_evaluate_refuses_a_table_of_the_wrong_size(dataset):
    root, _ = dataset
    model = AddOneModel(5)
    with pytest.raises(CheckpointError, match="puzzle-embedding table has 5 rows"):
        evaluate(model, root, settings=EvalSettings(global_batch_size=4))
    with pytest.raises(ConfigError, match="config="):
        evaluate(model, root)


def test_evaluate_reads_settings_from_a_config(dataset):
    from trmlab.config.schema import Config

    root, _ = dataset
    test_set = load_test_set(root)
    config = Config()
    config.global_batch_size = 4
    config.eval.max_tasks = 1
    model = AddOneModel(test_set.num_puzzle_identifiers)
    result = evaluate(model, root, config=config)
    assert result.result.counts["tasks"] == 1 and model.calls == 1


def _distributed_worker(rank: int, world: int, root: str, port: int, queue) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=world)
    try:
        test_set = load_test_set(root)
        result = evaluate(AddOneModel(test_set.num_puzzle_identifiers), root,
                          settings=EvalSettings(global_batch_size=8, max_tasks=2))
        queue.put((rank, None if result is None else (result.metrics, result.result.submission(),
                                                      result.raw.preds.tolist())))
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_ranks_give_the_single_process_result(dataset):
    import socket

    import torch.multiprocessing as mp

    root, _ = dataset
    test_set = load_test_set(root)
    single = evaluate(AddOneModel(test_set.num_puzzle_identifiers), root,
                      settings=EvalSettings(global_batch_size=8, max_tasks=2))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    mp.start_processes(_distributed_worker, args=(2, str(root), port, queue), nprocs=2, start_method="spawn")
    results = dict(queue.get() for _ in range(2))
    assert results[1] is None
    metrics, submission, preds = results[0]
    assert metrics == single.metrics
    assert submission == single.result.submission()
    assert preds == single.raw.preds.tolist()
    assert len(single.raw) == 9  # last batch: 1 row left, so rank 1 runs padding only


class EchoModel(torch.nn.Module):
    """Predicts its input; records the extra batch keys it receives (demos in the encoder layout)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.extra: list[dict] = []

    def rollout(self, inputs, puzzle_identifiers, steps=None, **extra):
        self.extra.append(extra)
        return [{"preds": inputs, "q_halt_logits": torch.zeros(len(inputs))}]


def test_encoder_layout_rows_are_queries_and_carry_their_demos(official_arc_build_small, tmp_path):
    from trmlab.data.dataset import ArcDataset

    root = tmp_path / "enc"
    assert main(["data", "build-arc", "--input-file-prefix", str(official_arc_build_small / "input/mini"),
                 "--output-dir", str(root), "--subsets", "training", "evaluation", "concept",
                 "--test-set-name", "evaluation", "--num-aug", "3", "--layout", "encoder", "--quiet"]) == 0
    dataset = ArcDataset([root], "test")
    model = EchoModel()
    result = evaluate(model, dataset, settings=EvalSettings(global_batch_size=8, max_demos=10))
    queries = int(dataset.item_counts().sum())
    assert len(result.raw) == queries == result.result.counts["votes_matched"]
    first = model.extra[0]
    assert first["demo_inputs"].shape == (8, 10, dataset.seq_len) and first["demo_mask"].shape == (8, 10)
    assert first["demo_mask"].sum(dim=1).tolist()[:1] == [min(int(dataset.num_demos[0]), 10)]


class HaltsAtOnceModel(AddOneModel):
    """eval_q_halting: every row halts at the first step (the right answer); the second step holds the output
    of the restarted run (zeros here)."""

    def rollout(self, inputs, puzzle_identifiers, steps=None, **extra):
        answer = super().rollout(inputs, puzzle_identifiers, steps, **extra)[-1]
        halted = torch.ones(inputs.shape[0], dtype=torch.bool)
        restarted = {"preds": torch.zeros_like(answer["preds"]), "q_halt_logits": -answer["q_halt_logits"],
                     "halted": halted}
        return [{**answer, "halted": halted}, restarted]


def test_each_row_is_scored_at_its_first_halting_step(dataset):
    root, _ = dataset
    test_set = load_test_set(root)
    settings = EvalSettings(global_batch_size=5)
    reference = evaluate(AddOneModel(test_set.num_puzzle_identifiers), root, settings=settings)
    halting = evaluate(HaltsAtOnceModel(test_set.num_puzzle_identifiers), root, settings=settings)
    assert reference.metrics["ARC/pass@1"] > 0
    assert halting.metrics == reference.metrics
    assert np.array_equal(halting.raw.preds, reference.raw.preds)
    assert np.array_equal(halting.raw.q_halt_logits, reference.raw.q_halt_logits)
