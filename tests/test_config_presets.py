"""Every shipped preset loads and validates; the schema documents every field."""

from __future__ import annotations

import pytest
import yaml

from trmlab.config import load_config, preset_names, validate
from trmlab.config.fields import schema_fields
from trmlab.config.loader import presets_dir

EXPECTED_PRESETS = {"trm-arc1", "trm-arc1-repo-default", "etrm-arc1", "etrmtrm-arc1",
                    "etrm-arc1-frozen-decoder", "demo", "tiny", "trm-synthetic", "etrm-synthetic",
                    "etrmtrm-synthetic"}


def test_every_expected_preset_ships() -> None:
    assert set(preset_names()) >= EXPECTED_PRESETS


@pytest.mark.parametrize("name", preset_names())
def test_preset_loads_validates_and_describes_itself(name: str) -> None:
    resolved = load_config(name)
    validate(resolved.config, resolved.provenance)
    path = presets_dir() / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    description = raw.get("description")
    assert isinstance(description, str) and description.strip(), f"{path} needs a description"
    assert resolved.provenance["description"].startswith(f"preset {name} ")
    assert path.read_text().lstrip().startswith("#"), f"{path} should open with a comment saying what it is"


def test_every_schema_field_has_help() -> None:
    for key, info in schema_fields().items():
        assert info.help.strip(), f"{key} has no help text"


def test_tiny_and_demo_are_small_and_fp32() -> None:
    tiny = load_config("tiny").config
    arch = tiny.arch
    assert (arch.hidden_size, arch.num_heads, arch.H_cycles, arch.L_cycles) == (32, 2, 2, 2)
    assert (tiny.arch.halt_max_steps, tiny.global_batch_size, tiny.arch.forward_dtype) == (4, 8, "float32")
    demo = load_config("demo").config
    assert 64 <= demo.arch.hidden_size <= 128 and demo.arch.forward_dtype == "float32"
    assert demo.data_paths == ["runs/data/demo-arc1"]
    assert load_config("trm-synthetic").config.data_paths == ["runs/data/synthetic/trm"]
    assert load_config("etrm-synthetic").config.data_paths == ["runs/data/synthetic/encoder"]
    assert load_config("etrm-synthetic").config.arch.name == "etrm"
    assert load_config("etrmtrm-synthetic").config.arch.name == "etrmtrm"


def test_variant_presets_pick_their_model() -> None:
    assert load_config("etrm-arc1").config.arch.name == "etrm"
    etrmtrm = load_config("etrmtrm-arc1").config
    assert (etrmtrm.arch.name, etrmtrm.arch.recurrent_encoder_type, etrmtrm.arch.L_cycles) == \
        ("etrmtrm", "recurrent_standard", 4)
