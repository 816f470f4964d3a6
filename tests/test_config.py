"""Config loading: composition, overrides, strict errors, provenance, serialisation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trmlab.config import (
    Config,
    ResolvedConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    load_resolved,
    parse_overrides,
    save_resolved,
    validate,
)
from trmlab.config.fields import schema_fields
from trmlab.config.loader import presets_dir
from trmlab.config.validate import format_value
from trmlab.errors import ConfigError, TrmlabError


def _line_of(path: Path, text: str) -> int:
    """1-based line of the first line of ``path`` that starts with ``text`` (after indentation)."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip().startswith(text):
            return number
    raise AssertionError(f"{text!r} not in {path}")


def _problems(preset: str | None, overrides: list[str] = (), files: list = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(preset, overrides, files)
    return str(info.value)


# ------------------------------------------------------------------------------------------- composition


def test_trm_arc1_has_the_released_recipe() -> None:
    config = load_config("trm-arc1").config
    arch = config.arch
    assert (arch.H_cycles, arch.L_cycles, arch.L_layers, arch.H_layers) == (3, 4, 2, 0)
    assert (arch.hidden_size, arch.num_heads, arch.expansion, arch.pos_encodings) == (512, 8, 4.0, "rope")
    assert (arch.puzzle_emb_ndim, arch.puzzle_emb_len, arch.halt_max_steps) == (512, 16, 16)
    assert (arch.halt_exploration_prob, arch.no_ACT_continue, arch.forward_dtype, arch.mlp_t) == \
        (0.1, True, "bfloat16", False)
    assert (config.ema, config.ema_rate, config.global_batch_size, config.epochs, config.eval_interval) == \
        (True, 0.999, 768, 100000, 10000)
    assert (config.lr, config.lr_min_ratio, config.lr_warmup_steps, config.beta1, config.beta2) == \
        (1e-4, 1.0, 2000, 0.9, 0.95)
    assert (config.weight_decay, config.puzzle_emb_lr, config.puzzle_emb_weight_decay, config.seed) == \
        (0.1, 1e-2, 0.1, 0)
    assert isinstance(config.lr, float)


def test_base_chain_composes_and_records_each_layer() -> None:
    resolved = load_config("trm-arc1-repo-default")
    assert resolved.config.arch.L_cycles == 6 and resolved.config.ema is False
    assert resolved.config.arch.H_cycles == 3  # inherited from trm-arc1
    child = presets_dir() / "trm-arc1-repo-default.yaml"
    base = presets_dir() / "trm-arc1.yaml"
    assert resolved.provenance["arch.L_cycles"] == \
        f"preset trm-arc1-repo-default (trm-arc1-repo-default.yaml:{_line_of(child, 'L_cycles:')})"
    assert resolved.provenance["arch.H_cycles"] == \
        f"preset trm-arc1 (trm-arc1.yaml:{_line_of(base, 'H_cycles:')})"
    assert resolved.provenance["arch.eval_q_halting"] == "schema default"


def test_frozen_decoder_preset_carries_the_corrections() -> None:
    config = load_config("etrm-arc1-frozen-decoder").config
    assert config.arch.name == "etrm" and config.arch.L_cycles == 4
    assert config.arch.halt_exploration_prob == 0.1
    assert config.encoder_lr_scale > 0 and config.freeze_decoder_steps > 0
    assert load_config("etrm-arc1").config.arch.halt_exploration_prob == 0.1


def test_schema_defaults_without_preset() -> None:
    resolved = load_config(None)
    assert resolved.config == Config()
    assert set(resolved.provenance.values()) == {"schema default"}


def test_precedence_file_then_command_line(tmp_path: Path) -> None:
    first = tmp_path / "a.yaml"
    first.write_text("arch:\n  L_cycles: 5\nlr: 2e-4\n")
    second = tmp_path / "b.yaml"
    second.write_text("arch.L_cycles: 7\nseed: 3\n")
    resolved = load_config("trm-arc1", ["seed=9"], [first, second])
    config = resolved.config
    assert (config.arch.L_cycles, config.lr, config.seed) == (7, 2e-4, 9)
    assert resolved.provenance["arch.L_cycles"] == f"file {second}:1"
    assert resolved.provenance["lr"] == f"file {first}:3"
    assert resolved.provenance["seed"] == "command line"


# ------------------------------------------------------------------------------------------- overrides


def test_dotted_overrides_lists_null_and_numbers() -> None:
    resolved = load_config("trm-arc1", ["arch.L_cycles=6", "ema=false", "lr=3e-4",
                                        "data_paths=[data/a,data/b]", "max_steps=null", "beta1=1"])
    config = resolved.config
    assert config.arch.L_cycles == 6 and config.ema is False and config.lr == 3e-4
    assert config.data_paths == ["data/a", "data/b"] and config.max_steps is None
    assert config.beta1 == 1.0 and isinstance(config.beta1, float)  # an int is fine for a float
    assert resolved.provenance["data_paths"] == "command line"


def test_parse_overrides_keeps_yaml_types() -> None:
    assert parse_overrides(["a=1", "b=1.5", "c=1e-4", "d=true", "e=null", "f=[1, 2]", "g=text"]) == [
        ("a", 1), ("b", 1.5), ("c", 1e-4), ("d", True), ("e", None), ("f", [1, 2]), ("g", "text")]
    # YAML 1.1 would turn these into booleans; trmlab keeps them as strings (then rejects them for bools).
    assert parse_overrides(["a=yes", "b=off"]) == [("a", "yes"), ("b", "off")]


@pytest.mark.parametrize(("item", "expected"), [
    ("arch.L_cycles", "expected key=value"),
    ("=4", "expected key=value"),
    ("lr=", "write lr=null"),
    ("lr=[1,", "cannot parse"),
])
def test_malformed_overrides(item: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="command line") as info:
        parse_overrides([item])
    assert expected in str(info.value)


def test_override_given_twice_is_an_error() -> None:
    assert "given twice" in _problems("trm-arc1", ["lr=1e-4", "lr=2e-4"])


# ------------------------------------------------------------------------------------------- strict errors


def test_unknown_key_names_source_and_suggests() -> None:
    message = _problems("trm-arc1", ["arch.halt_exploraton_prob=0.5"])
    assert "unknown key 'arch.halt_exploraton_prob' (command line)" in message
    assert "did you mean arch.halt_exploration_prob" in message


def test_unknown_key_without_section_suggests_the_arch_key() -> None:
    assert "did you mean arch.halt_exploration_prob" in _problems("trm-arc1", ["halt_exploration_prob=0.5"])


def test_official_names_point_to_trmlab_names() -> None:
    assert "did you mean init_from" in _problems(None, ["load_pretrained_decoder=x"])
    assert "did you mean arch.loss_type" in _problems(None, ["arch.loss.loss_type=softmax_cross_entropy"])


def test_unknown_key_in_file_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "over.yaml"
    path.write_text("# my overrides\narch:\n  L_cycles: 4\n  hiden_size: 64\n")
    message = _problems("tiny", files=[path])
    assert f"unknown key 'arch.hiden_size' (file {path}:4)" in message
    assert "did you mean arch.hidden_size" in message


def test_unknown_key_in_preset_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("base: tiny\ndescription: mine\nema_rat: 0.9\n")
    message = _problems(str(path))
    assert f"unknown key 'ema_rat' (file {path}:3)" in message and "did you mean ema_rate" in message


@pytest.mark.parametrize(("override", "expected"), [
    ("arch.L_cycles='4'", "arch.L_cycles = '4' (command line): expected an integer"),
    ("arch.L_cycles=4.0", "arch.L_cycles = 4.0 (command line): expected an integer"),
    ("ema=yes", "ema = 'yes' (command line): expected true or false"),
    ("ema=1", "ema = 1 (command line): expected true or false"),
    ("lr=fast", "lr = 'fast' (command line): expected a number"),
    ("data_paths=data/a", "data_paths = 'data/a' (command line): expected a list of strings"),
    ("data_paths=[1,2]", "expected a list of strings"),
    ("max_steps=ten", "expected null or an integer"),
    ("arch=4", "arch (command line) is a section"),
])
def test_wrong_types_are_errors(override: str, expected: str) -> None:
    assert expected in _problems("trm-arc1", [override])


@pytest.mark.parametrize(("override", "expected"), [
    ("lr=-1e-4", "lr = -0.0001 (command line): must be > 0"),
    ("arch.H_cycles=0", "arch.H_cycles = 0 (command line): must be ≥ 1"),
    ("arch.halt_exploration_prob=1.5", "arch.halt_exploration_prob = 1.5 (command line): must be ≤ 1"),
    ("arch.halt_exploration_prob=-0.1", "must be ≥ 0"),
    ("arch.pos_encodings=alibi",
     "arch.pos_encodings = alibi (command line): must be one of rope, learned, none"),
    ("arch.name=trm2", "must be one of trm, etrm, etrmtrm"),
    ("arch.hidden_size=100", "arch.hidden_size = 100 (command line) is not divisible by arch.num_heads = 8"),
    ("arch.hidden_size=8", "odd head width"),
    ("eval.pass_ks=[0,2]", "every K must be a positive integer"),
    ("eval.pass_ks=[]", "give at least one K"),
    ("device=gpu", "must be auto, cpu, cuda or cuda:N"),
    ("loggers=[mlflow]", "unknown logger(s) mlflow"),
    ("eval_interval=3000", "must divide epochs = 100000"),
    ("arch.puzzle_emb_ndim=1024 arch.puzzle_emb_len=1", "does not fit in arch.puzzle_emb_len = 1"),
    ("lr=.nan", "lr = nan (command line): must be > 0"),
    ("encoder_lr_scale=0", "must be > 0"),
])
def test_impossible_values_are_errors(override: str, expected: str) -> None:
    assert expected in _problems("trm-arc1", override.split())


def test_cross_field_rules_for_encoder_variants() -> None:
    assert "etrm needs puzzle_emb_len > 0" in _problems("etrm-arc1", ["arch.puzzle_emb_len=0"])
    assert "has no puzzle-id table" in _problems("etrm-arc1", ["arch.puzzle_emb_ndim=512"])
    message = _problems("trm-arc1", ["arch.encoder_type=lpn_standard", "freeze_decoder_steps=10"])
    assert "arch.encoder_type = lpn_standard (command line) has no effect with arch.name = trm" in message
    assert "freeze_decoder_steps = 10 (command line) has no effect" in message
    assert "only acts with arch.recurrent_encoder_type = trm_style" in \
        _problems("etrmtrm-arc1", ["arch.encoder_l_cycles=4"])
    assert load_config("etrmtrm-arc1", ["arch.recurrent_encoder_type=trm_style", "arch.encoder_l_cycles=4"])
    assert "only acts with a variational encoder" in _problems("etrm-arc1", ["arch.kl_weight=0.1"])
    assert "'tokens' needs arch.encoder_type=standard (got 'lpn_standard'" in _problems(
        "etrm-arc1", ["arch.encoder_set_memory=tokens", "arch.encoder_type=lpn_standard"])
    assert "arch.encoder_pooling_method = attention (command line) has no effect with " \
        "arch.encoder_set_memory = tokens" in _problems(
            "etrm-arc1", ["arch.encoder_set_memory=tokens", "arch.encoder_pooling_method=attention"])
    assert "arch.encoder_set_memory = tokens (command line) has no effect with arch.name = trm" in \
        _problems("trm-arc1", ["arch.encoder_set_memory=tokens"])
    assert load_config("etrm-arc1", ["arch.encoder_set_memory=tokens", "demo_sampling=leave_one_out",
                                     "arch.encoder_token_layout=paired"])
    assert "arch.encoder_token_layout = paired (command line) has no effect with arch.name = trm" in \
        _problems("trm-arc1", ["arch.encoder_token_layout=paired"])
    assert "arch.contrastive_weight = 0.1 (command line) has no effect with arch.name = trm" in \
        _problems("trm-arc1", ["arch.contrastive_weight=0.1"])
    assert "arch.context_refine_steps = 3 (command line) has no effect with arch.name = etrmtrm" in \
        _problems("etrmtrm-arc1", ["arch.context_refine_steps=3"])
    assert "demo_sampling = loo (command line): must be one of fixed, leave_one_out" in \
        _problems("etrm-arc1", ["demo_sampling=loo"])
    assert "demo_sampling = leave_one_out (command line) has no effect with arch.name = trm" in \
        _problems("trm-arc1", ["demo_sampling=leave_one_out"])


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("trm-arc1", ["lr=-1", "arch.H_cycles=0", "arch.L_cyles=4", "ema=yes"])
    message = str(info.value)
    assert message.startswith("4 config problems:")
    assert len(info.value.problems) == 4
    for part in ("lr = -1.0", "arch.H_cycles = 0", "arch.L_cyles", "ema = 'yes'"):
        assert part in message


def test_config_errors_are_trmlab_errors() -> None:
    with pytest.raises(TrmlabError):
        load_config("no-such-preset")
    assert "choose one of" in _problems("no-such-preset") and "trm-arc1" in _problems("no-such-preset")


def test_duplicate_keys_in_a_file_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("lr: 1e-4\nseed: 1\nlr: 2e-4\n")
    assert f"{path}:3: key 'lr' is given twice (first at line 1)" in _problems("tiny", files=[path])
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text("arch:\n  L_cycles: 4\narch.L_cycles: 5\n")
    assert "arch.L_cycles is set twice" in _problems("tiny", files=[mixed])


def test_override_file_may_not_rebase(tmp_path: Path) -> None:
    path = tmp_path / "o.yaml"
    path.write_text("base: trm-arc1\n")
    assert "'base:' belongs in a preset file" in _problems("tiny", files=[path])


def test_base_cycle_is_an_error(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(f"base: {b}\n")
    b.write_text(f"base: {a}\n")
    assert "builds on itself" in _problems(str(a))


def test_invalid_yaml_and_non_mapping(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("arch: [1,\n")
    assert f"{broken}: invalid YAML" in _problems("tiny", files=[broken])
    listing = tmp_path / "list.yaml"
    listing.write_text("- lr: 1\n")
    assert "expected a mapping" in _problems("tiny", files=[listing])
    assert "cannot read config file" in _problems("tiny", files=[tmp_path / "missing.yaml"])


def test_validate_collects_problems_of_programmatic_configs() -> None:
    config = Config()
    config.arch.H_cycles = 0
    config.lr = "1e-4"  # type: ignore[assignment]
    with pytest.raises(ConfigError) as info:
        validate(config)
    assert "arch.H_cycles = 0: must be ≥ 1" in str(info.value)
    assert "lr = '1e-4': expected a number" in str(info.value)
    validate(Config())  # the schema defaults are valid


# ------------------------------------------------------------------------------------------- serialisation


def test_dict_round_trip_and_strictness() -> None:
    original = load_config("etrm-arc1").config
    data = config_to_dict(original)
    assert list(data)[:2] == ["arch", "eval"] and data["arch"]["name"] == "etrm"
    rebuilt = config_from_dict(data, "checkpoint runs/x/step_10")
    assert rebuilt.config == original
    assert rebuilt.provenance["arch.L_cycles"] == "checkpoint runs/x/step_10"
    data["arch"]["L_cylces"] = 4
    with pytest.raises(ConfigError, match=r"unknown key 'arch.L_cylces' \(checkpoint runs/x/step_10\)"):
        config_from_dict(data, "checkpoint runs/x/step_10")


def test_missing_arch_key_is_refused_missing_other_key_is_marked() -> None:
    data = config_to_dict(load_config("tiny").config)
    del data["arch"]["L_cycles"]
    with pytest.raises(ConfigError, match=r"lacks architecture key\(s\) arch.L_cycles"):
        config_from_dict(data, "checkpoint c")
    data = config_to_dict(load_config("tiny").config)
    del data["keep_last"]
    resolved = config_from_dict(data, "checkpoint c")
    assert resolved.provenance["keep_last"] == "schema default (not in checkpoint c)"


def test_save_and_load_resolved(tmp_path: Path) -> None:
    resolved = load_config("trm-arc1", ["lr=3e-4", "data_paths=[data/a]"])
    path = tmp_path / "config.yaml"
    save_resolved(resolved, path)
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no temporary left behind
    loaded = load_resolved(path)
    assert loaded.config == resolved.config
    assert loaded.provenance == resolved.provenance
    assert loaded.provenance["lr"] == "command line"


def test_load_resolved_reports_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    save_resolved(load_config("tiny"), path)
    text = path.read_text().replace("  H_cycles: 2", "  H_cycles: 0", 1)
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_resolved(path)
    assert f"arch.H_cycles = 0 (file {path}:{_line_of(path, 'H_cycles:')}): must be ≥ 1" in str(info.value)
    other = tmp_path / "other.yaml"
    other.write_text("lr: 1\n")
    with pytest.raises(ConfigError, match=r"not a trmlab config\.yaml"):
        load_resolved(other)


def test_resolved_config_fields() -> None:
    resolved = load_config("tiny")
    assert isinstance(resolved, ResolvedConfig)
    assert set(resolved.provenance) == set(schema_fields())
    assert dataclasses.is_dataclass(resolved.config)


def test_strings_that_look_like_other_types_survive_a_round_trip(tmp_path: Path) -> None:
    resolved = load_config("tiny", ["run_name='1e5'", "project_name='yes'", "data_paths=['null', 'true']"])
    path = tmp_path / "config.yaml"
    save_resolved(resolved, path)
    config = load_resolved(path).config
    assert (config.run_name, config.project_name, config.data_paths) == ("1e5", "yes", ["null", "true"])
    import yaml

    plain = yaml.safe_load(path.read_text())["config"]  # also unambiguous for a plain YAML reader
    assert (plain["run_name"], plain["project_name"]) == ("1e5", "yes")


_WORDS = st.one_of(st.sampled_from(["null", "true", "yes", "off", "1e5", "0x1f", "a b", "x:y", "", "it's"]),
                   st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=8))
_SIMPLE = st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=False, allow_infinity=False),
                    st.booleans(), st.none(), _WORDS, st.lists(_WORDS, max_size=3))


@settings(max_examples=200, deadline=None)
@given(_SIMPLE)
def test_shown_values_parse_back_to_themselves(value: object) -> None:
    # What `config show` prints is what a user can paste back as an override.
    [(key, parsed)] = parse_overrides([f"k={format_value(value)}"])
    assert key == "k" and parsed == value and type(parsed) is type(value)


def test_whole_document_passed_to_config_from_dict_is_explained(tmp_path: Path) -> None:
    document = {"config": config_to_dict(load_config("tiny").config), "provenance": {}}
    with pytest.raises(ConfigError, match="pass its 'config' mapping"):
        config_from_dict(document, "checkpoint c")
    own = tmp_path / "mine.yaml"
    own.write_text("base: tiny\ndescription: my variant\narch.L_cycles: 3\n")
    assert load_config(own).config.arch.L_cycles == 3  # a Path works as well as a string
