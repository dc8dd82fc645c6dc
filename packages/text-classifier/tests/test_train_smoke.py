"""The real CLI on the tiny config: files written, LoRA invariant, predict (--json, --file), interactive via
stdin, eval, export parity, the Python API, and bad input -> exit 2 with nothing written."""

import io
import json
import subprocess
import sys

import pytest
import torch
from lora_shared.testing import assert_only_lora_changed, capture_built_model
from text_classifier import train as train_mod
from text_classifier.cli import main
from text_classifier.data import QUESTION_LABELS

DP = QUESTION_LABELS[0]


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
        "base_model/model.safetensors",
        "tokenizer/tokenizer.json",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["eval_accuracy"] <= 1 and 0 <= metrics["eval_macro_f1"] <= 1
    assert f"eval_precision_{DP}" in metrics and f"eval_recall_{DP}" in metrics
    # LoRA r=4 on query/value of 2 layers (4 x (4x32 + 32x4)) + a 3-class head (32x3 + 3).
    assert metrics["trainable_params"] == 4 * (4 * 32 + 32 * 4) + 32 * 3 + 3
    assert metrics["adapter_mb"] < metrics["base_mb"]
    assert json.loads((out / "labels.json").read_text())["labels"] == QUESTION_LABELS
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in rows)
    assert not list(out.glob(".*tmp"))  # no temp dirs left


def test_lora_invariant(run):
    _, captured = run
    counts = assert_only_lora_changed(captured["before"], captured["model"])
    assert counts["adapter_changed"] >= 4


def test_predict_cli_text_json_topk(run, capsys):
    out, _ = run
    capsys.readouterr()
    assert (
        main(["predict", "--adapter_dir", str(out), "--json", "--top_k", "2", "数据清洗流程是什么？", "你好"])
        == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["text"] for r in rows] == ["数据清洗流程是什么？", "你好"]
    for r in rows:
        assert r["label"] in QUESTION_LABELS and 0 < r["confidence"] <= 1
        assert len(r["top_k"]) == 2 and r["top_k"][0]["label"] == r["label"]
        assert sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-4)
    assert main(["predict", "--adapter_dir", str(out), "--top_k", "1", "数据清洗流程是什么？"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("数据清洗流程是什么？\t") and "confidence" in line and "top-1" in line


def test_predict_file_batch_with_progress(run, tmp_path, capsys):
    out, _ = run
    qs = tmp_path / "questions.txt"
    qs.write_text("数据清洗流程是什么？\n\n你好\n今天天气怎么样\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["predict", "--adapter_dir", str(out), "--file", str(qs), "--json"]) == 0
    cap = capsys.readouterr()
    rows = [json.loads(line) for line in cap.out.strip().splitlines()]
    assert [r["text"] for r in rows] == ["数据清洗流程是什么？", "你好", "今天天气怎么样"]  # input order
    assert "classifying" in cap.err  # the progress bar


def test_interactive_via_stdin(run, monkeypatch, capsys):
    out, _ = run
    # An empty line ends the loop (the line after it is never read).
    monkeypatch.setattr(sys, "stdin", io.StringIO("数据清洗流程是什么？\n你好\n\n不会被读到\n"))
    capsys.readouterr()
    assert main(["interactive", "--adapter_dir", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        label, conf = line.split("\t")
        assert label in QUESTION_LABELS and conf.startswith("confidence 0.")
    # EOF (Ctrl-D) without a trailing newline exits cleanly too; --json gives one object per line.
    monkeypatch.setattr(sys, "stdin", io.StringIO("你好"))
    assert main(["interactive", "--adapter_dir", str(out), "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["text"] == "你好" and row["label"] in QUESTION_LABELS
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["interactive", "--adapter_dir", str(out)]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.slow  # a fresh interpreter importing torch + transformers: ~10 s of CPU
def test_interactive_real_pipe(run):
    """`echo "..." | text-classifier interactive` in a real process: label + confidence, exit 0."""
    out, _ = run
    proc = subprocess.run(
        [sys.executable, "-m", "text_classifier", "interactive", "--adapter_dir", str(out)],
        input="数据清洗流程是什么？\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    label, conf = proc.stdout.strip().split("\t")
    assert label in QUESTION_LABELS and conf.startswith("confidence ")
    assert "Traceback" not in proc.stderr


def test_classifier_api_and_reload_matches_trained(run):
    from text_classifier import Classifier

    out, captured = run
    clf = Classifier.from_pretrained(out)
    res = clf.classify("数据清洗流程是什么？")
    assert set(res) == {"label", "confidence", "scores"}
    assert res["label"] in QUESTION_LABELS and res["confidence"] == max(res["scores"].values())
    assert list(res["scores"])[0] == res["label"]
    batch = clf.classify_batch(["你好", "数据清洗流程是什么？"])
    assert batch[1] == res  # batched (padded, length-sorted) == alone
    # The reloaded adapter gives the trained model's logits.
    enc = clf.tokenizer(["数据清洗流程是什么？"], return_tensors="pt")
    trained = captured["model"].eval()
    with torch.no_grad():
        torch.testing.assert_close(clf.model(**enc).logits, trained(**enc).logits, atol=1e-6, rtol=0)


def test_export_merged_same_logits(run, tmp_path, capsys):
    from text_classifier import Classifier
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out, _ = run
    target = tmp_path / "merged"
    assert main(["export", "--adapter_dir", str(out), "--export_dir", str(target)]) == 0
    assert (target / "model.safetensors").is_file() and (target / "labels.json").is_file()
    merged = AutoModelForSequenceClassification.from_pretrained(target).eval()
    tok = AutoTokenizer.from_pretrained(target)
    clf = Classifier.from_pretrained(out)
    enc = tok(["数据清洗流程是什么？", "你好"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(merged(**enc).logits, clf.model(**enc).logits, atol=1e-4, rtol=0)
    assert merged.config.id2label[0] == DP
    assert not any("lora" in k for k in merged.state_dict())


def test_eval_cli(run, capsys):
    out, _ = run
    assert main(["eval", "--adapter_dir", str(out), "--max_eval_samples", "12"]) == 0
    metrics = json.loads((out / "eval_metrics.json").read_text())
    assert metrics["eval_samples"] == 12 and 0 <= metrics["eval_accuracy"] <= 1
    assert (out / "confusion_matrix_eval.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "name,content,where",
    [
        (
            "bad.jsonl",
            '{"text": "数据", "label": "数据平台相关问题"}\n{"text": "", "label": "通用对话"}\n',
            ":2:",
        ),
        ("bad.csv", "text,label\n你好,通用对话\n数据,未知类\n", ":3:"),
        ("bad.tsv", "text\tlabel\n你好\t通用对话\n坏\t行\t多\n", ":3:"),
    ],
)
def test_train_bad_data_exit_2_nothing_written(tmp_path, capsys, name, content, where):
    data = tmp_path / name
    data.write_text(content, encoding="utf-8")
    args = ["train", "--config", "tiny", "--dataset", str(data), "--output_dir", str(tmp_path / "out")]
    if name == "bad.csv":
        args += ["--labels", "数据平台相关问题,通用对话"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{data}{where}" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "out" / "resolved_config.yaml").exists()


def test_predict_bad_input_exit_2(run, tmp_path, capsys):
    out, _ = run
    assert main(["predict", "--adapter_dir", str(out), "--file", str(tmp_path / "nope.txt")]) == 2
    assert main(["predict", "--adapter_dir", str(out), "  "]) == 2
    assert main(["predict", "--adapter_dir", str(out)]) == 2
    assert main(["predict", "--adapter_dir", str(tmp_path / "no-run"), "你好"]) == 2
    err = capsys.readouterr().err
    assert "nope.txt" in err and "not found" in err and "Traceback" not in err


@pytest.mark.parametrize("cmd", ["train", "eval", "predict", "interactive", "export"])
def test_help(cmd, capsys):
    assert main([cmd, "--help"]) == 0
    text = capsys.readouterr().out
    assert "--lora_r" in text and "--max_length" in text and "--truncation_side" in text
