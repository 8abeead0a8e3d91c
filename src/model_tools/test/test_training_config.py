"""TrainConfig: YAML + overrides, typed fields, errors naming the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_tools.tasks.depth import parse_depth_sections
from model_tools.training.config import load_config, parse_overrides, save_config
from perception_core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def test_shipped_depth_configs_load_with_seed_loss_weights() -> None:
    for name, kind, hw in (("depth_levels_r18.yaml", "levels", (768, 896)), ("depth_sigmoid_r18.yaml", "sigmoid", (384, 640))):
        config = load_config(ROOT / "config" / "train" / name)
        model, _, loss, _ = parse_depth_sections(config, name)
        assert (model.kind, model.encoder, model.input_height, model.input_width) == (kind, "resnet18", *hw)
        assert (loss.w_integer, loss.w_fractional, loss.w_depth) == (1.0, 10.0, 0.5)


def test_overrides_are_yaml_typed_and_nested(tmp_path: Path) -> None:
    assert parse_overrides(["lr=3e-4", "model.kind=sigmoid", "model.decoder_channels=[1,2]", "ema=true"]) == {
        "lr": 3e-4, "model": {"kind": "sigmoid", "decoder_channels": [1, 2]}, "ema": True}
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\nmodel: {kind: levels, levels: 128}\n")
    config = load_config(path, ["epochs=5", "model.levels=64", "batch_size=4"])
    assert (config.epochs, config.batch_size, config.model) == (5, 4, {"kind": "levels", "levels": 64})
    save_config(config, tmp_path / "run" / "config.yaml")
    assert load_config(tmp_path / "run" / "config.yaml") == config


def test_bad_configs_name_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown field\(s\) learning_rate"):
        load_config(path)
    path.write_text("epochs: many\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: field 'epochs' = 'many' is not of type"):
        load_config(path)
    with pytest.raises(ConfigError, match="field 'batch_size' has an invalid value 0"):
        load_config(None, ["batch_size=0"])
    with pytest.raises(ConfigError, match="override 'oops' is not key=value"):
        parse_overrides(["oops"])
    config = load_config(None, ["model.kind=bins"])
    with pytest.raises(ConfigError, match=r"model\.kind = 'bins'"):
        parse_depth_sections(config, "x.yaml")
    with pytest.raises(ConfigError, match=r"cannot read config .*missing\.yaml"):
        load_config(tmp_path / "missing.yaml")
