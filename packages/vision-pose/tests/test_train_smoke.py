"""The real CLI on the tiny config: files written, LoRA invariant, reload/merge parity, predict, eval, bad input."""

import json

import numpy as np
import pytest
import torch
from lora_shared.testing import assert_only_lora_changed, capture_built_model
from vision_pose import train as train_mod
from vision_pose.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    with capture_built_model(train_mod) as captured:
        assert main(["train", "--config", "tiny", "--output_dir", str(out)]) == 0
    return out, captured


def test_writes_artifacts(run):
    out, _ = run
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "resolved_config.yaml",
        "metrics.json",
        "metrics.jsonl",
        "curves.png",
        "keypoints.json",
        "predictions_val.json",
        "base_model/model.safetensors",
    ):
        assert (out / name).is_file(), name
    assert list((out / "skeletons_val").glob("*.png"))
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("eval_pck@0.05", "eval_pck@0.1", "eval_oks_ap"):
        assert 0 <= metrics[key] <= 1, key
    assert metrics["eval_mean_px_error"] > 0 and "eval_error_left_hand" in metrics
    # LoRA r=4 on query/value of 2 layers (4 x 4*(32+32) = 1024) + head conv 32*13*9+13 = 3757
    assert metrics["trainable_params"] == 1024 + 3757
    assert metrics["adapter_mb"] < metrics["base_mb"]
    info = json.loads((out / "keypoints.json").read_text())
    assert info["keypoints"][0] == "head" and len(info["sigmas"]) == 13
    assert [5, 6] in info["flip_pairs"]  # left_hand <-> right_hand (0-based)
    results = json.loads((out / "predictions_val.json").read_text())
    assert {"image_id", "category_id", "keypoints", "score"} <= set(results[0])
    assert len(results[0]["keypoints"]) == 39
    assert not list(out.glob(".*tmp"))


def test_lora_invariant(run):
    _, captured = run
    counts = assert_only_lora_changed(captured["before"], captured["model"])
    assert counts["adapter_changed"] >= 4


def test_reload_and_merge_give_same_heatmaps(run, tmp_path):
    from lora_shared.cli import build_config
    from vision_pose.cli import APP
    from vision_pose.model import load_exported, load_trained

    out, captured = run
    cmd = next(c for c in APP.commands if c.name == "export")
    cfg, _ = build_config(APP, cmd, ["--adapter_dir", str(out)])
    reloaded, schema, _, st = load_trained(cfg)
    x = torch.randn(2, 3, st.height, st.width)
    trained = captured["model"].eval()
    with torch.no_grad():
        ref = trained(pixel_values=x).heatmaps
        assert torch.equal(reloaded(pixel_values=x).heatmaps, ref)
    assert main(["export", "--adapter_dir", str(out), "--export_dir", str(tmp_path / "merged")]) == 0
    from transformers import VitPoseForPoseEstimation

    stock = VitPoseForPoseEstimation.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(stock(pixel_values=x).heatmaps, ref, atol=1e-4, rtol=0)
        torch.testing.assert_close(
            load_exported(tmp_path / "merged")(pixel_values=x).heatmaps, ref, atol=1e-4, rtol=0
        )
    assert stock.config.id2label[0] == schema.names[0]


def test_predict_writes_json_and_png(run, tmp_path, capsys, coco_dir):
    from PIL import Image
    from vision_pose.figures import make_figures

    out, _ = run
    _, pil = make_figures(1, 64, seed=9)
    img = tmp_path / "person.png"
    pil[1].save(img)
    pred_dir = tmp_path / "pred"
    assert main(["predict", "--adapter_dir", str(out), "--predictions_dir", str(pred_dir), str(img),
                 str(coco_dir / "train.json")]) == 0  # fmt: skip
    results = json.loads((pred_dir / "keypoints.json").read_text())
    n_coco = len(json.loads((coco_dir / "train.json").read_text())["annotations"])
    assert len(results) == 1 + n_coco
    first = results[0]
    assert first["file_name"] == str(img) and len(first["keypoints"]) == 39
    xy = np.asarray(first["keypoints"]).reshape(-1, 3)[:, :2]
    # Inside the crop: the whole 64x64 image as the box, grown to 3:4 and padded 1.25x -> 80x107 around (32, 32).
    assert (np.abs(xy - 32) <= [40.5, 53.5]).all()
    png = pred_dir / first["drawing"]
    assert png.is_file() and Image.open(png).size == (384, 384)
    assert "left_hand" in capsys.readouterr().out


def test_eval_cli(run):
    out, _ = run
    assert main(["eval", "--adapter_dir", str(out), "--max_drawn", "2"]) == 0
    m = json.loads((out / "eval_metrics.json").read_text())
    assert 0 <= m["eval_pck@0.1"] <= 1 and "eval_oks_ap" in m
    assert len(list((out / "skeletons_eval").glob("*.png"))) == 2


def test_predict_bad_inputs_exit_2(run, tmp_path, capsys):
    out, _ = run
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["predict", "--adapter_dir", str(out), str(bad)]) == 2
    assert main(["predict", "--adapter_dir", str(out), str(tmp_path / "nope.png")]) == 2
    assert main(["predict", "--adapter_dir", str(tmp_path / "no-run"), "x.png"]) == 2
    err = capsys.readouterr().err
    assert "bad.png" in err and "not found" in err and "Traceback" not in err


def test_train_bad_annotation_exit_2(coco_dir, tmp_path, capsys):
    path = coco_dir / "train.json"
    coco = json.loads(path.read_text())
    coco["annotations"][1]["category_id"] = 42
    path.write_text(json.dumps(coco))
    rc = main(["train", "--config", "tiny", "--dataset", str(path), "--output_dir", str(tmp_path / "out")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "annotations[1]" in err and "unknown category_id 42" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()


def test_make_data_cli_round_trip(tmp_path):
    from vision_pose.config import PoseDataArgs
    from vision_pose.data import load_splits

    d = tmp_path / "figs"
    args = [
        "make-data",
        "--data_dir",
        str(d),
        "--figures_train",
        "3",
        "--figures_val",
        "2",
        "--figure_size",
        "48",
    ]
    assert main(args) == 0
    assert (d / "train.json").is_file() and len(list((d / "images" / "val").glob("*.png"))) == 2
    train, ev = load_splits(PoseDataArgs(dataset=str(d)))
    assert len(train.images) == 3 and len(ev.images) == 2
    assert main(args) == 0  # re-running replaces its own output
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    assert main(["make-data", "--data_dir", str(tmp_path / "other")]) == 2
    assert (tmp_path / "other" / "keep.txt").is_file()


@pytest.mark.parametrize("cmd", ["train", "eval", "predict", "export", "make-data"])
def test_help(cmd, capsys):
    assert main([cmd, "--help"]) == 0
    assert "--lora_r" in capsys.readouterr().out
