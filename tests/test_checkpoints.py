"""The trmlab checkpoint bundle: atomic writes, manifest + checksums, verification, EMA selection."""

from __future__ import annotations

import json
import os

import pytest
import torch

from trmlab import load_checkpoint
from trmlab.checkpoints import read_checkpoint, save_model_checkpoint, write_checkpoint
from trmlab.config.loader import load_config
from trmlab.errors import CheckpointError
from trmlab.interop.loading import load_checkpoint as load_full
from trmlab.models import build_model


def parts():
    tensors = {"a": torch.arange(6.0).view(2, 3), "b": torch.ones(2, dtype=torch.bfloat16)}
    return {"model.safetensors": tensors,
            "train_state.pt": {"step": 3, "opt": {"m": torch.zeros(2)}, "rng": torch.ByteTensor([1, 2])},
            "config.yaml": {"config": {"x": 1}},
            "notes.bin": b"\x00\x01raw"}


def test_write_and_read_round_trip(tmp_path):
    out = write_checkpoint(tmp_path / "step_3", parts(), {"step": 3})
    bundle = read_checkpoint(out)
    manifest = bundle.manifest
    assert manifest["step"] == 3 and manifest["format"] == "trmlab-checkpoint"
    assert set(manifest["files"]) == {"model.safetensors", "train_state.pt", "config.yaml", "notes.bin"}
    assert manifest["tensors"]["model.safetensors"]["b"] == {"shape": [2], "dtype": "bfloat16"}
    assert all(len(info["sha256"]) == 64 for info in manifest["files"].values())
    tensors = bundle.tensors("model.safetensors")
    assert torch.equal(tensors["a"], torch.arange(6.0).view(2, 3)) and tensors["b"].dtype == torch.bfloat16
    assert bundle.train_state()["step"] == 3
    assert (out / "notes.bin").read_bytes() == b"\x00\x01raw"
    assert sorted(os.listdir(tmp_path)) == ["step_3"], "no temporary directory may remain"


def test_corrupt_file_is_named(tmp_path):
    out = write_checkpoint(tmp_path / "step_1", parts(), {"step": 1})
    data = bytearray((out / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (out / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors does not match its sha256"):
        read_checkpoint(out)
    read_checkpoint(out, verify=False)  # explicit opt-out still opens it
    (out / "train_state.pt").unlink()
    with pytest.raises(CheckpointError, match=r"train_state\.pt is listed in the manifest but missing"):
        read_checkpoint(out)


@pytest.mark.parametrize("kind", ["parent", "absolute", "hidden"])
def test_manifest_naming_a_file_outside_the_checkpoint_is_refused(tmp_path, kind):
    """A crafted manifest must not make trmlab read and hash files outside the checkpoint directory."""
    import hashlib

    out = write_checkpoint(tmp_path / "ckpt" / "step_1", parts(), {"step": 1})
    outside = tmp_path / "ckpt" / "x"
    outside.write_bytes(b"not part of the checkpoint")
    (out / ".x").write_bytes(outside.read_bytes())
    name = {"parent": "../x", "absolute": str(outside), "hidden": ".x"}[kind]
    manifest = json.loads((out / "manifest.json").read_text())
    # The listed file exists with the listed hash: only the name check stands between it and a read.
    manifest["files"][name] = {"sha256": hashlib.sha256(outside.read_bytes()).hexdigest(), "bytes": 26}
    (out / "manifest.json").write_text(json.dumps(manifest))
    for verify in (True, False):
        with pytest.raises(CheckpointError, match="which is not a plain file name"):
            read_checkpoint(out, verify=verify)


def test_incomplete_directory_and_overwrite(tmp_path):
    (tmp_path / "step_2").mkdir()
    (tmp_path / "step_2" / "model.safetensors").write_bytes(b"partial")
    with pytest.raises(CheckpointError, match=r"no manifest\.json"):
        read_checkpoint(tmp_path / "step_2")
    with pytest.raises(CheckpointError, match="already exists"):
        write_checkpoint(tmp_path / "step_2", parts())
    write_checkpoint(tmp_path / "step_2", parts(), overwrite=True)
    assert read_checkpoint(tmp_path / "step_2").has("config.yaml")
    assert sorted(os.listdir(tmp_path)) == ["step_2"]


def test_failed_write_leaves_nothing(tmp_path):
    bad = {**parts(), "zz.unknown": {"x": 1}}
    with pytest.raises(CheckpointError, match=r"zz\.unknown"):
        write_checkpoint(tmp_path / "step_9", bad)
    assert os.listdir(tmp_path) == []


def test_unsafe_train_state_is_refused(tmp_path):
    out = write_checkpoint(tmp_path / "step_1", {"train_state.pt": {"fn": os.getcwd}})
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(out).train_state()


def test_model_checkpoint_uses_ema_for_evaluation(tmp_path):
    resolved = load_config("tiny")
    model = build_model(resolved, seq_len=6, vocab_size=12, num_puzzle_identifiers=4)
    with torch.no_grad():
        model.puzzle_embedding.weights.normal_()
    ema = {name: param.detach() + 0.01 for name, param in model.named_parameters()}
    out = save_model_checkpoint(tmp_path / "step_5", model, config=resolved, step=5, ema_state=ema,
                                train_state={"step": 5}, dataset_fingerprint="abc")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["contents"] == {"raw": True, "ema": True, "table": True, "train_state": True}
    assert manifest["model"] == {"seq_len": 6, "vocab_size": 12, "num_puzzle_identifiers": 4}
    assert "puzzle_embedding.weights" not in manifest["tensors"]["model.safetensors"]
    assert set(manifest["tensors"]["model.safetensors"]) >= {"core.h_init", "core.l_init"}

    evaluated = load_checkpoint(out)
    raw = load_full(out, use_ema=False)
    assert torch.equal(evaluated.core.lm_head.weight, ema["core.lm_head.weight"])
    assert torch.equal(raw.core.lm_head.weight, model.core.lm_head.weight)
    assert torch.equal(evaluated.puzzle_embedding.weights, model.puzzle_embedding.weights)
    assert evaluated.config.config.arch == resolved.config.arch
    ids, x = torch.tensor([0, 3], dtype=torch.int32), torch.randint(0, 12, (2, 6), dtype=torch.int32)
    assert torch.equal(raw.rollout(x, ids)[-1]["logits"], model.rollout(x, ids)[-1]["logits"])
    with pytest.raises(CheckpointError, match="seq_len=7"):
        load_checkpoint(out, seq_len=7)
