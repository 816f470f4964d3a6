"""ETRM in the training loop: transfer from an official TRM checkpoint, decoder freezing, parameter groups,
diagnostics in metrics.jsonl.

Run: .venv/bin/python -m pytest -q tests/test_etrm_training.py  (tiny synthetic data, ~10 s on 2 CPU cores)
"""

from __future__ import annotations

import json

import pytest
import torch

from trmlab.config import load_config
from trmlab.data.synthetic import build_synthetic
from trmlab.errors import CheckpointError
from trmlab.models.losses import contrastive_context_loss
from trmlab.training.loop import Trainer

TINY_ETRM = ["arch.name=etrm", "arch.hidden_size=16", "arch.num_heads=2", "arch.puzzle_emb_ndim=0",
             "arch.puzzle_emb_len=2", "arch.H_cycles=1", "arch.L_cycles=1", "arch.L_layers=1",
             "arch.halt_max_steps=2", "arch.forward_dtype=float32", "arch.encoder_num_layers=1",
             "max_demos=4"]


@pytest.fixture(scope="module")
def synthetic_6x6(tmp_path_factory):
    """Encoder-layout synthetic tasks on a 6×6 canvas (seq_len 36, as the official tiny fixture)."""
    root = tmp_path_factory.mktemp("synthetic") / "data"
    build_synthetic(root, seed=0, families=["colour_permutation"], train_tasks=4, eval_tasks=1, canvas=6,
                    log=lambda _: None)
    return root / "encoder"


def _no_eval(trainer, step):
    return {}


def _trainer(data, run_dir, *overrides):
    resolved = load_config(None, [f"data_paths=[{data}]", f"run_dir={run_dir}", "device=cpu", "max_steps=2",
                                  "global_batch_size=4", "eval_interval=null", "lr_warmup_steps=0", "lr=1e-2",
                                  "log_every=1", *overrides])
    return Trainer(resolved, progress=False, evaluate=_no_eval)


def test_transfer_from_official_trm_loads_the_decoder_and_skips_the_table(official_trm_tiny, synthetic_6x6,
                                                                         tmp_path):
    from trmlab.interop.loading import read_official_state

    source = official_trm_tiny / "step_100"
    overrides = ["arch.name=etrm", "arch.puzzle_emb_ndim=0", "arch.encoder_num_layers=1", "max_demos=4",
                 f"init_from={source}"]
    trainer = _trainer(synthetic_6x6, tmp_path / "run", *overrides)
    arch = trainer.config.arch
    got = (arch.name, arch.L_cycles, arch.H_cycles, arch.hidden_size, arch.puzzle_emb_len)
    assert got == ("etrm", 3, 2, 64, 16)  # the checkpoint's architecture
    expected = read_official_state(source)
    state = trainer.model.state_dict()
    decoder = {k: v for k, v in expected.items() if not k.startswith("puzzle_embedding.")}
    assert len(decoder) == 14  # H_init, L_init, embeddings, heads and the 2 blocks' 8 matrices
    for key, value in decoder.items():
        assert torch.equal(state[key], value.to(state[key].dtype)), key
    assert trainer.init_report["loaded"] == 14
    assert trainer.init_report["puzzle_table"].startswith("dropped")
    assert not any(k.startswith("puzzle_embedding") for k in state)
    missing = trainer.init_report["missing"]  # fresh encoder, nothing else
    assert missing and all(k.startswith("encoder.") for k in missing)
    trainer.run()
    assert trainer.step == 2


def test_transfer_refuses_a_conflicting_L_cycles(official_trm_tiny, synthetic_6x6, tmp_path):
    with pytest.raises(CheckpointError, match="L_cycles") as error:
        _trainer(synthetic_6x6, tmp_path / "run", "arch.name=etrm", "arch.puzzle_emb_ndim=0", "max_demos=4",
                 "arch.L_cycles=6", f"init_from={official_trm_tiny / 'step_100'}")
    assert "allow_arch_mismatch" in str(error.value)


def test_freeze_decoder_trains_only_the_encoder(synthetic_6x6, tmp_path):
    trainer = _trainer(synthetic_6x6, tmp_path / "run", *TINY_ETRM, "freeze_decoder_steps=2",
                       "encoder_lr_scale=0.5")
    model = trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    groups = {g.name: g for g in trainer.groups}
    assert set(groups) == {"decoder", "encoder"} and groups["encoder"].lr_scale == 0.5
    trainer.run()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    decoder = {n for n, _ in model.split_parameters()["decoder"]}
    encoder = {n for n, _ in model.split_parameters()["encoder"]}
    assert not changed & decoder, f"frozen decoder parameters moved: {sorted(changed & decoder)[:3]}"
    assert changed == encoder, f"encoder parameters that did not train: {sorted(encoder - changed)[:3]}"
    assert trainer.adam.param_groups[1]["lr"] == pytest.approx(0.5 * trainer.adam.param_groups[0]["lr"])


def test_decoder_trains_after_the_frozen_steps_and_diagnostics_are_logged(synthetic_6x6, tmp_path):
    trainer = _trainer(synthetic_6x6, tmp_path / "run", *TINY_ETRM, "freeze_decoder_steps=1")
    model = trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.run()
    decoder = [n for n, _ in model.split_parameters()["decoder"]]
    assert any(not torch.equal(dict(model.named_parameters())[n].detach(), before[n]) for n in decoder)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("split") == "train"]
    keys = set().union(*train)
    assert any(k.endswith("encoder/context_variance") for k in keys), sorted(keys)
    assert any(k.endswith("encoder/effective_rank") for k in keys)


def test_evaluation_logs_the_encoder_diagnostics(synthetic_6x6, tmp_path):
    """The collapse signals reach eval records too (metrics.json and the training loop's eval metrics)."""
    from trmlab.evaluation.runner import evaluate
    from trmlab.training.evaluate import evaluate_during_training

    trainer = _trainer(synthetic_6x6, tmp_path / "run", *TINY_ETRM)
    result = evaluate(trainer.model, synthetic_6x6, config=trainer.config, out_dir=tmp_path / "eval")
    names = {"encoder/context_variance", "encoder/cosine_similarity", "encoder/effective_rank"}
    assert names <= set(result.diagnostics)
    assert all(value == value for value in result.diagnostics.values())  # no NaN
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert names <= set(written["diagnostics"])
    assert names <= set(evaluate_during_training(trainer, step=0))


@pytest.mark.parametrize("name", ["etrm", "etrmtrm"])
def test_leave_one_out_and_contrastive_loss_train_and_are_logged(synthetic_6x6, tmp_path, name):
    """demo_sampling=leave_one_out + the contrastive context loss: it is logged, non-zero (one puzzle fills
    several rows, so rows have positives), and it alone sends gradient into the encoder."""
    overrides = [f"arch.name={name}", *TINY_ETRM[1:], "demo_sampling=leave_one_out",
                 "arch.contrastive_weight=0.5"]
    trainer = _trainer(synthetic_6x6, tmp_path / "run", *overrides)
    trainer.run()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/contrastive_loss"] for r in records if r.get("split") == "train"]
    assert losses and all(value > 0 for value in losses)

    model = trainer.model.train()
    batch = next(trainer.sampler.iter_iteration(0))
    carry = model.initial_carry(batch)
    _, outputs = model(carry, batch)
    assert outputs["context_groups"].tolist() == batch["puzzle_identifiers"].tolist()
    model.zero_grad()
    term, anchors = contrastive_context_loss(outputs["context"], outputs["context_groups"], 0.1)
    assert anchors > 0
    term.backward()
    encoder = [p for n, p in model.named_parameters() if n.startswith("encoder.")]
    assert all(p.grad is not None for p in encoder) and any(p.grad.abs().sum() > 0 for p in encoder)
    assert all(p.grad is None or p.grad.abs().sum() == 0
               for n, p in model.named_parameters() if n.startswith("core."))


def test_encoder_weight_decay_is_a_tenth_in_the_frozen_decoder_preset(synthetic_6x6, tmp_path):
    """etrm-reference §6.2: with its own optimizer the encoder decays by 0.1 × weight_decay."""
    from trmlab.config import load_config

    preset = load_config("etrm-arc1-frozen-decoder", ["init_from=null"]).config
    assert preset.encoder_weight_decay_scale == 0.1
    trainer = _trainer(synthetic_6x6, tmp_path / "run", *TINY_ETRM, "weight_decay=0.5",
                       "encoder_weight_decay_scale=0.1")
    decays = {group["name"]: group["weight_decay"] for group in trainer.adam.param_groups}
    assert decays == {"decoder": 0.5, "encoder": pytest.approx(0.05)}
    default = _trainer(synthetic_6x6, tmp_path / "run2", *TINY_ETRM, "weight_decay=0.5")
    assert {group["weight_decay"] for group in default.adam.param_groups} == {0.5}
