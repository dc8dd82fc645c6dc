"""The real CLI on the tiny config: files written, LoRA invariant, reload/merge parity, predict, eval, make-data."""

import json

import numpy as np
import pytest
import torch
from lora_shared.testing import assert_only_lora_changed, capture_built_model
from vision_det import train as train_mod
from vision_det.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cache = tmp_path_factory.mktemp("shapes-cache") / "tiny"
    with capture_built_model(train_mod) as captured:
        argv = ["train", "--config", "tiny", "--output_dir", str(out), "--shapes_cache_dir", str(cache)]
        assert main(argv) == 0
    return out, captured, cache


def test_writes_artifacts(run):
    out, _, cache = run
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "resolved_config.yaml",
        "metrics.json",
        "metrics.jsonl",
        "curves.png",
        "labels.json",
        "base_model/model.safetensors",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for k in ("eval_AP", "eval_AP50", "eval_AP75", "eval_AR100", "eval_AP_circle", "eval_AP_triangle"):
        assert -1 <= metrics[k] <= 1, k
    # LoRA r=4 on q/v of 1 encoder + 1 decoder layer (self + cross attention) + the two heads
    assert metrics["trainable_params"] == 3912
    assert metrics["adapter_mb"] < metrics["base_mb"]
    assert (cache / "train.json").is_file() and len(list((cache / "train").glob("*.png"))) == 16
    assert not list(out.glob(".*tmp"))


def test_lora_invariant(run):
    _, captured, _ = run
    counts = assert_only_lora_changed(captured["before"], captured["model"])
    assert counts["adapter_changed"] >= 4


def test_reload_and_merge_give_same_outputs(run, tmp_path):
    from lora_shared.cli import build_config
    from transformers import AutoModelForObjectDetection
    from vision_det.cli import APP
    from vision_det.model import load_trained

    out, captured, _ = run
    cmd = next(c for c in APP.commands if c.name == "export")
    cfg, _ = build_config(APP, cmd, ["--adapter_dir", str(out)])
    reloaded, labels, _ = load_trained(cfg)
    x = torch.randn(2, 3, 64, 64)
    trained = captured["model"].eval()
    with torch.no_grad():
        ref = trained(pixel_values=x)
        again = reloaded(pixel_values=x)
        torch.testing.assert_close(again.logits, ref.logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(again.pred_boxes, ref.pred_boxes, atol=1e-5, rtol=0)
    assert main(["export", "--adapter_dir", str(out), "--export_dir", str(tmp_path / "merged")]) == 0
    merged = AutoModelForObjectDetection.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(pixel_values=x).logits, ref.logits, atol=1e-4, rtol=0)
    assert merged.config.id2label[0] == labels[0] == "circle"
    assert (tmp_path / "merged" / "preprocessor_config.json").is_file()


def test_predict_writes_json_and_pngs(run, tmp_path, capsys):
    from PIL import Image

    out, _, cache = run
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(2):
        Image.open(cache / "val" / f"00000{i}.png").save(imgs / f"shot{i}.png")
    pred_dir = tmp_path / "pred"
    capsys.readouterr()
    argv = [
        "predict",
        "--adapter_dir",
        str(out),
        "--threshold",
        "0.0",
        "--predictions_dir",
        str(pred_dir),
        str(imgs),
    ]
    assert main(argv) == 0
    results = json.loads((pred_dir / "predictions.json").read_text())
    assert {r["image_id"] for r in results} == {1, 2}
    r = results[0]
    assert (
        set(r) >= {"image_id", "category_id", "bbox", "score", "label", "file_name"} and len(r["bbox"]) == 4
    )
    assert r["file_name"].endswith("shot0.png") and r["label"] in ("circle", "square", "triangle")
    for i in range(2):
        drawn = np.asarray(Image.open(pred_dir / f"shot{i}.png"))
        assert drawn.shape == (64, 64, 3)
        assert not np.array_equal(drawn, np.asarray(Image.open(imgs / f"shot{i}.png")))  # boxes drawn
    # a high threshold keeps nothing, and says so
    assert main(["predict", "--adapter_dir", str(out), "--threshold", "1.0", str(imgs / "shot0.png")]) == 0
    assert "0 box(es)" in capsys.readouterr().out


def test_eval_cli(run, capsys):
    out, _, _ = run
    assert main(["eval", "--adapter_dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "AP @.50" in text and "per-class AP" in text and "triangle" in text
    metrics = json.loads((out / "eval_metrics.json").read_text())
    assert "eval_AP50" in metrics and "eval_APs" in metrics


def test_draw_boxes_puts_the_box_where_it_says():
    from PIL import Image
    from vision_det.predict import PALETTE, draw_boxes

    img = draw_boxes(
        Image.new("RGB", (100, 80), (0, 0, 0)),
        [{"bbox": [20, 30, 40, 25], "category_id": 1, "score": 0.9}],
        ["a", "b"],
    )
    arr = np.asarray(img)
    assert tuple(arr[45, 20]) == PALETTE[1] and tuple(arr[45, 59]) == PALETTE[1]  # left and right edges
    assert tuple(arr[45, 40]) == (0, 0, 0)  # inside stays untouched


@pytest.mark.parametrize("content,match", [(b"", "0 bytes"), (b"not an image", "not an image")])
def test_predict_bad_image_exit_2(run, tmp_path, capsys, content, match):
    out, _, _ = run
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    assert (
        main(["predict", "--adapter_dir", str(out), "--predictions_dir", str(tmp_path / "p"), str(bad)]) == 2
    )
    err = capsys.readouterr().err
    assert "bad.png" in err and match in err and "Traceback" not in err
    assert not (tmp_path / "p" / "predictions.json").exists()


def test_make_data_cli(tmp_path, capsys):
    out = tmp_path / "shapes"
    argv = ["make-data", "--output_dir", str(out), "--shapes_train_images", "3", "--shapes_val_images", "2"]
    assert main(argv + ["--shapes_image_size", "48"]) == 0
    coco = json.loads((out / "val.json").read_text())
    assert len(coco["images"]) == 2 and coco["images"][0]["width"] == 48
    assert main(argv) == 2  # never overwrites
    assert "already" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", ["train", "eval", "predict", "export", "make-data"])
def test_help(cmd, capsys):
    assert main([cmd, "--help"]) == 0
    assert "--lora_r" in capsys.readouterr().out
