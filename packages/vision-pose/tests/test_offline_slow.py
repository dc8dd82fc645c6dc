"""The offline config on the real ImageNet MobileNetV2 (`make models`): builds, trains 2 steps, scores."""

import json

import pytest
from lora_shared.models import models_dir
from vision_pose.cli import main


@pytest.mark.slow
def test_offline_config_two_steps(tmp_path):
    if not (models_dir() / "mobilenet_v2-imagenet").is_dir():
        pytest.skip("run `make models` first")
    args = ["train", "--config", "offline", "--output_dir", str(tmp_path), "--max_steps", "2",
            "--figures_train", "16", "--figures_val", "8", "--eval_strategy", "no", "--save_strategy", "no"]  # fmt: skip
    assert main(args) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 <= m["eval_pck@0.1"] <= 1 and m["trainable_params"] < m["total_params"]
