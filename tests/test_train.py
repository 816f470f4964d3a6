"""The training loop: exact step accounting, EMA only with updates, parameter groups, freezing, clipping,
metrics, run directory and CLI config handling. Run: .venv/bin/python -m pytest -q tests/test_train.py
"""

from __future__ import annotations

import json

import pytest
import torch

from train_helpers import Resolved, record_optimizer_inputs, tiny_config, write_tiny_dataset
from trmlab.errors import ConfigError
from trmlab.training.loop import Trainer, normalise_metrics
from trmlab.training.plan import plan_steps


def _no_eval(trainer, step):
    return {}


@pytest.fixture
def data(tmp_path):
    return write_tiny_dataset(tmp_path / "data")


def _run(config, **kwargs):
    trainer = Trainer(Resolved(config), progress=False, evaluate=_no_eval, **kwargs)
    result = trainer.run()
    return trainer, result


def _train_lines(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if line["split"] == "train"]


def _adam_steps(trainer):
    return {int(s["step"].item()) for s in trainer.adam.state.values()}


def test_exact_step_count_and_ema_never_without_update(data, tmp_path):
    trainer, result = _run(tiny_config(data, tmp_path / "run", epochs=3, checkpoint_every=None))
    expected = trainer.sampler.batches_per_iteration(0)  # eval_interval null: one iteration of 3 epochs
    assert trainer.total_steps == expected == result.step == 9
    assert _adam_steps(trainer) == {expected}
    assert trainer.ema.num_updates == expected
    assert [c.name for c in result.checkpoints] == [f"step_{expected}"]
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == expected


def test_max_steps_stops_mid_iteration(data, tmp_path):
    trainer, result = _run(tiny_config(data, tmp_path / "run", epochs=50, max_steps=7))
    assert trainer.total_steps == 7 and result.step == 7
    assert _adam_steps(trainer) == {7} and trainer.ema.num_updates == 7
    assert trainer.sampler.state_dict() == {"iteration": 0, "batch_in_iteration": 7,
                                            "epochs_per_iteration": 50}


def test_plan_uses_per_iteration_counts_and_the_estimate(data, tmp_path):
    class Sampler:
        epochs_per_iteration = 2

        def batches_per_iteration(self, iteration):
            return [3, 2, 4][iteration]

        def estimated_batches(self, epochs):
            return 8

    config = tiny_config(data, tmp_path / "run", epochs=6, eval_interval=2, checkpoint_every=None)
    plan = plan_steps(Sampler(), config)
    assert (plan.optimizer_steps, plan.schedule_steps, plan.batches) == (8, 8, 9)  # min(batches, estimate)
    assert plan.batches_per_iteration == [3, 2, 4] and plan.iteration_ends == [3, 5, 8]
    assert plan.eval_steps == [3, 5, 8]
    config.max_steps = 4
    plan = plan_steps(Sampler(), config)
    assert (plan.optimizer_steps, plan.schedule_steps, plan.batches_per_iteration) == (4, 8, [3, 2])
    assert plan.eval_steps == [3, 4]


def test_eval_on_ema_weights_at_epoch_intervals(data, tmp_path):
    seen = []

    def evaluate(trainer, step):
        params = dict(trainer.model.named_parameters())
        swapped = all(torch.equal(params[n].detach(), trainer.ema.shadow[n]) for n in trainer.ema.names)
        seen.append((step, swapped, trainer.model.training))
        return {"ARC/pass@1": 0.0}

    config = tiny_config(data, tmp_path / "run", epochs=4, eval_interval=2, checkpoint_every=None)
    trainer = Trainer(Resolved(config), progress=False, evaluate=evaluate)
    result = trainer.run()
    assert [s for s, _, _ in seen] == [6, 12]            # end of epochs 2 and 4 (3 batches each)
    assert all(swapped and not training for _, swapped, training in seen)
    # Swapped back: the live weights are not the EMA after the last evaluation.
    params = dict(trainer.model.named_parameters())
    assert not all(torch.equal(params[n].detach(), trainer.ema.shadow[n]) for n in trainer.ema.names)
    assert [c.name for c in result.checkpoints] == ["step_6", "step_12"]
    evals = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "eval"]
    assert [e["step"] for e in evals] == [6, 12]


def test_sparse_table_trains_and_only_touched_rows_move(data, tmp_path):
    trainer = Trainer(Resolved(tiny_config(data, tmp_path / "run", max_steps=1)), progress=False,
                      evaluate=_no_eval)
    before = trainer.model.puzzle_embedding.weights.clone()
    trainer.run()
    after = trainer.model.puzzle_embedding.weights
    changed = (after != before).any(-1).nonzero().flatten().tolist()
    assert 0 < len(changed) <= 4  # one batch of 4 rows touches at most 4 identifiers


def test_param_groups_and_decoder_freeze(data, tmp_path, monkeypatch):
    import trmlab.models as models

    original = models.build_model

    def build(*args, **kwargs):
        model = original(*args, **kwargs)
        names = [n for n, _ in model.named_parameters()]
        head = [n for n in names if n.startswith("core.lm_head") or "q_head" in n]
        body = [n for n in names if n not in head]
        params = dict(model.named_parameters())
        model.param_groups = lambda config: [
            {"name": "decoder", "params": [params[n] for n in body]},
            {"name": "encoder", "params": [params[n] for n in head], "lr_scale": 2.0, "wd_scale": 0.1}]
        model.decoder_parameter_names = lambda: body
        return model

    monkeypatch.setattr(models, "build_model", build)
    config = tiny_config(data, tmp_path / "run", max_steps=4, freeze_decoder_steps=3, checkpoint_every=None)
    trainer = Trainer(Resolved(config), progress=False, evaluate=_no_eval)
    params = dict(trainer.model.named_parameters())
    body = trainer.model.decoder_parameter_names()
    start = {n: p.detach().clone() for n, p in params.items()}
    assert [g.name for g in trainer.groups] == ["decoder", "encoder"]
    assert trainer.adam.param_groups[1]["weight_decay"] == pytest.approx(0.1 * config.weight_decay)
    trainer.run()
    # After 4 steps with 3 frozen: decoder params took exactly one update, the head four.
    for name in body:
        assert int(trainer.adam.state[params[name]]["step"].item()) == 1, name
    head = [n for n in params if n not in body]
    assert all(int(trainer.adam.state[params[n]]["step"].item()) == 4 for n in head)
    assert trainer.adam.param_groups[1]["lr"] == pytest.approx(2 * trainer.adam.param_groups[0]["lr"])
    assert all(not torch.equal(start[n], params[n].detach()) for n in head)
    lines = _train_lines(tmp_path / "run")
    n_head = sum(params[n].numel() for n in head)
    n_all = sum(p.numel() for p in params.values())
    assert lines[0]["updated_params"] == n_head          # steps 1-2: decoder frozen
    assert lines[1]["updated_params"] == pytest.approx((n_head + n_all) / 2)  # step 3 frozen, step 4 not


def test_frozen_decoder_gets_no_decay_during_freeze(data, tmp_path, monkeypatch):
    import trmlab.models as models

    original = models.build_model

    def build(*args, **kwargs):
        model = original(*args, **kwargs)
        names = [n for n, _ in model.named_parameters()]
        model.decoder_parameter_names = lambda: [n for n in names if "q_head" not in n]
        return model

    monkeypatch.setattr(models, "build_model", build)
    config = tiny_config(data, tmp_path / "run", max_steps=3, freeze_decoder_steps=5, weight_decay=0.5)
    trainer = Trainer(Resolved(config), progress=False, evaluate=_no_eval)
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "q_head" not in n}
    trainer.run()
    params = dict(trainer.model.named_parameters())
    assert all(torch.equal(frozen[n], params[n].detach()) for n in frozen)


def _global_norm(tensors):
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors])).item()


def test_grad_clip_scales_the_gradients_the_optimizer_sees(data, tmp_path):
    clip = 1e-3
    config = tiny_config(data, tmp_path / "run", max_steps=3, grad_clip_norm=clip, log_every=1)
    trainer = Trainer(Resolved(config), progress=False, evaluate=_no_eval)
    seen = record_optimizer_inputs(trainer)
    trainer.run()
    logged = [line["grad_norm"] for line in _train_lines(tmp_path / "run")]
    assert len(logged) == len(seen["grads"]) == 3 and all(norm > 100 * clip for norm in logged)  # pre-clip
    for grads in seen["grads"]:
        assert _global_norm(grads) == pytest.approx(clip, rel=1e-4)   # clipped to the global norm
    # Unclipped, the same run gives gradients of the logged (pre-clip) norm at step 1.
    free = Trainer(Resolved(tiny_config(data, tmp_path / "free", max_steps=1)), progress=False,
                   evaluate=_no_eval)
    unclipped = record_optimizer_inputs(free)
    free.run()
    assert _global_norm(unclipped["grads"][0]) == pytest.approx(logged[0], rel=1e-4)
    scale = clip / logged[0]  # one factor for every tensor: direction kept
    for clipped, raw in zip(seen["grads"][0], unclipped["grads"][0]):
        torch.testing.assert_close(clipped, raw * scale, rtol=1e-4, atol=1e-12)


def test_ema_is_one_official_update_per_optimizer_step(data, tmp_path):
    """The shadow equals the EMA recomputed by hand from the weights after each step; evaluation, logging
    and checkpointing leave it alone (the loop's only update is the one after the optimizer step)."""
    rate = 0.9
    config = tiny_config(data, tmp_path / "run", epochs=2, eval_interval=1, checkpoint_every=1, ema_rate=rate)
    shadows_at_eval = []

    def evaluate(trainer, step):
        shadows_at_eval.append({n: t.clone() for n, t in trainer.ema.shadow.items()})
        return {}

    trainer = Trainer(Resolved(config), progress=False, evaluate=evaluate)
    names = [n for g in trainer.groups for n in g.names]
    expected = [trainer.ema.shadow[n].clone() for n in names]
    seen = record_optimizer_inputs(trainer)
    trainer.run()
    assert len(seen["weights"]) == trainer.total_steps == 6
    for step, weights in enumerate(seen["weights"], start=1):
        expected = [(1 - rate) * w.float() + rate * s for w, s in zip(weights, expected)]
        if step in (3, 6):
            assert all(torch.equal(shadows_at_eval[step // 3 - 1][n], e) for n, e in zip(names, expected))
    for name, value in zip(names, expected):
        assert torch.equal(trainer.ema.shadow[name], value), name
    assert trainer.ema.num_updates == 6


def test_normalise_metrics_populations():
    sums = {"train/count": 6.0, "train/exact_accuracy": 3.0, "train/lm_loss": 16.0,
            "train/all_rows/count": 8.0, "train/all_rows/exact_accuracy": 2.0, "train/steps": 12.0}
    out = normalise_metrics(sums, steps=2, global_batch_size=4)
    assert out["train/count"] == 3.0 and out["train/all_rows/count"] == 4.0
    assert out["train/exact_accuracy"] == 0.5 and out["train/all_rows/exact_accuracy"] == 0.25
    assert out["train/lm_loss"] == 2.0 and out["train/steps"] == 2.0


def test_run_dir_refuses_reuse_and_resume_refuses_arch_change(data, tmp_path):
    from trmlab.training.cli import resume_config

    _run(tiny_config(data, tmp_path / "run", max_steps=2))
    with pytest.raises(ConfigError, match="already holds a run"):
        _run(tiny_config(data, tmp_path / "run", max_steps=2))
    with pytest.raises(ConfigError, match=r"arch\.hidden_size"):
        resume_config(str(tmp_path / "run"), ["arch.hidden_size=32"])
    with pytest.raises(ConfigError, match="epochs"):
        resume_config(str(tmp_path / "run"), ["epochs=9"])
    resolved = resume_config(str(tmp_path / "run"), ["log_every=7"])
    assert resolved.config.log_every == 7 and resolved.config.arch.hidden_size == 16


def test_freeze_without_decoder_hook_is_a_config_error(data, tmp_path):
    with pytest.raises(ConfigError, match="freeze_decoder_steps"):
        Trainer(Resolved(tiny_config(data, tmp_path / "run", freeze_decoder_steps=2)), progress=False,
                evaluate=_no_eval)


def test_unknown_logger_is_a_config_error(data, tmp_path):
    with pytest.raises(ConfigError, match="unknown logger"):
        _run(tiny_config(data, tmp_path / "run", loggers=["nope"]))


def test_missing_log_extra_is_a_clear_error(data, tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed here")
    with pytest.raises(ConfigError, match=r"trmlab\[log\]"):
        _run(tiny_config(data, tmp_path / "run", loggers=["tensorboard"], max_steps=1))
    assert not (tmp_path / "run").exists(), "nothing may be written before the check"


def _stub_cli_evaluation(monkeypatch):
    import trmlab.training.evaluate as evaluate

    # The tiny dataset has no ARC test set: evaluation is stubbed (covered by the evaluator's tests).
    monkeypatch.setattr(evaluate, "check_eval_data", lambda config: None)
    monkeypatch.setattr(evaluate, "evaluate_during_training", lambda trainer, step: {"ARC/pass@1": 0.0})


def test_cli_train_then_resume_a_finished_run(data, tmp_path, monkeypatch, capsys):
    from trmlab.cli import main

    _stub_cli_evaluation(monkeypatch)
    run = tmp_path / "run"
    words = ["train", "tiny", f"data_paths=[{data}]", f"run_dir={run}", "device=cpu", "global_batch_size=4",
             "max_steps=3", "--no-progress"]
    assert main(words) == 0
    assert (run / "checkpoints" / "step_3" / "manifest.json").is_file()
    assert "optimizer steps: 3 exactly" in capsys.readouterr().err
    assert main(["train", f"resume={run}", "log_every=1"]) == 0      # nothing left to do, says so
    assert "resuming" in capsys.readouterr().err
    assert main(["train", "tiny", f"resume={run}"]) == 2               # preset + resume: clear error
    assert "drop the preset" in capsys.readouterr().err


# -- never losing work: checkpoint before evaluation, re-run evaluations, resume from anywhere ---------------


def test_failing_evaluation_keeps_the_checkpoint(data, tmp_path):
    from trmlab.checkpoints import read_checkpoint

    def evaluate(trainer, step):
        raise RuntimeError("CUDA out of memory (simulated)")

    config = tiny_config(data, tmp_path / "run", epochs=2, eval_interval=1, checkpoint_every=None)
    with pytest.raises(RuntimeError, match="simulated"):
        Trainer(Resolved(config), progress=False, evaluate=evaluate).run()
    step_dir = tmp_path / "run" / "checkpoints" / "step_3"  # the end of epoch 1: the first evaluation
    assert read_checkpoint(step_dir, verify=True).manifest["step"] == 3


def test_resume_repeats_an_evaluation_its_kill_interrupted(data, tmp_path):
    """Killed while evaluating step 6 (checkpoint written, no eval record): resume evaluates step 6 again."""
    calls = []

    def evaluate(trainer, step):
        calls.append(step)
        return {"ARC/pass@1": 0.5}

    config = tiny_config(data, tmp_path / "run", epochs=2, eval_interval=1, checkpoint_every=None)
    Trainer(Resolved(config), progress=False, evaluate=evaluate).run()
    assert calls == [3, 6]
    metrics = tmp_path / "run" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("".join(f"{line}\n" for line in lines if '"split": "eval", "ARC' not in line
                               or json.loads(line)["step"] != 6))
    Trainer(Resolved(config), resume=tmp_path / "run", progress=False, evaluate=evaluate).run()
    assert calls == [3, 6, 6]
    Trainer(Resolved(config), resume=tmp_path / "run", progress=False, evaluate=evaluate).run()
    assert calls == [3, 6, 6], "an evaluation on record is not repeated"
    evals = [json.loads(line)["step"] for line in metrics.read_text().splitlines()
             if json.loads(line)["split"] == "eval"]
    assert evals == [3, 6]


def test_rerun_step_replaces_its_eval_directory(tmp_path):
    """Killed after writing eval/step_4 but before checkpoints/step_4: the re-run step 4 replaces it."""
    import shutil

    from trmlab.data.synthetic import build_synthetic

    build_synthetic(tmp_path / "synthetic", seed=0, families=["colour_permutation"], train_tasks=4,
                    eval_tasks=1, canvas=4, log=lambda _: None)
    config = tiny_config(tmp_path / "synthetic" / "trm", tmp_path / "run", max_steps=4, checkpoint_every=2,
                         keep_last=5)
    Trainer(Resolved(config), progress=False).run()
    run = tmp_path / "run"
    first = (run / "eval" / "step_4" / "metrics.json").read_bytes()
    shutil.rmtree(run / "checkpoints" / "step_4")
    (run / "eval" / "step_4" / "stale.txt").write_text("from the killed run")
    Trainer(Resolved(config), resume=run, progress=False).run()
    assert not (run / "eval" / "step_4" / "stale.txt").exists()
    assert json.loads((run / "eval" / "step_4" / "metrics.json").read_bytes()) == json.loads(first)


def test_resume_from_another_directory_and_a_moved_dataset(tmp_path, monkeypatch, capsys):
    import shutil

    import yaml

    from trmlab.cli import main

    _stub_cli_evaluation(monkeypatch)
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    write_tiny_dataset(work / "data")
    write_tiny_dataset(tmp_path / "other", groups=7)  # another dataset: another fingerprint
    elsewhere.mkdir()
    monkeypatch.chdir(work)
    words = ["train", "tiny", "data_paths=[data]", "run_dir=run", "device=cpu", "global_batch_size=4",
             "max_steps=4", "checkpoint_every=2", "keep_last=5", "--no-progress"]
    assert main(words) == 0
    run = work / "run"
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert stored["config"]["data_paths"] == [str(work / "data")]
    assert stored["provenance"]["data_paths"] == "command line; given as [data]"
    shutil.rmtree(run / "checkpoints" / "step_4")

    monkeypatch.chdir(elsewhere)  # "data" means nothing here
    assert main(["train", f"resume={run}"]) == 0
    assert "resuming" in capsys.readouterr().err
    assert (run / "checkpoints" / "step_4" / "manifest.json").is_file()

    shutil.move(work / "data", tmp_path / "moved")
    shutil.rmtree(run / "checkpoints" / "step_4")
    assert main(["train", f"resume={run}"]) == 2
    assert "if the dataset moved, resume with data_paths=" in capsys.readouterr().err
    assert main(["train", f"resume={run}", f"data_paths=[{tmp_path / 'other'}]"]) == 2
    err = capsys.readouterr().err
    assert "fingerprint" in err and "step_3" in err and err.count("\n") == 1
    assert main(["train", f"resume={run}", "data_paths=[../moved]"]) == 0
    assert (run / "checkpoints" / "step_4" / "manifest.json").is_file()


def test_resume_restores_every_rng_stream(data, tmp_path):
    """After resuming from step_2 every RNG stream (exploration generator, torch, numpy, python) is where the
    uninterrupted run had it after step 2. The bitwise resume tests stay green without the restore: on their
    tiny runs the exploration draws change no result."""
    import random
    import shutil

    import numpy as np

    from trmlab.training.state import load_latest_checkpoint

    config = tiny_config(data, tmp_path / "run", max_steps=4, checkpoint_every=2, keep_last=5)
    trainer = Trainer(Resolved(config), progress=False, evaluate=_no_eval)
    train_step, at_step_2 = trainer._train_step, {}

    def step_and_record(batch):
        metrics = train_step(batch)
        random.random(), np.random.rand(), torch.rand(1)  # as user or model code drawing from global streams
        if trainer.step == 2:
            at_step_2.update(exploration=trainer.exploration.get_state(), torch=torch.get_rng_state(),
                             numpy=np.random.get_state()[1].copy(), python=random.getstate())
        return metrics

    trainer._train_step = step_and_record
    trainer.run()
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step_4")
    # Move every stream on, as a fresh process would start them elsewhere.
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    resumed = Trainer(Resolved(config), resume=tmp_path / "run", progress=False, evaluate=_no_eval)
    resumed.exploration.manual_seed(99)
    load_latest_checkpoint(resumed)
    assert resumed.step == 2
    assert torch.equal(resumed.exploration.get_state(), at_step_2["exploration"])
    assert torch.equal(torch.get_rng_state(), at_step_2["torch"])
    assert np.array_equal(np.random.get_state()[1], at_step_2["numpy"])
    assert random.getstate() == at_step_2["python"]
