"""The real CLI on the tiny config: files written, LoRA invariant, reload/merge parity, predict, bad input."""

import json

import pytest
import torch
from lora_shared.testing import assert_only_lora_changed, capture_built_model
from vision_cls import train as train_mod
from vision_cls.cli import main


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
        "confusion_matrix.png",
        "labels.json",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["eval_accuracy"] <= 1
    assert metrics["trainable_params"] == 1189  # LoRA r=4 on q/v of 2 layers + 5-class head
    assert metrics["adapter_mb"] < metrics["base_mb"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("samples_per_s" in r and "peak_rss_mb" in r for r in rows)
    assert not list(out.glob(".*tmp"))  # no temp dirs left


def test_lora_invariant(run):
    _, captured = run
    counts = assert_only_lora_changed(captured["before"], captured["model"])
    assert counts["adapter_changed"] >= 4


def test_reload_and_merge_give_same_logits(run, tmp_path):
    from lora_shared.cli import build_config
    from vision_cls.cli import APP
    from vision_cls.model import load_trained

    out, captured = run
    cmd = next(c for c in APP.commands if c.name == "export")
    cfg, _ = build_config(APP, cmd, ["--adapter_dir", str(out)])
    reloaded, labels, (size, _, _) = load_trained(cfg)
    x = torch.randn(3, 3, size, size)
    trained = captured["model"].eval()
    with torch.no_grad():
        ref = trained(pixel_values=x).logits
        assert torch.equal(reloaded(pixel_values=x).logits, ref)
    assert main(["export", "--adapter_dir", str(out), "--export_dir", str(tmp_path / "merged")]) == 0
    from transformers import AutoModelForImageClassification

    merged = AutoModelForImageClassification.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(pixel_values=x).logits, ref, atol=1e-4, rtol=0)
    assert merged.config.id2label[0] == labels[0]


def test_predict_and_eval_cli(run, tmp_path, capsys):
    from vision_cls.data import make_demo_dataset

    out, _ = run
    img = tmp_path / "x.png"
    make_demo_dataset(1, 32)[0]["image"].save(img)
    capsys.readouterr()
    assert main(["predict", "--adapter_dir", str(out), "--json", "--top_k", "2", str(img)]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["image"] == str(img) and len(row["top_k"]) == 2
    assert abs(sum(t["score"] for t in row["top_k"])) <= 1.0 + 1e-6
    assert main(["eval", "--adapter_dir", str(out)]) == 0
    assert (out / "eval_metrics.json").is_file() and (out / "confusion_matrix_eval.png").is_file()


@pytest.mark.parametrize(
    "content,match",
    [(b"", "0 bytes"), (b"not an image", "not an image"), (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "corrupt")],
)
def test_predict_bad_image_exit_2(run, tmp_path, capsys, content, match):
    out, _ = run
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    assert main(["predict", "--adapter_dir", str(out), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.png" in err and match in err and "Traceback" not in err


def test_predict_missing_file_and_adapter(run, tmp_path, capsys):
    out, _ = run
    assert main(["predict", "--adapter_dir", str(out), str(tmp_path / "nope.png")]) == 2
    assert main(["predict", "--adapter_dir", str(tmp_path / "no-run"), "x.png"]) == 2
    assert "not found" in capsys.readouterr().err


def test_train_bad_folder_exit_2(tmp_path, capsys):
    from vision_cls.data import make_demo_dataset

    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "a" / "x.jpg").write_bytes(b"garbage")
    (tmp_path / "data" / "b").mkdir()
    make_demo_dataset(1, 32)[0]["image"].save(tmp_path / "data" / "b" / "ok.png")
    assert (
        main(
            [
                "train",
                "--config",
                "tiny",
                "--dataset",
                str(tmp_path / "data"),
                "--output_dir",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    assert "x.jpg" in capsys.readouterr().err
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("cmd", ["train", "eval", "predict", "export"])
def test_help(cmd, capsys):
    assert main([cmd, "--help"]) == 0
    assert "--lora_r" in capsys.readouterr().out
