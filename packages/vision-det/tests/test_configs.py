from importlib import resources

import pytest
from lora_shared.cli import Command, build_config
from lora_shared.config import bundled_configs
from lora_shared.errors import UsageError
from vision_det.cli import APP

TRAIN = Command("train", "", "", uses_adapter=False)


@pytest.mark.parametrize("name", bundled_configs("vision_det.configs"))
def test_bundled_config_parses(name, tmp_path):
    cfg, _ = build_config(APP, TRAIN, ["--config", name, "--output_dir", str(tmp_path)])
    assert cfg.lora.lora_r > 0 and cfg.lora.lora_modules_to_save
    text = (resources.files("vision_det.configs") / f"{name}.yaml").read_text()
    assert text.startswith("#") and ("vision-det" in text.splitlines()[0] or "make" in text.splitlines()[0])


def test_default_tiny_offline_ship():
    assert {"default", "tiny", "offline"} <= set(bundled_configs("vision_det.configs"))


def test_unknown_key_fails(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora_rank: 8\n")
    with pytest.raises(UsageError, match="'lora_rank'"):
        build_config(APP, TRAIN, ["--config", str(bad)])
