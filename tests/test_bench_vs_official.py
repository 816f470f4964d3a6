"""bench_vs_official runs end to end on CPU at a tiny shape.

CI has no copy of the official repository, so the test hands the benchmark a stand-in package with the
official module paths and call signatures (``models.recursive_reasoning.trm``, ``models.losses``), built on
trmlab's own model with the official key names. It checks the harness (weight transfer through the key map,
the first-step comparison, alternating rounds, the ratio table), not the official numerics
(tests/test_model.py does that).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

STAND_IN_TRM = '''
from types import SimpleNamespace

import torch

from trmlab.config.loader import load_config
from trmlab.interop.official_keys import canonical_to_official, strip_official
from trmlab.models import build_model

ARCH_KEYS = ("hidden_size", "num_heads", "H_cycles", "L_cycles", "L_layers", "expansion", "puzzle_emb_ndim",
             "puzzle_emb_len", "pos_encodings", "halt_max_steps", "halt_exploration_prob", "forward_dtype",
             "no_ACT_continue", "mlp_t")


class Inner(torch.nn.Module):
    """Holds trmlab's model; its state dict speaks the official key names."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def state_dict(self, *args, **kwargs):
        return {canonical_to_official(k): v for k, v in self.model.state_dict(*args, **kwargs).items()}

    def load_state_dict(self, state, strict=True):
        return self.model.load_state_dict(strip_official(state, "stand-in"), strict=strict)


class TinyRecursiveReasoningModel_ACTV1(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        overrides = [f"arch.{k}={str(config[k]).lower() if isinstance(config[k], bool) else config[k]}"
                     for k in ARCH_KEYS]
        model = build_model(load_config("tiny", overrides), seq_len=config["seq_len"],
                            vocab_size=config["vocab_size"],
                            num_puzzle_identifiers=config["num_puzzle_identifiers"])
        self.inner = Inner(model)
        self.config = SimpleNamespace(**config)

    def initial_carry(self, batch):
        carry = self.inner.model.initial_carry(batch)
        return SimpleNamespace(inner_carry=carry, steps=carry.steps, halted=carry.halted,
                               current_data=carry.current_data)

    def forward(self, carry, batch):
        inner = carry.inner_carry
        inner.z_H, inner.z_L, inner.steps, inner.halted = (carry.inner_carry.z_H, carry.inner_carry.z_L,
                                                           carry.steps, carry.halted)
        inner.current_data = carry.current_data
        new, out = self.inner.model(inner, batch)
        return SimpleNamespace(inner_carry=new, steps=new.steps, halted=new.halted,
                               current_data=new.current_data), out
'''

STAND_IN_LOSSES = '''
import torch

from trmlab.models.losses import act_loss


class ACTLossHead(torch.nn.Module):
    def __init__(self, model, loss_type):
        super().__init__()
        self.model, self.loss_type = model, loss_type

    def initial_carry(self, batch):
        return self.model.initial_carry(batch)

    def forward(self, return_keys, carry, batch):
        carry, out = self.model(carry, batch)
        loss, metrics = act_loss(out, self.loss_type)
        return carry, loss, metrics, {k: out[k] for k in return_keys if k in out}, carry.halted.all()
'''


@pytest.fixture
def stand_in_official(tmp_path: Path):
    package = tmp_path / "official" / "models"
    (package / "recursive_reasoning").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "recursive_reasoning" / "__init__.py").write_text("")
    (package / "recursive_reasoning" / "trm.py").write_text(textwrap.dedent(STAND_IN_TRM))
    (package / "losses.py").write_text(textwrap.dedent(STAND_IN_LOSSES))
    saved_path, saved_modules = list(sys.path), dict(sys.modules)
    yield tmp_path / "official"
    sys.path[:] = saved_path
    for name in set(sys.modules) - set(saved_modules):
        if name == "models" or name.startswith("models.") or name == "bench_vs_official":
            del sys.modules[name]


def test_bench_vs_official_runs_and_reports_ratios(stand_in_official: Path, capsys) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_vs_official

    args = bench_vs_official.parse_args([
        "--official", str(stand_in_official), "--shape", "tiny", "--batch", "2", "--rounds", "2",
        "--train-steps", "1", "--halt-max-steps", "2", "--threads", "1", "--clock", "cpu"])
    ratios = bench_vs_official.run(args)
    printed = capsys.readouterr().out
    assert "first ACT step: max |logits official - trmlab| = 0; max |gradient official - trmlab| after one " \
        "training step = 0" in printed  # same weights, same model
    assert set(ratios) == {"train", "eval"}
    assert all(r > 0 for r in ratios.values())
    assert printed.count("| 2 |") == 2  # two rounds of each part


def test_bench_vs_official_numerics_table(stand_in_official: Path, capsys) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_vs_official

    args = bench_vs_official.parse_args([
        "--official", str(stand_in_official), "--shape", "tiny", "--batch", "2", "--halt-max-steps", "2",
        "--dtype", "bfloat16", "--numerics", "--threads", "1"])
    results = bench_vs_official.compare_numerics(args)
    # The stand-in is trmlab's own model: bf16 must differ from fp32, and trmlab from it not at all.
    assert results["official bfloat16 vs official float32"][0] > 0
    assert results["trmlab vs official (bfloat16)"] == (0.0, 0.0)
    assert "| trmlab vs official (bfloat16) | 0 | 0.00% |" in capsys.readouterr().out


def test_bench_vs_official_trace_ops_lists_differing_calls(stand_in_official: Path, capsys,
                                                            monkeypatch) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_vs_official

    args = bench_vs_official.parse_args([
        "--official", str(stand_in_official), "--shape", "tiny", "--batch", "2", "--trace-ops"])
    only_official, only_ours = bench_vs_official.trace_ops(args)
    assert not only_official and not only_ours  # the stand-in runs trmlab's own model: the same calls
    assert "identical" in capsys.readouterr().out
    # A model that computes one thing differently shows up with the op and its arguments.
    build = bench_vs_official.build_official

    def official_with_a_float64_head(*a, **k):
        model, head = build(*a, **k)
        lm_head = model.inner.model.core.lm_head
        lm_head.forward = lambda x: torch.nn.functional.linear(x.double(), lm_head.weight.double()).float()
        return model, head

    monkeypatch.setattr(bench_vs_official, "build_official", official_with_a_float64_head)
    only_official, only_ours = bench_vs_official.trace_ops(args)
    assert any(call.startswith("mm") and "float64" in call for call in only_official)
    assert any(call.startswith("mm") and "float32" in call for call in only_ours)
    assert "differing calls" in capsys.readouterr().out
