"""init_from: official and trmlab checkpoints, architecture reconciliation, puzzle-table/dataset checks.

Run: .venv/bin/python -m pytest -q tests/test_train_transfer.py
"""

from __future__ import annotations

import shutil

import pytest
import torch

from train_helpers import write_tiny_dataset
from trmlab.config import load_config
from trmlab.errors import CheckpointError
from trmlab.training.loop import Trainer


def _no_eval(trainer, step):
    return {}


def _trainer(data, run_dir, *overrides):
    resolved = load_config(None, [f"data_paths=[{data}]", f"run_dir={run_dir}", "device=cpu", "max_steps=2",
                                  "global_batch_size=4", "eval_interval=null", "lr_warmup_steps=0",
                                  *overrides])
    return Trainer(resolved, progress=False, evaluate=_no_eval)


def test_init_from_official_checkpoint_loads_every_tensor(official_trm_tiny, tmp_path):
    from trmlab.interop.loading import read_official_state

    # The fixture: seq_len 36 (6×6), 10 puzzle identifiers, hidden 64, L_cycles 3 (from all_config.yaml).
    data = write_tiny_dataset(tmp_path / "data", groups=2, puzzles_per_group=2, seq_len=36, num_ids=10)
    source = official_trm_tiny / "step_100"
    with pytest.warns(UserWarning, match="no dataset fingerprint"):
        trainer = _trainer(data, tmp_path / "run", f"init_from={source}")
    assert trainer.config.arch.L_cycles == 3 and trainer.config.arch.hidden_size == 64
    expected = read_official_state(source)
    state = trainer.model.state_dict()
    assert set(expected) == set(state)
    for key, value in expected.items():
        assert torch.equal(state[key], value.to(state[key].dtype)), key
    assert trainer.init_report["puzzle_table"] == "loaded" and trainer.init_report["loaded"] == 14
    trainer.run()  # and it trains from there
    assert trainer.step == 2


def test_init_from_refuses_a_conflicting_architecture(official_trm_tiny, tmp_path):
    data = write_tiny_dataset(tmp_path / "data", groups=2, seq_len=36, num_ids=10)
    with pytest.raises(CheckpointError, match="L_cycles"):
        _trainer(data, tmp_path / "run", f"init_from={official_trm_tiny / 'step_100'}", "arch.L_cycles=6")


def test_init_from_trmlab_checkpoint_checks_the_dataset_fingerprint(tmp_path):
    arch = ["arch.hidden_size=16", "arch.num_heads=2", "arch.puzzle_emb_ndim=16", "arch.puzzle_emb_len=1",
            "arch.H_cycles=1", "arch.L_cycles=1", "arch.L_layers=1", "arch.halt_max_steps=2",
            "arch.forward_dtype=float32"]
    first = write_tiny_dataset(tmp_path / "a", seed=0)
    trainer = _trainer(first, tmp_path / "run_a", *arch)
    trainer.run()
    checkpoint = tmp_path / "run_a" / "checkpoints" / "step_2"
    ema = trainer.ema.shadow
    table = trainer.model.puzzle_embedding.weights.clone()

    # Same dataset: EMA weights and the table are loaded; the architecture comes from the checkpoint.
    again = _trainer(first, tmp_path / "run_b", f"init_from={checkpoint}")
    assert again.config.arch.hidden_size == 16
    params = dict(again.model.named_parameters())
    assert all(torch.equal(params[n].detach(), ema[n]) for n in ema)
    assert torch.equal(again.model.puzzle_embedding.weights, table)

    # Another dataset with the same identifier count: the table would address the wrong rows.
    other = tmp_path / "b"
    shutil.copytree(first, other)
    names = other / "identifiers.json"
    names.write_text(names.read_text().replace("train0_0", "zz"))
    with pytest.raises(CheckpointError, match="fingerprint"):
        _trainer(other, tmp_path / "run_c", f"init_from={checkpoint}")
    reinit = _trainer(other, tmp_path / "run_d", f"init_from={checkpoint}", "puzzle_emb_reinit=mean")
    assert torch.allclose(reinit.model.puzzle_embedding.weights, table.mean(0).expand_as(table))
