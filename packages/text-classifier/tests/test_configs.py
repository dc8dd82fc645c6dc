from importlib import resources

import pytest
from lora_shared.cli import Command, build_config
from lora_shared.config import bundled_configs
from lora_shared.errors import UsageError
from text_classifier.cli import APP

TRAIN = Command("train", "", "", uses_adapter=False)


@pytest.mark.parametrize("name", bundled_configs("text_classifier.configs"))
def test_bundled_config_parses(name, tmp_path):
    cfg, _ = build_config(APP, TRAIN, ["--config", name, "--output_dir", str(tmp_path)])
    assert cfg.lora.lora_r > 0
    assert cfg.model.truncation_side in ("left", "right")
    assert cfg.model.model_name_or_path or cfg.model.model_type
    first = (resources.files("text_classifier.configs") / f"{name}.yaml").read_text().splitlines()[0]
    assert first.startswith("#") and ("text-classifier" in first or "make" in first)


def test_default_and_tiny_ship():
    assert {"default", "tiny"} <= set(bundled_configs("text_classifier.configs"))


def test_precedence_cli_over_yaml(tmp_path):
    cfg, _ = build_config(APP, TRAIN, ["--config", "tiny", "--max_length", "17", "--lora_r", "2"])
    assert cfg.model.max_length == 17 and cfg.lora.lora_r == 2
    assert cfg.data.max_train_samples == 96  # from tiny.yaml


def test_unknown_key_fails(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora_rank: 8\n")
    with pytest.raises(UsageError, match="'lora_rank'"):
        build_config(APP, TRAIN, ["--config", str(bad)])
