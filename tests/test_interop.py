"""Official checkpoints: loading, safety, the architecture guard, puzzle-table guard, convert and inspect."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from trmlab import load_checkpoint
from trmlab.cli import main as cli_main
from trmlab.config.loader import load_config
from trmlab.errors import CheckpointError, ConfigError
from trmlab.interop.convert import official_to_trmlab, trmlab_to_official
from trmlab.interop.inspect import format_inspection, inspect_checkpoint
from trmlab.interop.loading import check_puzzle_table, reconcile_architecture
from trmlab.interop.loading import load_checkpoint as load_full

SEQ_LEN = 36
FIXTURE_SET = ["arch.H_cycles=2", "arch.L_cycles=3", "arch.hidden_size=64", "arch.num_heads=4",
               "arch.puzzle_emb_ndim=64", "arch.halt_max_steps=4", "arch.forward_dtype=float32"]


def vectors(folder: Path):
    return np.load(folder / "vectors.npz")


def assert_matches_fixture(model, folder: Path) -> None:
    v = vectors(folder)
    steps = model.rollout(torch.from_numpy(v["inputs"]), torch.from_numpy(v["puzzle_identifiers"]))
    for n, step in enumerate(steps):
        assert (step["logits"] - torch.from_numpy(v[f"eval_logits_{n}"])).abs().max() < 1e-4
        assert torch.equal(step["preds"], torch.from_numpy(v[f"eval_preds_{n}"]))


def official_copy(folder: Path, tmp_path: Path, transform=None, with_config: bool = True) -> Path:
    """A copy of the fixture checkpoint in tmp_path, its state dict optionally transformed."""
    out = tmp_path / "run"
    out.mkdir()
    state = torch.load(folder / "step_100", weights_only=True)
    if transform is not None:
        state = transform(state)
    torch.save(state, out / "step_100")
    if with_config:
        shutil.copy(folder / "all_config.yaml", out / "all_config.yaml")
    return out / "step_100"


def test_load_official_fixture(official_trm_tiny):
    model = load_checkpoint(official_trm_tiny / "step_100", seq_len=SEQ_LEN)
    assert not model.training
    assert model.config.config.arch.L_cycles == 3
    assert "all_config.yaml" in model.config.provenance["arch.L_cycles"]
    assert_matches_fixture(model, official_trm_tiny)


@pytest.mark.parametrize("prefix", ["model.inner.", ""])
def test_other_key_prefixes_load(official_trm_tiny, tmp_path, prefix):
    def strip(state):
        return {prefix + k.removeprefix("_orig_mod.model.inner."): v for k, v in state.items()}

    path = official_copy(official_trm_tiny, tmp_path, strip)
    assert_matches_fixture(load_checkpoint(path, seq_len=SEQ_LEN), official_trm_tiny)


def test_without_all_config_the_architecture_must_be_named(official_trm_tiny, tmp_path):
    path = official_copy(official_trm_tiny, tmp_path, with_config=False)
    with pytest.raises(CheckpointError, match=r"no all_config\.yaml"):
        load_checkpoint(path, seq_len=SEQ_LEN)
    model = load_full(path, seq_len=SEQ_LEN, config=load_config(None, FIXTURE_SET))
    assert_matches_fixture(model, official_trm_tiny)


def test_seq_len_is_required_for_rope_models(official_trm_tiny):
    with pytest.raises(CheckpointError, match="seq_len"):
        load_checkpoint(official_trm_tiny / "step_100")


def test_l_cycles_conflict_shows_the_diff_table(official_trm_tiny):
    with pytest.raises(CheckpointError) as info:
        load_full(official_trm_tiny / "step_100", seq_len=SEQ_LEN,
                  config=load_config(None, ["arch.L_cycles=6"]))
    message = str(info.value)
    assert "| arch.L_cycles | ⚠ arch | 3 | **6** | ❌ |" in message
    assert "allow_arch_mismatch" in message
    # Values the user did not set come from the checkpoint without complaint.
    model = load_full(official_trm_tiny / "step_100", seq_len=SEQ_LEN, config=load_config(None, []))
    assert model.config.config.arch.hidden_size == 64


def test_explicit_opt_in_lets_the_user_value_win_and_records_it(official_trm_tiny):
    user = load_config(None, ["arch.L_cycles=6", "allow_arch_mismatch=true"])
    model = load_full(official_trm_tiny / "step_100", seq_len=SEQ_LEN, config=user)
    assert model.config.config.arch.L_cycles == 6
    assert "overrides checkpoint value 3" in model.config.provenance["arch.L_cycles"]
    merged = reconcile_architecture(model.config, load_config(None, ["arch.L_cycles=6"]), False, "x")
    assert merged.config.arch.L_cycles == 6  # agreeing values are no conflict


def test_shape_mismatch_names_the_tensor_and_both_shapes(official_trm_tiny, tmp_path):
    def shrink(state):
        key = "_orig_mod.model.inner.L_level.layers.1.mlp.down_proj.weight"
        state[key] = state[key][:, :128].clone()
        return state

    path = official_copy(official_trm_tiny, tmp_path, shrink)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, seq_len=SEQ_LEN)
    message = str(info.value)
    assert "L_level.layers.1.mlp.down_proj.weight" in message
    assert "[64, 128]" in message and "[64, 256]" in message


def test_unexpected_and_missing_keys_are_listed(official_trm_tiny, tmp_path):
    def extra(state):
        state["_orig_mod.model.inner.encoder.weight"] = torch.zeros(2)
        return state

    with pytest.raises(CheckpointError, match=r"encoder\.weight"):
        load_checkpoint(official_copy(official_trm_tiny, tmp_path, extra), seq_len=SEQ_LEN)

    def missing(state):
        del state["_orig_mod.model.inner.q_head.bias"]
        return state

    other = tmp_path / "other"
    other.mkdir()
    expected = r"missing tensors: core\.q_head\.bias \(official q_head\.bias\)"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(official_copy(official_trm_tiny, other, missing), seq_len=SEQ_LEN)


def test_truncated_and_garbage_files_give_one_clear_error(official_trm_tiny, tmp_path, capsys):
    data = (official_trm_tiny / "step_100").read_bytes()
    truncated = tmp_path / "step_1"
    truncated.write_bytes(data[: len(data) // 2])
    shutil.copy(official_trm_tiny / "all_config.yaml", tmp_path / "all_config.yaml")
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_checkpoint(truncated, seq_len=SEQ_LEN)
    garbage = tmp_path / "step_2"
    garbage.write_bytes(b"not a checkpoint at all" * 50)
    with pytest.raises(CheckpointError, match="step_2"):
        load_checkpoint(garbage, seq_len=SEQ_LEN)
    assert cli_main(["checkpoint", "inspect", str(truncated)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trmlab: error:") and "Traceback" not in err and len(err.strip().splitlines()) == 1


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("style", ["pickle", "torch.save"])
def test_malicious_pickle_is_refused_without_running(tmp_path, style):
    marker = tmp_path / "pwned"
    path = tmp_path / "step_1"
    payload = {"_orig_mod.model.inner.H_init": torch.zeros(2), "x": _Payload(str(marker))}
    if style == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        path.write_bytes(buffer.getvalue())
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path, seq_len=SEQ_LEN)
    assert not marker.exists(), "loading executed code from the pickle"


def test_dtype_override_is_recorded(official_trm_tiny):
    model = load_checkpoint(official_trm_tiny / "step_100", seq_len=SEQ_LEN, dtype=torch.bfloat16)
    assert "deliberate override" in model.provenance["arch.forward_dtype"]
    inputs = torch.zeros(1, SEQ_LEN, dtype=torch.int32)
    out = model.rollout(inputs, torch.zeros(1, dtype=torch.int32), steps=1)
    assert out[0]["logits"].dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with pytest.raises(ConfigError, match="dtype"):
        load_checkpoint(official_trm_tiny / "step_100", seq_len=SEQ_LEN, dtype="float16")


def test_puzzle_table_guard():
    table = torch.arange(12.0).view(4, 3)
    assert check_puzzle_table(table, 4) is table
    with pytest.raises(CheckpointError, match="4 rows but the dataset has 6"):
        check_puzzle_table(table, 6, "error", "ckpt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mean = check_puzzle_table(table, 6, "mean")
        zeros = check_puzzle_table(table, 6, "zeros")
    assert len(caught) == 2
    assert mean.shape == (6, 3) and torch.equal(mean[5], table.mean(0))
    assert zeros.abs().sum() == 0


def test_convert_round_trip_is_byte_identical(official_trm_tiny, tmp_path):
    bundle = official_to_trmlab(official_trm_tiny / "step_100", tmp_path / "trmlab" / "step_100")
    assert (bundle / "manifest.json").is_file()
    assert_matches_fixture(load_checkpoint(bundle, seq_len=SEQ_LEN), official_trm_tiny)
    back = trmlab_to_official(bundle, tmp_path / "official")
    original = torch.load(official_trm_tiny / "step_100", weights_only=True)
    again = torch.load(back, weights_only=True)
    assert list(original) == list(again)
    assert all(torch.equal(original[k], again[k]) and original[k].dtype == again[k].dtype for k in original)
    config_bytes = (official_trm_tiny / "all_config.yaml").read_bytes()
    assert (back.parent / "all_config.yaml").read_bytes() == config_bytes
    original_bytes = (official_trm_tiny / "step_100").read_bytes()
    resaved = tmp_path / "resave" / "step_100"
    resaved.parent.mkdir()
    torch.save(torch.load(official_trm_tiny / "step_100", weights_only=True), resaved)
    if resaved.read_bytes() != original_bytes:
        pytest.skip("this torch version serialises differently from the fixture's; tensors checked above")
    assert back.read_bytes() == original_bytes


def test_trmlab_trained_model_exports_to_the_official_layout(tmp_path):
    from trmlab.checkpoints import save_model_checkpoint
    from trmlab.config.official import read_official_all_config
    from trmlab.models import build_model

    resolved = load_config("tiny", ["arch.forward_dtype=bfloat16"])
    model = build_model(resolved, seq_len=10, vocab_size=12, num_puzzle_identifiers=5)
    ckpt = save_model_checkpoint(tmp_path / "step_7", model, config=resolved, step=7)
    out = trmlab_to_official(ckpt, tmp_path / "export")
    assert out.name == "step_7"
    state = torch.load(out, weights_only=True)
    assert next(iter(state)) == "_orig_mod.model.inner.H_init"
    assert state["_orig_mod.model.inner.H_init"].dtype == torch.bfloat16
    assert state["_orig_mod.model.inner.puzzle_emb.weights"].shape == (5, 32)
    official, _ = read_official_all_config(out.parent / "all_config.yaml")
    assert official.config.arch == resolved.config.arch
    reloaded = load_checkpoint(out, seq_len=10, dtype="float32")
    x, ids = torch.randint(0, 12, (2, 10), dtype=torch.int32), torch.tensor([1, 4], dtype=torch.int32)
    model.core.forward_dtype_override = torch.float32
    a, b = model.rollout(x, ids, steps=2), reloaded.rollout(x, ids, steps=2)
    assert torch.equal(a[-1]["logits"], b[-1]["logits"])


def test_inspect_reports_counts_architecture_and_inconsistencies(official_trm_tiny, tmp_path, capsys):
    report = inspect_checkpoint(official_trm_tiny / "step_100")
    assert report.parameters == 132_738 and report.table_entries == 640
    assert report.inferred["vocab_size"] == 12 and report.inferred["num_puzzle_identifiers"] == 10
    assert report.inconsistencies == [] and report.architecture["L_cycles"] == 3
    text = format_inspection(report)
    assert "_orig_mod.model.inner.L_level.layers.0.self_attn.qkv_proj.weight  [192, 64]" in text
    assert "parameters (trainable, puzzle table excluded): 132,738" in text

    bare = official_copy(official_trm_tiny, tmp_path, with_config=False)
    unknown = inspect_checkpoint(bare)
    assert unknown.architecture is None and "no all_config.yaml" in unknown.architecture_source
    assert "not checked" in format_inspection(unknown)
    narrow = [item for item in FIXTURE_SET if not item.startswith(("arch.hidden_size", "arch.puzzle_emb"))]
    wrong = inspect_checkpoint(bare, load_config(None, [*narrow, "arch.hidden_size=32",
                                                        "arch.puzzle_emb_ndim=32"]))
    assert any("embed_tokens.embedding_weight" in p and "[12, 32]" in p for p in wrong.inconsistencies)

    assert cli_main(["checkpoint", "inspect", str(bare), "arch.expansion=8", *FIXTURE_SET]) == 1
    assert "mlp.gate_up_proj.weight" in capsys.readouterr().out


def test_cli_convert_both_ways(official_trm_tiny, tmp_path, capsys):
    dst = tmp_path / "ck" / "step_100"
    src = str(official_trm_tiny / "step_100")
    assert cli_main(["checkpoint", "convert", src, str(dst), "to=trmlab"]) == 0
    assert cli_main(["checkpoint", "inspect", str(dst)]) == 0
    assert "checksums: every file matches" in capsys.readouterr().out
    assert cli_main(["checkpoint", "convert", str(dst), str(tmp_path / "off"), "to=official"]) == 0
    exported = torch.load(tmp_path / "off" / "step_100", weights_only=True)
    original = torch.load(official_trm_tiny / "step_100", weights_only=True)
    assert list(exported) == list(original) and all(torch.equal(exported[k], original[k]) for k in original)
    assert cli_main(["checkpoint", "convert", str(dst), str(tmp_path / "off"), "to=official"]) == 2
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")], "temporary output left behind"


def test_fit_puzzle_table_on_a_loaded_model(official_trm_tiny):
    from trmlab.interop.loading import fit_puzzle_table

    model = load_checkpoint(official_trm_tiny / "step_100", seq_len=SEQ_LEN)
    fit_puzzle_table(model, 10)  # matching dataset: untouched
    assert model.provenance == {}
    with pytest.raises(CheckpointError, match="10 rows but the dataset has 12"):
        fit_puzzle_table(model, 12, "error", "step_100")
    with pytest.warns(UserWarning, match="re-initialised"):
        fit_puzzle_table(model, 12, "mean", "step_100")
    assert model.puzzle_embedding.weights.shape == (12, 64)
    assert "re-initialised (mean)" in model.provenance["puzzle_embedding"]
    model.rollout(torch.zeros(1, SEQ_LEN, dtype=torch.int32), torch.tensor([11], dtype=torch.int32), steps=1)


def test_auto_dtype_model_exports_as_bfloat16_losslessly(tmp_path):
    from trmlab.checkpoints import save_model_checkpoint
    from trmlab.models import build_model

    resolved = load_config("tiny", ["arch.forward_dtype=auto"])
    model = build_model(resolved, seq_len=10, vocab_size=12, num_puzzle_identifiers=5)
    assert model.core.h_init.dtype == torch.float32  # CPU build; values exact in bf16
    ckpt = save_model_checkpoint(tmp_path / "step_1", model, config=resolved, step=1)
    out = trmlab_to_official(ckpt, tmp_path / "export")
    state = torch.load(out, weights_only=True)
    assert state["_orig_mod.model.inner.H_init"].dtype == torch.bfloat16
    assert torch.equal(state["_orig_mod.model.inner.H_init"].float(), model.core.h_init)
    assert "forward_dtype: bfloat16" in (out.parent / "all_config.yaml").read_text()


def test_code_shipped_beside_a_checkpoint_is_never_imported(official_trm_tiny, tmp_path):
    path = official_copy(official_trm_tiny, tmp_path)
    marker = tmp_path / "imported"
    for name in ("trm.py", "losses.py"):
        (path.parent / name).write_text(f"open({str(marker)!r}, 'w').close()\n")
    assert_matches_fixture(load_checkpoint(path, seq_len=SEQ_LEN), official_trm_tiny)
    report = inspect_checkpoint(path)
    assert any("trm.py" in note and "never imported" in note for note in report.notes)
    official_to_trmlab(path, tmp_path / "converted")
    assert not marker.exists()


def test_inspect_reports_a_conflicting_user_config(official_trm_tiny, capsys):
    report = inspect_checkpoint(official_trm_tiny / "step_100", load_config(None, ["arch.L_cycles=6"]))
    assert report.architecture["L_cycles"] == 3
    assert len(report.inconsistencies) == 1 and "| arch.L_cycles |" in report.inconsistencies[0]
    assert cli_main(["checkpoint", "inspect", str(official_trm_tiny / "step_100"), "arch.L_cycles=6"]) == 1


def test_bfloat16_checkpoint_on_cpu_warns_unless_dtype_is_given(tmp_path):
    from trmlab.checkpoints import save_model_checkpoint
    from trmlab.models import build_model

    resolved = load_config("tiny", ["arch.forward_dtype=bfloat16"])
    model = build_model(resolved, seq_len=10, vocab_size=12, num_puzzle_identifiers=5)
    ckpt = save_model_checkpoint(tmp_path / "step_1", model, config=resolved, step=1)
    with pytest.warns(UserWarning, match="bfloat16"):
        load_checkpoint(ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_checkpoint(ckpt, dtype="float32").forward_dtype == torch.float32


@pytest.mark.parametrize("opt_in", [[], ["allow_arch_mismatch=true"]])
def test_a_shape_changing_setting_is_refused_without_suggesting_the_opt_in(official_trm_tiny, opt_in):
    user = load_config(None, ["arch.hidden_size=32", "arch.num_heads=2", *opt_in])
    with pytest.raises(CheckpointError) as info:
        load_full(official_trm_tiny / "step_100", seq_len=SEQ_LEN, config=user)
    message = str(info.value)
    assert "arch.hidden_size=32 (checkpoint: 64)" in message
    assert "changes tensor shapes (" in message and "[64, 64] → [32, 32]" in message
    assert "allow_arch_mismatch only covers values that keep every shape" in message
    assert "set allow_arch_mismatch=true" not in message and "\n" not in message


def test_inspect_exits_non_zero_when_a_checksum_fails(official_trm_tiny, tmp_path, capsys):
    dst = tmp_path / "ck" / "step_100"
    src = str(official_trm_tiny / "step_100")
    assert cli_main(["checkpoint", "convert", src, str(dst), "to=trmlab"]) == 0
    capsys.readouterr()
    with open(dst / "model.safetensors", "r+b") as f:  # flip one byte of the weights
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    assert cli_main(["checkpoint", "inspect", str(dst)]) == 1
    out = capsys.readouterr().out
    assert "CHECKSUM PROBLEM" in out and "model.safetensors does not match its sha256" in out
