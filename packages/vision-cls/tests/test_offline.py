"""The bundled `offline` config on real ImageNet MobileNetV2 weights (needs `make models`; slow)."""

import json

import pytest
from lora_shared.models import models_dir
from vision_cls.cli import main

MODEL = "mobilenet_v2-imagenet"


@pytest.mark.slow
def test_offline_config_reaches_095_on_demo_shapes(tmp_path):
    if not (models_dir() / MODEL / "config.json").is_file():
        pytest.skip(f"{MODEL} not built: run `make models`")
    assert main(["train", "--config", "offline", "--output_dir", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["eval_accuracy"] >= 0.95, metrics
    assert metrics["trainable_pct"] < 10  # LoRA on the 1x1 convs + head, not a full fine-tune
    assert "mobilenet_v2-imagenet" in (tmp_path / "resolved_config.yaml").read_text()
