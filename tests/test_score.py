"""The ARC scorer on hand-made predictions and on the official evaluator's fixture (trm-reference §8)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_eval_support import IDENTITY, augment, build_dataset, encode, prediction_rows, simple_task
from trmlab.cli import main
from trmlab.errors import DataError
from trmlab.evaluation.arc import NO_VOTE_GRID, ArcScorer, sigmoid64
from trmlab.evaluation.grids import crop_grid, grid_hash, inverse_augmentation, parse_identifier
from trmlab.evaluation.outputs import RawPredictions, load_raw_predictions
from trmlab.evaluation.scoring import score_raw
from trmlab.evaluation.testset import load_test_set

AUGS = [IDENTITY, (1, "0213456789"), (4, "0987654321"), (7, "0123456798")]


def _dataset(tmp_path, n_tasks=3, n_test=1):
    tasks = {f"task{i}": simple_task(i, n_test=n_test) for i in range(n_tasks)}
    root = build_dataset(tmp_path / "data", tasks, {t: AUGS for t in tasks})
    return root, tasks


def _score(root, votes, **kwargs):
    return score_raw(load_test_set(root), RawPredictions(*prediction_rows(root, votes)), **kwargs)


def _wrong(grid, delta=1):
    g = np.array(grid)
    g[0, 0] = (g[0, 0] + delta) % 10
    return g.tolist()


# -- grid helpers --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("transform", range(8))
def test_inverse_undoes_every_augmentation(transform):
    grid = np.arange(6, dtype=np.uint8).reshape(2, 3) + 1
    digits = "0371254869"
    name = f"abc|||t{transform}|||{digits}"
    task, t, mapping = parse_identifier(name)
    assert (task, t) == ("abc", transform)
    assert np.array_equal(inverse_augmentation(augment(grid, transform, digits), t, mapping), grid)


def test_crop_follows_the_official_rule():
    side = 5
    assert np.array_equal(crop_grid(encode([[1, 2], [3, 4]], side)), [[1, 2], [3, 4]])
    # Full canvas without EOS keeps everything; a PAD at (0, 0) gives an empty grid.
    full = np.full(side * side, 7, np.uint8)
    assert crop_grid(full).shape == (side, side)
    full[0] = 0
    assert crop_grid(full).shape == (0, 0)
    # Ragged rows: the running width only shrinks; the largest area wins (3x2=6 beats 1x4=4 and 2x3=6 tie ->
    # the first strictly larger area is kept).
    canvas = np.zeros((side, side), np.uint8)
    canvas[0, :4] = 3
    canvas[1, :3] = 3
    canvas[2, :2] = 3
    assert crop_grid(canvas.reshape(-1)).shape == (2, 3)
    with pytest.raises(DataError, match="square"):
        crop_grid(np.zeros(10, np.uint8))


def test_grid_hash_includes_the_shape():
    assert grid_hash(np.zeros((2, 3), np.uint8)) != grid_hash(np.zeros((3, 2), np.uint8))
    assert grid_hash(np.zeros((0, 0), np.uint8)) == grid_hash(np.zeros((0, 0), np.uint8))


def test_bad_identifier_names_are_rejected():
    with pytest.raises(DataError, match="abc"):
        parse_identifier("abc|||t9|||0123456789")
    with pytest.raises(DataError, match="abc"):
        parse_identifier("abc|||t1|||0123")


# -- voting --------------------------------------------------------------------------------------------------
def test_votes_are_counted_after_undoing_each_augmentation(tmp_path):
    root, tasks = _dataset(tmp_path, n_tasks=1)
    right, wrong = tasks["task0"]["test"][0]["output"], _wrong(tasks["task0"]["test"][0]["output"])
    votes = [("task0", 0, AUGS[0], wrong, 5.0), ("task0", 0, AUGS[1], right, 0.0),
             ("task0", 0, AUGS[2], right, 0.0), ("task0", 0, AUGS[3], right, 0.0)]
    result = _score(root, votes)
    [pair] = result.pairs
    assert [(c.votes, c.hash) for c in pair.candidates] == [(3, grid_hash(np.array(right, np.uint8))),
                                                           (1, grid_hash(np.array(wrong, np.uint8)))]
    assert pair.candidates[0].mean_q == pytest.approx(0.5)
    assert pair.label_rank == 1
    assert result.counts["votes"] == 4 and result.counts["votes_matched"] == 4


def test_equal_counts_are_ranked_by_mean_q(tmp_path):
    root, tasks = _dataset(tmp_path, n_tasks=1)
    right, wrong = tasks["task0"]["test"][0]["output"], _wrong(tasks["task0"]["test"][0]["output"])
    # wrong is seen first, with the same count; right has the higher mean sigmoid(q).
    votes = [("task0", 0, AUGS[0], wrong, 0.0), ("task0", 0, AUGS[1], wrong, 0.0),
             ("task0", 0, AUGS[2], right, 1.0), ("task0", 0, AUGS[3], right, -0.5)]
    result = _score(root, votes)
    [pair] = result.pairs
    assert pair.label_rank == 1
    assert pair.candidates[0].mean_q == pytest.approx((sigmoid64(1.0) + sigmoid64(-0.5)) / 2)
    assert result.metrics["ARC/pass@1"] == 1.0


def test_exact_ties_keep_first_seen_order(tmp_path):
    root, tasks = _dataset(tmp_path, n_tasks=1)
    right, wrong = tasks["task0"]["test"][0]["output"], _wrong(tasks["task0"]["test"][0]["output"])
    first_wrong = _score(root, [("task0", 0, AUGS[0], wrong, 0.3), ("task0", 0, AUGS[1], right, 0.3)])
    first_right = _score(root, [("task0", 0, AUGS[1], right, 0.3), ("task0", 0, AUGS[0], wrong, 0.3)])
    assert first_wrong.pairs[0].label_rank == 2 and first_wrong.metrics["ARC/pass@1"] == 0.0
    assert first_right.pairs[0].label_rank == 1 and first_right.metrics["ARC/pass@1"] == 1.0
    assert first_wrong.metrics["ARC/pass@2"] == 1.0


def test_each_pass_at_k(tmp_path):
    root, tasks = _dataset(tmp_path, n_tasks=1)
    right = tasks["task0"]["test"][0]["output"]
    # Four distinct wrong grids with two votes each outrank the right one (one vote): label rank 5.
    votes = []
    for delta in range(1, 5):
        votes += [("task0", 0, aug, _wrong(right, delta), 0.0) for aug in AUGS[:2]]
    votes.append(("task0", 0, AUGS[2], right, 9.0))
    result = _score(root, votes, pass_ks=(1, 2, 4, 5, 10, 100, 1000))
    assert result.pairs[0].label_rank == 5
    assert result.metrics == {"ARC/pass@1": 0.0, "ARC/pass@2": 0.0, "ARC/pass@4": 0.0, "ARC/pass@5": 1.0,
                              "ARC/pass@10": 1.0, "ARC/pass@100": 1.0, "ARC/pass@1000": 1.0}


def test_task_score_is_the_fraction_of_its_test_inputs_and_the_mean_is_over_tasks(tmp_path):
    root, tasks = _dataset(tmp_path, n_tasks=2, n_test=2)
    t0, t1 = tasks["task0"]["test"], tasks["task1"]["test"]
    votes = [("task0", 0, AUGS[0], t0[0]["output"], 0.0), ("task0", 1, AUGS[0], _wrong(t0[1]["output"]), 0.0),
             ("task1", 0, AUGS[1], t1[0]["output"], 0.0), ("task1", 1, AUGS[2], t1[1]["output"], 0.0)]
    result = _score(root, votes)
    assert result.per_task["task0"]["pass@1"] == 0.5 and result.per_task["task1"]["pass@1"] == 1.0
    assert result.metrics["ARC/pass@1"] == 0.75
    assert result.counts["tasks"] == 2 and result.counts["test_inputs"] == 4


def test_subset_denominator_is_the_number_of_selected_tasks(tmp_path):
    root, tasks = _dataset(tmp_path, n_tasks=4)
    votes = [(t, 0, AUGS[0], tasks[t]["test"][0]["output"], 0.0) for t in ("task0", "task3")]
    subset = _score(root, votes, max_tasks=2)
    assert subset.counts["tasks"] == 2
    assert subset.metrics["ARC/pass@1"] == 0.5  # task0 right out of 2 tasks, not out of 4
    assert subset.counts["rows_not_selected"] == 1  # task3's row is outside the subset
    full = _score(root, votes)
    assert full.metrics["ARC/pass@1"] == 0.5 and full.counts["tasks"] == 4


def test_num_augmentations_keeps_the_first_k_puzzles_of_each_task(tmp_path):
    root, tasks = _dataset(tmp_path, n_tasks=1)
    right, wrong = tasks["task0"]["test"][0]["output"], _wrong(tasks["task0"]["test"][0]["output"])
    votes = [("task0", 0, AUGS[0], right, 0.0), ("task0", 0, AUGS[2], wrong, 0.0),
             ("task0", 0, AUGS[3], wrong, 0.0)]
    assert _score(root, votes).metrics["ARC/pass@1"] == 0.0
    only_original = _score(root, votes, num_augmentations=1)
    assert only_original.metrics["ARC/pass@1"] == 1.0 and only_original.counts["votes"] == 1
    assert _score(root, votes, num_augmentations=3).counts["votes"] == 2


def test_blank_rows_are_ignored(tmp_path):
    root, tasks = _dataset(tmp_path, n_tasks=1)
    inputs, ids, preds, qs = prediction_rows(root, [("task0", 0, AUGS[0], tasks["task0"]["test"][0]["output"],
                                                     0.0)])
    pad = np.zeros_like(inputs)
    raw = RawPredictions(np.concatenate([inputs, pad]), np.array([ids[0], 0], np.int32),
                         np.concatenate([preds, pad]), np.array([qs[0], 3.0], np.float32))
    result = score_raw(load_test_set(root), raw)
    assert result.counts["votes"] == 1 and result.counts["rows_blank"] == 1
    assert result.metrics["ARC/pass@1"] == 1.0


def test_submission_has_two_attempts_and_one_entry_per_test_input(tmp_path):
    root, tasks = _dataset(tmp_path, n_tasks=2, n_test=2)
    t0 = tasks["task0"]["test"]
    # task0: test input 0 gets no votes, input 1 gets a single candidate; task1 gets two candidates.
    t1 = tasks["task1"]["test"]
    votes = [("task0", 1, AUGS[1], t0[1]["output"], 0.0),
             ("task1", 0, AUGS[0], t1[0]["output"], 1.0), ("task1", 0, AUGS[1], _wrong(t1[0]["output"]), 0.0)]
    submission = _score(root, votes).submission()
    assert list(submission) == ["task0", "task1"]
    assert [len(v) for v in submission.values()] == [2, 2]
    assert submission["task0"][0] == {"attempt_1": NO_VOTE_GRID, "attempt_2": NO_VOTE_GRID}
    assert submission["task0"][1] == {"attempt_1": t0[1]["output"], "attempt_2": t0[1]["output"]}
    assert submission["task1"][0] == {"attempt_1": t1[0]["output"], "attempt_2": _wrong(t1[0]["output"])}
    assert submission["task1"][1]["attempt_1"] == NO_VOTE_GRID


def test_one_scorer_does_not_carry_votes_between_evaluations(tmp_path):
    root, tasks = _dataset(tmp_path, n_tasks=1)
    test_set = load_test_set(root)
    right, wrong = tasks["task0"]["test"][0]["output"], _wrong(tasks["task0"]["test"][0]["output"])
    scorer = ArcScorer(test_set)
    scorer.add(*_rows_for_scorer(root, [("task0", 0, a, right, 0.0) for a in AUGS]))
    assert scorer.finish().metrics["ARC/pass@1"] == 1.0
    scorer.add(*_rows_for_scorer(root, [("task0", 0, AUGS[0], wrong, 0.0)]))
    second = scorer.finish()
    assert second.metrics["ARC/pass@1"] == 0.0 and second.counts["votes"] == 1
    assert [c.votes for c in second.pairs[0].candidates] == [1]


def _rows_for_scorer(root, votes):
    inputs, ids, preds, qs = prediction_rows(root, votes)
    return inputs, ids, preds, qs


def test_scoring_is_deterministic_and_predictions_are_ranked(tmp_path):
    root, tasks = _dataset(tmp_path, n_tasks=2)
    votes = [(t, 0, a, _wrong(tasks[t]["test"][0]["output"], i % 3), float(i % 2))
             for i, (t, a) in enumerate((t, a) for t in tasks for a in AUGS)]
    first, second = _score(root, votes), _score(root, votes)
    assert json.dumps(first.predictions()) == json.dumps(second.predictions())
    assert json.dumps(first.metrics_json()) == json.dumps(second.metrics_json())
    entry = first.predictions()["task0"][0]
    assert [c["rank"] for c in entry["candidates"]] == list(range(1, entry["num_candidates"] + 1))
    assert sum(c["votes"] for c in entry["candidates"]) == len(AUGS)


def test_predictions_from_another_dataset_are_refused(tmp_path):
    root, tasks = _dataset(tmp_path, n_tasks=1)
    inputs, ids, preds, qs = prediction_rows(root, [("task0", 0, AUGS[0], tasks["task0"]["test"][0]["output"],
                                                     0.0)])
    with pytest.raises(DataError, match=r"identifiers\.json"):
        score_raw(load_test_set(root), RawPredictions(inputs, np.array([999], np.int32), preds, qs))
    with pytest.raises(DataError, match="seq_len"):
        score_raw(load_test_set(root), RawPredictions(inputs[:, :25], ids, preds[:, :25], qs))


# -- the official fixture and the CLI ------------------------------------------------------------------------
def test_score_cli_reproduces_the_official_evaluator(official_eval_small, official_arc_build_small, tmp_path,
                                                       capsys):
    out = tmp_path / "scored"
    code = main(["score", str(official_arc_build_small / "output"),
                 str(official_eval_small / "raw_predictions.npz"), f"out={out}"])
    assert code == 0
    expected_metrics = json.loads((official_eval_small / "expected/metrics.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert {k: metrics[k] for k in expected_metrics} == expected_metrics
    assert sorted(k for k in metrics if k.startswith("ARC/")) == sorted(expected_metrics)
    expected_submission = json.loads((official_eval_small / "expected/submission.json").read_text())
    assert json.loads((out / "submission.json").read_text()) == expected_submission
    # Same formatting too: the file is byte-identical to the official one.
    official = (official_eval_small / "expected/submission.json").read_bytes()
    assert (out / "submission.json").read_bytes() == official
    assert metrics["counts"]["votes"] == 52 and metrics["counts"]["tasks"] == 4
    assert metrics["dataset"] == str((official_arc_build_small / "output").resolve())
    assert "ARC/pass@2 100.00%" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "predictions.json", "submission.json"]


def test_score_cli_refuses_to_overwrite_and_rejects_unknown_settings(
        official_eval_small, official_arc_build_small, tmp_path, capsys):
    data, raw = str(official_arc_build_small / "output"), str(official_eval_small / "raw_predictions.npz")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("x")
    assert main(["score", data, raw, f"out={tmp_path / 'taken'}"]) == 2
    assert main(["score", data, raw, "max_task=3"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "max_task=3" in err
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # nothing half-written


def test_official_fixture_with_max_tasks_and_one_augmentation(official_eval_small, official_arc_build_small):
    test_set = load_test_set(official_arc_build_small / "output")
    raw = load_raw_predictions(official_eval_small / "raw_predictions.npz")
    subset = score_raw(test_set, raw, max_tasks=2)
    assert subset.counts["tasks"] == 2
    assert subset.counts["votes"] == sum(test_set.task_of(int(i)) in test_set.task_ids[:2]
                                         for i in raw.puzzle_identifiers)
    originals = score_raw(test_set, raw, num_augmentations=1)
    assert originals.counts["votes"] == 4  # one original puzzle (one test input) per task


def test_score_cli_warns_when_the_predictions_cover_only_a_subset(
        official_eval_small, official_arc_build_small, tmp_path, capsys):
    data = official_arc_build_small / "output"
    test_set = load_test_set(data)
    raw = load_raw_predictions(official_eval_small / "raw_predictions.npz")
    first_two = raw.select(test_set.row_mask(raw.puzzle_identifiers, test_set.task_ids[:2], None))
    (tmp_path / "subset.npz").write_bytes(first_two.to_bytes())
    assert main(["score", str(data), str(tmp_path / "subset.npz"), f"out={tmp_path / 'all'}"]) == 0
    printed = capsys.readouterr().out
    assert "2 of 4 tasks have no votes" in printed and "pass max_tasks=2" in printed
    assert json.loads((tmp_path / "all/metrics.json").read_text())["counts"]["tasks"] == 4
    subset = ["score", str(data), str(tmp_path / "subset.npz"), f"out={tmp_path / 'sub'}", "max_tasks=2"]
    assert main(subset) == 0
    assert "warning" not in capsys.readouterr().out


def test_votes_for_an_unknown_input_are_counted_and_reported(tmp_path):
    from trmlab.evaluation.scoring import describe

    root, tasks = _dataset(tmp_path, n_tasks=1)
    inputs, ids, preds, qs = prediction_rows(root, [("task0", 0, AUGS[0], tasks["task0"]["test"][0]["output"],
                                                     0.0)])
    inputs = inputs.copy()
    inputs[0, 0] = 2 + (inputs[0, 0] - 2 + 1) % 10  # an input the task does not have
    result = score_raw(load_test_set(root), RawPredictions(inputs, ids, preds, qs))
    assert result.counts["votes"] == 1 and result.counts["votes_matched"] == 0
    assert result.metrics["ARC/pass@1"] == 0.0
    assert "1 votes matched no test input" in describe(result)
