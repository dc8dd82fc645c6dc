"""The offline config end to end with the real ImageNet MobileNetV2 (needs `make models`): slow, not in CI."""

import json

import pytest


@pytest.mark.slow
def test_offline_config_trains_and_predicts(tmp_path):
    from lora_shared.models import models_dir
    from vision_det.cli import main

    if not (models_dir() / "mobilenet_v2-imagenet").is_dir():
        pytest.skip("run `make models` first")
    out = tmp_path / "run"
    argv = ["train", "--config", "offline", "--output_dir", str(out), "--max_steps", "2"]
    argv += [
        "--shapes_train_images",
        "16",
        "--shapes_val_images",
        "4",
        "--shapes_cache_dir",
        str(tmp_path / "d"),
    ]
    argv += ["--eval_strategy", "no", "--save_strategy", "no", "--cpu_threads", "1"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "eval_AP50" in metrics and metrics["trainable_params"] > 0
    png = tmp_path / "d" / "val" / "000000.png"
    assert (
        main(["predict", "--adapter_dir", str(out), "--predictions_dir", str(tmp_path / "p"), str(png)]) == 0
    )
    assert (tmp_path / "p" / "000000.png").is_file()
