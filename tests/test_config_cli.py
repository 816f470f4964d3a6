"""`trmlab config show` / `config diff`, the official all_config.yaml mapping, and the diff helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from trmlab.cli import main
from trmlab.config import (
    arch_diff,
    diff_table,
    format_diff_table,
    load_config,
    load_resolved,
    read_official_all_config,
    save_resolved,
    walkthrough,
)
from trmlab.errors import ConfigError

Capture = pytest.CaptureFixture[str]


def _run(capsys: Capture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _table_rows(markdown: str) -> dict[str, list[str]]:
    """Parameter → cells of the data rows of a markdown diff table."""
    rows = {}
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] not in ("parameter", "---"):
            rows[cells[0]] = cells[1:]
    return rows


# ------------------------------------------------------------------------------------------- diff


def test_diff_released_vs_repo_default_is_exactly_l_cycles_and_ema(capsys: Capture) -> None:
    code, out, _ = _run(capsys, "config", "diff", "trm-arc1", "trm-arc1-repo-default")
    assert code == 1
    rows = _table_rows(out)
    assert set(rows) == {"arch.L_cycles", "ema"}
    assert rows["arch.L_cycles"] == ["⚠ arch", "4", "**6**", "❌"]
    assert rows["ema"] == ["setting", "true", "**false**", "❌"]
    assert "| parameter | kind | trm-arc1 | trm-arc1-repo-default | match |" in out


def test_diff_of_equal_sources_exits_zero(capsys: Capture) -> None:
    code, out, _ = _run(capsys, "config", "diff", "trm-arc1", "trm-arc1")
    assert code == 0 and "All sources agree" in out and _table_rows(out) == {}


def test_diff_all_rows_and_json(capsys: Capture) -> None:
    code, out, _ = _run(capsys, "config", "diff", "trm-arc1", "trm-arc1-repo-default", "--all")
    assert code == 1
    rows = _table_rows(out)
    assert rows["arch.H_cycles"] == ["⚠ arch", "3", "3", "✅"] and "description" not in rows
    code, out, _ = _run(capsys, "config", "diff", "trm-arc1", "trm-arc1-repo-default", "format=json")
    document = json.loads(out)
    assert code == 1 and document["differ"] is True
    assert document["sources"] == ["trm-arc1", "trm-arc1-repo-default"]
    assert [(r["key"], r["values"], r["arch"]) for r in document["rows"]] == \
        [("arch.L_cycles", [4, 6], True), ("ema", [True, False], False)]


def test_diff_three_sources_marks_values_against_the_first(capsys: Capture) -> None:
    code, out, _ = _run(capsys, "config", "diff", "trm-arc1", "trm-arc1-repo-default", "etrm-arc1")
    rows = _table_rows(out)
    assert code == 1
    assert rows["arch.L_cycles"][1:4] == ["4", "**6**", "**6**"]
    assert rows["arch.name"][1:4] == ["trm", "trm", "**etrm**"]
    assert rows["global_batch_size"][1:4] == ["768", "768", "**384**"]


def test_diff_against_official_all_config(capsys: Capture, official_trm_tiny: Path) -> None:
    official = str(official_trm_tiny / "all_config.yaml")
    code, out, _ = _run(capsys, "config", "diff", "tiny", official)
    assert code == 1
    rows = _table_rows(out)
    assert rows["arch.hidden_size"] == ["⚠ arch", "32", "**64**", "❌"]
    assert rows["arch.L_cycles"] == ["⚠ arch", "2", "**3**", "❌"]
    assert rows["arch.num_heads"] == ["⚠ arch", "2", "**4**", "❌"]
    assert rows["arch.puzzle_emb_len"] == ["⚠ arch", "2", "**16**", "❌"]
    assert "arch.H_cycles" not in rows and "arch.halt_max_steps" not in rows  # both 2 and 4
    # Official keys trmlab does not know are reported below the table, not dropped.
    assert f"Keys in {official} that trmlab does not use" in out
    for key in ("checkpoint_every_eval", "checkpoint_path", "evaluators", "load_checkpoint"):
        assert f"- `{key}`" in out
    assert "- `freeze_weights`" not in out  # the same key in trmlab (train only the puzzle table)
    # The checkpoint folder (and the checkpoint file beside all_config.yaml) work as sources too.
    code, folder_out, _ = _run(capsys, "config", "diff", official, str(official_trm_tiny))
    assert code == 0 and "All sources agree" in folder_out
    code, _, _ = _run(capsys, "config", "diff", official, str(official_trm_tiny / "step_100"))
    assert code == 0


def test_diff_run_directory_and_override_file(capsys: Capture, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    save_resolved(load_config("tiny", ["arch.L_cycles=3"]), run / "config.yaml")
    overrides = tmp_path / "over.yaml"
    overrides.write_text("arch.hidden_size: 64\narch.num_heads: 4\n")
    code, out, _ = _run(capsys, "config", "diff", "tiny", str(run), str(overrides))
    rows = _table_rows(out)
    assert code == 1
    assert rows["arch.L_cycles"][1:4] == ["2", "**3**", "**4**"]  # the override file sits on the defaults
    assert rows["arch.hidden_size"][1:4] == ["32", "32", "**64**"]


def test_diff_errors_exit_two(capsys: Capture, tmp_path: Path) -> None:
    code, _, err = _run(capsys, "config", "diff", "trm-arc1", "no-such-preset")
    assert code == 2 and "'no-such-preset' is neither a preset" in err
    code, _, err = _run(capsys, "config", "diff", "trm-arc1")
    assert code == 2 and "at least two sources" in err
    code, _, err = _run(capsys, "config", "diff", "trm-arc1", str(tmp_path))
    assert code == 2 and "holds neither config.yaml" in err


def test_official_mapping_reads_every_value(official_trm_tiny: Path) -> None:
    resolved, unknown = read_official_all_config(official_trm_tiny / "all_config.yaml")
    arch, config = resolved.config.arch, resolved.config
    assert (arch.name, arch.forward_dtype, arch.hidden_size, arch.num_heads) == ("trm", "float32", 64, 4)
    assert (arch.H_cycles, arch.L_cycles, arch.halt_max_steps, arch.puzzle_emb_ndim) == (2, 3, 4, 64)
    assert (arch.puzzle_emb_len, arch.loss_type, arch.halt_exploration_prob) == \
        (16, "stablemax_cross_entropy", 0.0)
    assert (config.global_batch_size, config.lr, config.ema, config.data_paths) == \
        (4, 1e-4, True, ["data/arc1concept-aug-1000"])
    assert set(unknown) == {"checkpoint_every_eval", "checkpoint_path", "evaluators", "load_checkpoint"}
    assert config.freeze_weights is False
    assert unknown["evaluators"] == [{"name": "arc@ARC"}]
    path = official_trm_tiny / "all_config.yaml"
    assert resolved.provenance["arch.hidden_size"].startswith(f"official {path}:")
    assert resolved.provenance["arch.rope_theta"] == f"official class default (not in {path})"


def _official(tmp_path: Path, **changes: object) -> Path:
    data = {"arch": {"name": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
                     "loss": {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"},
                     "H_cycles": 3, "L_cycles": 4, "H_layers": 0, "L_layers": 2, "hidden_size": 512,
                     "num_heads": 8, "expansion": 4, "pos_encodings": "rope", "halt_max_steps": 16,
                     "halt_exploration_prob": 0.1, "puzzle_emb_ndim": 512, "forward_dtype": "bfloat16"},
            "lr": 1e-4, "global_batch_size": 768, "ema": True}
    for key, value in changes.items():
        section, _, leaf = key.rpartition("__")
        (data[section] if section else data)[leaf] = value
    path = tmp_path / "all_config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_official_layout_edge_cases(tmp_path: Path) -> None:
    resolved, unknown = read_official_all_config(_official(tmp_path, arch__causal=False, arch__kl_weight=0.1))
    assert unknown == {"arch.causal": False, "arch.kl_weight": 0.1}  # ignored officially, reported here
    assert resolved.config.arch.L_cycles == 4
    with pytest.raises(ConfigError, match="not a model trmlab implements"):
        read_official_all_config(_official(tmp_path, arch__name="models.other@Something"))
    path = _official(tmp_path)
    text = path.read_text().replace("  L_cycles: 4\n", "")
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"lacks arch\.L_cycles"):
        read_official_all_config(path)


def test_official_default_puzzle_emb_ndim_is_the_class_default(tmp_path: Path) -> None:
    path = _official(tmp_path)
    path.write_text(path.read_text().replace("  puzzle_emb_ndim: 512\n", ""))
    resolved, _ = read_official_all_config(path)
    assert resolved.config.arch.puzzle_emb_ndim == 0  # official class default, not trmlab's 512


# ------------------------------------------------------------------------------------------- helpers


def test_arch_diff_and_named_table() -> None:
    released = load_config("trm-arc1").config
    repo = load_config("trm-arc1-repo-default").config
    assert arch_diff(released, repo) == [("arch.L_cycles", 4, 6)]
    assert arch_diff(released, released) == []
    table = format_diff_table({"checkpoint runs/x/step_5": released, "command line": repo})
    assert "| parameter | kind | checkpoint runs/x/step_5 | command line | match |" in table
    assert [row.key for row in diff_table([("a", released), ("b", repo)])] == ["arch.L_cycles", "ema"]
    with pytest.raises(ConfigError, match="at least two sources"):
        diff_table([("a", released)])


# ------------------------------------------------------------------------------------------- show


def test_show_text_lists_values_sources_and_arch_marks(capsys: Capture) -> None:
    code, out, _ = _run(capsys, "config", "show", "trm-arc1", "arch.L_cycles=6", "lr=3e-4")
    assert code == 0
    lines = {line.split()[1] if line.startswith("*") else line.split()[0]: line
             for line in out.splitlines()[4:] if line.strip()}
    assert lines["arch.L_cycles"].startswith("* ") and lines["arch.L_cycles"].endswith("command line")
    assert lines["lr"].split()[1] == "0.0003" and not lines["lr"].startswith("*")
    assert "preset trm-arc1 (trm-arc1.yaml:" in lines["arch.H_cycles"]
    assert out.startswith("# trm-arc1: TRM on ARC-AGI-1")


def test_show_yaml_round_trips_through_load_resolved(capsys: Capture, tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("seed: 5\n")
    code, out, _ = _run(capsys, "config", "show", "tiny", "ema=false", f"config={extra}",
                        "format=yaml")
    assert code == 0
    path = tmp_path / "config.yaml"
    path.write_text(out)
    loaded = load_resolved(path)
    assert loaded.config == load_config("tiny", ["ema=false"], [extra]).config
    assert loaded.provenance["seed"] == f"file {extra}:1"
    code, out, _ = _run(capsys, "config", "show", "tiny", "format=json")
    assert json.loads(out)["config"]["arch"]["hidden_size"] == 32


def test_show_other_sources_with_overrides(capsys: Capture, official_trm_tiny: Path) -> None:
    code, out, _ = _run(capsys, "config", "show", str(official_trm_tiny), "arch.L_cycles=4")
    assert code == 0 and "keys trmlab does not use" in out and "checkpoint_path" in out
    code, out, _ = _run(capsys, "config", "show", "lr=3e-4")  # overrides on the schema defaults
    assert code == 0 and out.startswith("# schema defaults")


def test_show_errors_exit_two_with_one_message(capsys: Capture) -> None:
    code, out, err = _run(capsys, "config", "show", "trm-arc1", "arch.halt_exploraton_prob=0.5")
    assert code == 2 and out == ""
    assert err.startswith("trmlab: error: trmlab config show: unknown key 'arch.halt_exploraton_prob' "
                          "(command line): did you mean arch.halt_exploration_prob?")
    assert "Traceback" not in err


def test_walkthrough_shows_show_and_diff() -> None:
    text = walkthrough()
    assert "$ trmlab config show trm-arc1" in text
    assert "$ trmlab config diff trm-arc1 trm-arc1-repo-default" in text
    assert set(_table_rows(text)) == {"arch.L_cycles", "ema"}
    assert "exit status 1" in text


def test_official_etrm_layout_maps_encoder_keys(tmp_path: Path) -> None:
    path = _official(tmp_path, arch__name="models.etrm@TRMWithEncoder", arch__puzzle_emb_ndim=0,
                     arch__encoder_num_layers=4, encoder_lr_scale=0, load_pretrained_decoder="ckpt/step_1",
                     max_eval_groups=32, log_predictions_every=1000)
    path.write_text(path.read_text().replace("loss_type: stablemax_cross_entropy",
                                             "loss_type: stablemax_cross_entropy\n    kl_weight: 0.0001"))
    resolved, unknown = read_official_all_config(path)
    config = resolved.config
    assert (config.arch.name, config.arch.encoder_num_layers, config.encoder_lr_scale) == ("etrm", 4, 1.0)
    assert "official 0 = one optimizer at lr" in resolved.provenance["encoder_lr_scale"]
    assert config.encoder_weight_decay_scale == 1.0  # one optimizer: the encoder decays like the decoder
    assert (config.init_from, config.eval.max_tasks) == ("ckpt/step_1", 32)
    assert unknown == {"log_predictions_every": 1000}


def test_official_knobs_the_variant_ignored_are_reported_not_refused(tmp_path: Path) -> None:
    path = _official(tmp_path, arch__name="m@TRMWithRecurrentEncoder", arch__puzzle_emb_ndim=0,
                     arch__recurrent_encoder_type="recurrent_standard", arch__encoder_l_cycles=4)
    resolved, unknown = read_official_all_config(path)
    assert resolved.config.arch.encoder_l_cycles == 1  # schema default: the official model never read the 4
    assert unknown == {"arch.encoder_l_cycles (no effect: only acts with arch.recurrent_encoder_type = "
                       "trm_style)": 4}


def test_official_encoder_optimizer_decays_the_encoder_by_a_tenth(tmp_path: Path) -> None:
    path = _official(tmp_path, arch__name="models.etrm@TRMWithEncoder", arch__puzzle_emb_ndim=0,
                     encoder_lr_scale=1.0)
    resolved, _ = read_official_all_config(path)
    assert (resolved.config.encoder_lr_scale, resolved.config.encoder_weight_decay_scale) == (1.0, 0.1)
    assert "0.1 × weight_decay" in resolved.provenance["encoder_weight_decay_scale"]
