"""ETRM research-code checkpoints end to end: convert (byte-identical round trip), inspect, config diff, eval
(trmlab's evaluator beside the research evaluator's denominator) and init_from (with the L_cycles guard).

The checkpoint is the shared research fixture (``research_etrm_small``: 6×6 canvas, 4 demo slots, hidden 64);
the dataset is a tiny encoder-layout build of hand-made tasks on the same canvas.
"""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from research_cases import CASES, GENERATED, build_checkpoint
from trmlab.cli import main
from trmlab.config.diff import research_drift
from trmlab.data.build_arc import BuildOptions, build_arc
from trmlab.errors import CheckpointError
from trmlab.evaluation.arc import ArcResult
from trmlab.evaluation.scoring import research_evaluator_figures


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # conftest restores the thread count


def _task(seed: int, demos: int, queries: int = 1) -> dict:
    """Outputs = inputs with colours shifted by one; 2×3 grids fit the 6×6 canvas with their EOS."""
    rng = np.random.default_rng(seed)

    def pair() -> dict:
        grid = rng.integers(1, 9, size=(2, 3))
        return {"input": grid.tolist(), "output": ((grid + 1) % 10).tolist()}

    return {"train": [pair() for _ in range(demos)], "test": [pair() for _ in range(queries)]}


@pytest.fixture
def encoder_dataset(tmp_path: Path) -> Path:
    """An encoder-layout dataset on a 6×6 canvas (seq_len 36, as the fixture): 2 training and 2 evaluation
    tasks (one augmentation each), at most 4 demos (the fixture's max_demos)."""
    subsets = {"training": {"t0": _task(0, 2, queries=2), "t1": _task(1, 3, queries=2)},
               "evaluation": {"e0": _task(2, 3), "e1": _task(3, 4)}}
    folder = tmp_path / "json"
    folder.mkdir()
    for subset, tasks in subsets.items():
        challenges = {tid: {"train": t["train"], "test": [{"input": p["input"]} for p in t["test"]]}
                      for tid, t in tasks.items()}
        (folder / f"x_{subset}_challenges.json").write_text(json.dumps(challenges))
        solutions = {tid: [p["output"] for p in t["test"]] for tid, t in tasks.items()}
        (folder / f"x_{subset}_solutions.json").write_text(json.dumps(solutions))
    out = tmp_path / "data"
    build_arc(BuildOptions(output_dir=str(out), input_file_prefix=str(folder / "x"),
                           subsets=["training", "evaluation"], num_aug=1, canvas=6, layout="encoder"),
              log=lambda *_: None)
    return out


# ------------------------------------------------------------------------------------------------ convert


@pytest.mark.parametrize("case", ["shared", *CASES])
def test_convert_round_trip_is_byte_identical(case, research_etrm_small, tmp_path, capsys):
    source = research_etrm_small / "step_0" if case == "shared" else build_checkpoint(case, tmp_path / case)
    folder = research_etrm_small if case == "shared" else GENERATED / case
    seq_len = str(np.load(folder / "vectors.npz")["inputs"].shape[1])
    bundle = tmp_path / "bundle" / "step_0"
    assert main(["checkpoint", "convert", str(source), str(bundle), "to=trmlab",
                 f"seq_len={seq_len}"]) == 0
    assert main(["checkpoint", "convert", str(bundle), str(tmp_path / "back"), "to=research"]) == 0
    assert filecmp.cmp(source, tmp_path / "back" / "step_0", shallow=False)  # cmp: same bytes
    assert filecmp.cmp(folder / "all_config.yaml", tmp_path / "back" / "all_config.yaml", shallow=False)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["source"]["format"] == "research"
    assert "wrote" in capsys.readouterr().out


def test_a_research_model_trained_in_trmlab_exports_to_the_research_layout(research_etrm_small, tmp_path):
    """Without a recorded layout (a bundle trmlab wrote), export uses the key table and a generated
    all_config.yaml; the research file it writes loads back to the same numbers."""
    import trmlab
    from trmlab.checkpoints.bundle import save_model_checkpoint

    model = trmlab.load_checkpoint(research_etrm_small / "step_0", seq_len=36)
    bundle = save_model_checkpoint(tmp_path / "run" / "step_7", model, config=model.config, step=7)
    out = main(["checkpoint", "convert", str(bundle), str(tmp_path / "research"), "to=official"])
    assert out == 0
    again = trmlab.load_checkpoint(tmp_path / "research" / "step_7", seq_len=36)
    assert again.config.config.arch.encoder_numerics == "research"
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    original = torch.load(research_etrm_small / "step_0", weights_only=True)
    exported = torch.load(tmp_path / "research" / "step_7", weights_only=True)
    assert set(exported) == set(original)


def test_a_trmlab_numerics_etrm_is_not_exported_to_the_research_layout(tmp_path):
    from trmlab.checkpoints.bundle import save_model_checkpoint
    from trmlab.config import load_config
    from trmlab.models import build_model

    resolved = load_config(None, ["arch.name=etrm", "arch.puzzle_emb_ndim=0", "arch.hidden_size=16",
                                  "arch.num_heads=2", "arch.puzzle_emb_len=2"])
    model = build_model(resolved, seq_len=9, vocab_size=12, num_puzzle_identifiers=1)
    bundle = save_model_checkpoint(tmp_path / "step_1", model, config=resolved, step=1)
    with pytest.raises(CheckpointError, match="trmlab's own encoder numerics"):
        from trmlab.interop.convert import trmlab_to_official

        trmlab_to_official(bundle, tmp_path / "out")


# ------------------------------------------------------------------------------------------ inspect, diff


def test_inspect_maps_research_keys_and_says_what_differs(research_etrm_small, capsys):
    assert main(["checkpoint", "inspect", str(research_etrm_small / "step_0"), "seq_len=36"]) == 0
    out = capsys.readouterr().out
    assert "research torch.save state dict (key prefix '_orig_mod.model.')" in out
    assert "_orig_mod.model.encoder.set_encoder.query_tokens" in out
    assert "encoder_numerics: research" in out and "inconsistencies: none" in out
    assert "zero context instead of the research code's NaN" in out
    assert "drift: arch.L_cycles: 3 here, 6 in etrm-arc1" in out
    assert "detached the recurrent encoder" not in out  # an ETRM, not an ETRMTRM


def test_inspect_of_an_etrmtrm_says_training_differs_on_purpose(tmp_path, capsys):
    path = build_checkpoint("etrmtrm-recurrent-standard", tmp_path / "etrmtrm")
    assert main(["checkpoint", "inspect", str(path), "seq_len=36"]) == 0
    out = capsys.readouterr().out
    assert "training differs from the research code on purpose" in out and "detached" in out


def test_config_diff_shows_the_drift_of_the_research_runs(research_etrm_small, tmp_path, capsys):
    """A research final-run config (etrm-reference §7: L_cycles 6, exploration 0.5, batch 256, pretrained
    decoder) against the pinned trmlab presets."""
    text = (research_etrm_small / "all_config.yaml").read_text()
    for old, new in (("L_cycles: 3", "L_cycles: 6"), ("global_batch_size: 3", "global_batch_size: 256"),
                     ("halt_exploration_prob: 0.0", "halt_exploration_prob: 0.5")):
        assert old in text
        text = text.replace(old, new)
    research = tmp_path / "all_config.yaml"
    research.write_text(text + "load_pretrained_decoder: arc_v1_public/step_518071\n")
    assert main(["config", "diff", "etrm-arc1", "etrm-arc1-frozen-decoder", str(research)]) == 1
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[3:6]]
            for line in out.splitlines() if line.startswith("| ")}
    assert rows["arch.L_cycles"] == ["6", "**4**", "6"]
    assert rows["arch.halt_exploration_prob"] == ["0.1", "0.1", "**0.5**"]
    assert rows["global_batch_size"] == ["384", "**256**", "**256**"]
    assert rows["arch.encoder_numerics"] == ["trmlab", "trmlab", "**research**"]
    assert rows["init_from"][2] == "**arc_v1_public/step_518071**"
    assert "Known drift of the ETRM research runs" in out
    assert "- arch.L_cycles: the released TRM decoder was trained with 4" in out
    # The same facts as a list, against the from-scratch preset (L_cycles 6 there: no drift line for it).
    from trmlab.config.official import read_official_all_config

    lines = research_drift(read_official_all_config(research)[0].config)
    assert [line.split(":")[0] for line in lines] == ["arch.halt_exploration_prob", "global_batch_size",
                                                      "grad_clip_norm"]


# ------------------------------------------------------------------------------------------------ eval


def test_research_evaluator_figures_divide_by_every_task():
    result = ArcResult(metrics={"ARC/pass@1": 0.5, "ARC/pass@2": 0.75}, counts={"tasks": 32}, per_task={},
                       pairs=[], pass_ks=(1, 2))
    figures = research_evaluator_figures(result, 400)
    assert figures == {"denominator": 400, "tasks_evaluated": 32,
                       "metrics": {"ARC/pass@1": 0.5 * 32 / 400, "ARC/pass@2": 0.75 * 32 / 400}}


def test_eval_scores_a_research_checkpoint_beside_the_research_denominator(research_etrm_small,
                                                                          encoder_dataset, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", str(research_etrm_small / "step_0"), str(encoder_dataset), f"out={out}",
                 "global_batch_size=4", "device=cpu", "max_tasks=1"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"]["tasks"] == 1  # the right denominator: the tasks evaluated
    research = metrics["research_evaluator"]
    assert (research["denominator"], research["tasks_evaluated"]) == (2, 1)
    assert research["metrics"] == {k: v / 2 for k, v in metrics.items() if k.startswith("ARC/pass@")}
    assert "÷ 2 tasks instead of the 1 evaluated" in printed
    # The predictions are the research model's: the final rollout step on the dataset's first query.
    import trmlab
    from trmlab.evaluation.outputs import load_raw_predictions

    raw = load_raw_predictions(out / "raw_predictions.npz")
    arrays = {k: np.load(encoder_dataset / "test" / f"all__{k}.npy")
              for k in ("inputs", "labels", "puzzle_indices", "num_demos")}
    start, count = int(arrays["puzzle_indices"][0]), int(arrays["num_demos"][0])  # puzzle 0: demos, query
    demo_inputs, demo_labels = np.zeros((2, 1, 4, 36), np.int32)
    demo_inputs[0, :count] = arrays["inputs"][start:start + count]
    demo_labels[0, :count] = arrays["labels"][start:start + count]
    model = trmlab.load_checkpoint(research_etrm_small / "step_0", seq_len=36)
    query = torch.from_numpy(arrays["inputs"][start + count:start + count + 1].astype(np.int32))
    steps = model.rollout(query, torch.zeros(1, dtype=torch.int32), demo_inputs=torch.from_numpy(demo_inputs),
                          demo_labels=torch.from_numpy(demo_labels), demo_mask=torch.arange(4)[None] < count)
    assert np.array_equal(raw.inputs[0], query[0].numpy())
    assert np.array_equal(raw.preds[0], steps[-1]["preds"][0].numpy())


# --------------------------------------------------------------------------------------------- init_from


def _trainer(data: Path, run_dir: Path, *overrides: str):
    from trmlab.config import load_config
    from trmlab.training.loop import Trainer

    resolved = load_config(None, [f"data_paths=[{data}]", f"run_dir={run_dir}", "device=cpu", "max_steps=2",
                                  "global_batch_size=3", "eval_interval=null", "lr_warmup_steps=0",
                                  "max_demos=4", *overrides])
    return Trainer(resolved, progress=False, evaluate=lambda trainer, step: {})


def test_init_from_a_research_checkpoint_continues_training(research_etrm_small, encoder_dataset, tmp_path):
    import trmlab

    source = research_etrm_small / "step_0"
    trainer = _trainer(encoder_dataset, tmp_path / "run", f"init_from={source}")
    arch = trainer.config.arch
    assert (arch.name, arch.encoder_numerics, arch.L_cycles, arch.hidden_size) == ("etrm", "research", 3, 64)
    expected = trmlab.load_checkpoint(source, seq_len=36).state_dict()
    state = trainer.model.state_dict()
    assert set(state) == set(expected)
    assert all(torch.equal(state[key], value) for key, value in expected.items())
    assert trainer.init_report["loaded"] == len(expected) and not trainer.init_report["missing"]
    trainer.run()
    assert trainer.step == 2


def test_init_from_a_research_checkpoint_keeps_the_l_cycles_guard(research_etrm_small, encoder_dataset,
                                                                  tmp_path):
    with pytest.raises(CheckpointError, match="L_cycles"):
        _trainer(encoder_dataset, tmp_path / "run", f"init_from={research_etrm_small / 'step_0'}",
                 "arch.L_cycles=6")
