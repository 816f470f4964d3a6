"""``trmlab eval`` end to end on the official tiny checkpoint (random weights: the scores are ~0, the plumbing
is what is tested).

The tiny checkpoint's puzzle table has 10 rows, so the hand-made dataset has exactly 10 identifiers (blank +
2 tasks × 3 augmentations + 3 train-only names): no puzzle_emb_reinit is needed. Its canvas is 6×6
(seq_len 36, passed to load_checkpoint) to keep the run fast.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_eval_support import IDENTITY, build_dataset, simple_task
from trmlab.cli import main
from trmlab.evaluation.outputs import load_raw_predictions
from trmlab.evaluation.testset import load_test_set

AUGS = [IDENTITY, (1, "0213456789"), (4, "0987654321")]


@pytest.fixture(autouse=True)
def _one_thread():
    # Two intra-op threads on a shared 2-core machine spin against each other: 1 thread is ~10x faster here
    # (conftest restores the thread count after each test).
    torch.set_num_threads(1)


@pytest.fixture
def tiny_dataset(tmp_path):
    tasks = {f"task{i}": simple_task(i, n_test=1 + i) for i in range(2)}
    return build_dataset(tmp_path / "data", tasks, {t: AUGS for t in tasks}, side=6, extra_identifiers=3)


def test_eval_of_the_official_tiny_checkpoint_runs_end_to_end(official_trm_tiny, tiny_dataset, tmp_path):
    from trmlab import load_checkpoint

    checkpoint = official_trm_tiny / "step_100"
    out = tmp_path / "eval"
    code = main(["eval", str(checkpoint), str(tiny_dataset), f"out={out}", "global_batch_size=4",
                 "device=cpu"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "metrics.json", "predictions.json", "raw_predictions.npz", "submission.json"]
    metrics = json.loads((out / "metrics.json").read_text())
    test_set = load_test_set(tiny_dataset)
    assert metrics["counts"]["tasks"] == 2 and metrics["counts"]["votes"] == test_set.num_rows == 9
    assert all(0.0 <= metrics[f"ARC/pass@{k}"] <= 1.0 for k in (1, 2, 5, 10, 100, 1000))
    assert metrics["checkpoint"] == str(checkpoint.resolve())
    submission = json.loads((out / "submission.json").read_text())
    assert [len(submission[t]) for t in ("task0", "task1")] == [1, 2]

    # The raw rows are the model's final-step outputs on the dataset rows, in file order.
    raw = load_raw_predictions(out / "raw_predictions.npz")
    assert np.array_equal(raw.inputs, test_set.inputs())
    model = load_checkpoint(checkpoint, seq_len=36)
    steps = model.rollout(torch.from_numpy(test_set.inputs().astype(np.int32)),
                          torch.from_numpy(test_set.row_identifiers()))
    assert len(steps) == 4  # halt_max_steps of the tiny config
    assert np.array_equal(raw.preds, steps[-1]["preds"].numpy())
    assert np.allclose(raw.q_halt_logits, steps[-1]["q_halt_logits"].numpy(), atol=1e-5)

    # trmlab score on the saved raw predictions gives the same metrics and submission.
    rescored = tmp_path / "rescored"
    assert main(["score", str(tiny_dataset), str(out / "raw_predictions.npz"), f"out={rescored}"]) == 0
    again = json.loads((rescored / "metrics.json").read_text())
    assert {k: again[k] for k in metrics if k.startswith("ARC/")} == {
        k: v for k, v in metrics.items() if k.startswith("ARC/")}
    assert json.loads((rescored / "submission.json").read_text()) == submission


def test_eval_compile_true_runs_the_compiled_step_with_the_same_scores(official_trm_tiny, tiny_dataset,
                                                                       tmp_path, monkeypatch, capsys):
    checkpoint = str(official_trm_tiny / "step_100")
    plain, compiled = tmp_path / "plain", tmp_path / "compiled"
    assert main(["eval", checkpoint, str(tiny_dataset), f"out={plain}", "global_batch_size=4",
                 "device=cpu"]) == 0
    real_compile, compiled_models = torch.compile, []

    def eager_compile(model, **kwargs):  # dynamo tracing without a C++ toolchain
        compiled_models.append(type(model).__name__)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    assert main(["eval", checkpoint, str(tiny_dataset), f"out={compiled}", "global_batch_size=4",
                 "device=cpu", "compile=true"]) == 0
    assert compiled_models == ["TRM"]
    scores = [{k: v for k, v in json.loads((d / "metrics.json").read_text()).items() if k.startswith("ARC/")}
              for d in (plain, compiled)]
    assert scores[0] == scores[1]
    assert np.array_equal(load_raw_predictions(plain / "raw_predictions.npz").preds,
                          load_raw_predictions(compiled / "raw_predictions.npz").preds)
    capsys.readouterr()
    assert main(["eval", checkpoint, str(tiny_dataset), f"out={tmp_path / 'bad'}", "compile=yes"]) == 2
    assert "compile=yes: is not true or false" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_eval_refuses_a_dataset_whose_identifiers_do_not_match_the_table(official_trm_tiny, tmp_path, capsys):
    tasks = {"task0": simple_task(0)}
    root = build_dataset(tmp_path / "data", tasks, {"task0": AUGS}, side=6)  # 4 identifiers, table has 10
    assert main(["eval", str(official_trm_tiny / "step_100"), str(root), f"out={tmp_path / 'eval'}",
                 "global_batch_size=4", "device=cpu"]) == 2
    err = capsys.readouterr().err
    assert "10 rows" in err and "4 puzzle identifiers" in err
    assert not (tmp_path / "eval").exists()


def test_eval_refuses_a_trmlab_checkpoint_trained_on_another_dataset_build(official_trm_tiny, tiny_dataset,
                                                                            tmp_path, capsys):
    from trmlab.data.dataset import ArcDataset
    from trmlab.interop.convert import official_to_trmlab

    bundle = official_to_trmlab(official_trm_tiny / "step_100", tmp_path / "step_100", seq_len=36)
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())

    def run(fingerprint: str, out: str) -> int:
        manifest["dataset_fingerprint"] = fingerprint
        manifest_path.write_text(json.dumps(manifest))
        return main(["eval", str(bundle), str(tiny_dataset), f"out={tmp_path / out}", "global_batch_size=4",
                     "device=cpu", "max_tasks=1", "num_augmentations=1"])

    assert run("0" * 64, "refused") == 2
    assert "trained on another dataset build" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
    assert run(ArcDataset([tiny_dataset], "train").fingerprint(), "accepted") == 0


def test_eval_weights_ema_or_raw_recorded_with_step_checkpoint_and_scored_tasks(
        official_trm_tiny, tiny_dataset, tmp_path, capsys):
    from trmlab import load_checkpoint
    from trmlab.checkpoints.bundle import save_model_checkpoint
    from trmlab.interop.official_keys import TABLE_KEY
    from trmlab.reports.html import render_report

    model = load_checkpoint(official_trm_tiny / "step_100", seq_len=36)
    ema = {k: v.clone() for k, v in model.state_dict().items() if k != TABLE_KEY}
    with torch.no_grad():  # the raw weights differ from the EMA weights
        for name, parameter in model.named_parameters():
            if name != TABLE_KEY:
                parameter.mul_(0.5)
    bundle = save_model_checkpoint(tmp_path / "step_7", model, config=model.config, step=7, ema_state=ema)
    raw_predictions = {}
    for weights in ("ema", "raw"):
        out = tmp_path / weights
        assert main(["eval", str(bundle), str(tiny_dataset), f"out={out}", "global_batch_size=4",
                     "device=cpu", f"weights={weights}", "max_tasks=999"]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        recorded = (metrics["weights"], metrics["step"], metrics["checkpoint"])
        assert recorded == (weights, 7, str(bundle.resolve()))
        scored = (metrics["max_tasks"], metrics["max_tasks_requested"], metrics["counts"]["tasks"])
        assert scored == (2, 999, 2)
        assert f"evaluated: <b>{weights} weights</b>" in render_report(out)
        raw_predictions[weights] = load_raw_predictions(out / "raw_predictions.npz").q_halt_logits
    assert not np.allclose(raw_predictions["ema"], raw_predictions["raw"])

    # An official file holds one set (the EMA copy: its all_config.yaml has ema: true).
    official = official_trm_tiny / "step_100"
    out = tmp_path / "official"
    assert main(["eval", str(official), str(tiny_dataset), f"out={out}", "global_batch_size=4", "device=cpu",
                 "max_tasks=1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["weights"], metrics["step"], metrics["max_tasks"]) == ("ema", 100, 1)
    assert "max_tasks_requested" not in metrics
    capsys.readouterr()
    assert main(["eval", str(official), str(tiny_dataset), f"out={tmp_path / 'no'}", "global_batch_size=4",
                 "device=cpu", "weights=raw"]) == 2
    assert "holds only the ema weights" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_eval_on_a_full_disk_is_one_line_and_leaves_nothing(official_trm_tiny, tiny_dataset, tmp_path,
                                                            monkeypatch, capsys):
    import errno
    import os
    from pathlib import Path

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    out = tmp_path / "evals" / "eval"
    assert main(["eval", str(official_trm_tiny / "step_100"), str(tiny_dataset), f"out={out}",
                 "global_batch_size=4", "device=cpu", "max_tasks=1", "num_augmentations=1"]) == 3
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("trmlab: error:")]  # logs: stderr too
    assert errors == [f"trmlab: error: {out}: cannot write: No space left on device; free some space or "
                      f"write elsewhere; partial output was removed"]
    assert "Traceback" not in err and err.rstrip("\n").endswith(errors[0])  # the error ends the output
    assert os.listdir(tmp_path / "evals") == []


@pytest.mark.parametrize("flag, bar", [([], True), (["--no-progress"], False)])
def test_eval_progress_bar_on_a_terminal_unless_no_progress(official_trm_tiny, tiny_dataset, tmp_path,
                                                             monkeypatch, capsys, flag, bar):
    import re
    import sys

    from trmlab import progress

    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)  # plain lines, when shown, at every batch
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["eval", str(official_trm_tiny / "step_100"), str(tiny_dataset), f"out={tmp_path / 'e'}",
                 "global_batch_size=4", "device=cpu", *flag]) == 0
    err = capsys.readouterr().err
    assert ("\r" in err) == bar  # a bar redraws in place; --no-progress leaves the plain lines
    assert bool(re.search(r"^eval: \d+/\d+ batches", err, re.M)) != bar
