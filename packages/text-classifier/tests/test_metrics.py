"""Metrics on hand-made predictions with a known answer, and the confusion-matrix PNG."""

import subprocess
import sys

import numpy as np
import pytest
from text_classifier import metrics
from text_classifier.metrics import compute_metrics, full_report, pinyin, plot_labels, save_confusion_png
from transformers import EvalPrediction

NAMES = ["数据平台相关问题", "通用对话", "无关问题"]
# true:  0 0 0 0 1 1 1 2 2 2
# pred:  0 0 0 1 1 1 2 2 2 0
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
PREDS = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0])


def _logits(preds, k=3):
    out = np.zeros((len(preds), k), dtype=np.float32)
    out[np.arange(len(preds)), preds] = 5.0
    return out


def test_compute_metrics_known_answer():
    m = compute_metrics(EvalPrediction(predictions=_logits(PREDS), label_ids=LABELS), num_classes=3)
    assert m["accuracy"] == pytest.approx(0.7)
    # class 0: P=3/4 R=3/4 F1=.75; class 1: P=2/3 R=2/3 F1=2/3; class 2: P=2/3 R=2/3 F1=2/3
    assert m["macro_f1"] == pytest.approx((0.75 + 2 / 3 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((4 * 0.75 + 3 * 2 / 3 + 3 * 2 / 3) / 10)
    # (logits, extras) tuples from some models: the logits come first.
    m2 = compute_metrics(EvalPrediction(predictions=(_logits(PREDS), None), label_ids=LABELS), num_classes=3)
    assert m2 == m


def test_full_report_per_class_precision_recall():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 0, 0, 1, 0, 2])  # class 0 over-predicted
    r = full_report(labels, preds, NAMES)
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["precision_数据平台相关问题"] == pytest.approx(2 / 4) and r["recall_数据平台相关问题"] == 1.0
    assert r["precision_通用对话"] == 1.0 and r["recall_通用对话"] == 0.5
    assert r["f1_无关问题"] == pytest.approx(2 / 3)


def test_perfect_and_all_wrong():
    assert full_report(LABELS, LABELS, NAMES)["macro_f1"] == 1.0
    assert full_report(LABELS, (LABELS + 1) % 3, NAMES)["accuracy"] == 0.0


def test_confusion_png(tmp_path):
    path = tmp_path / "cm.png"
    cm = save_confusion_png(LABELS, PREDS, NAMES, path, "test")
    assert cm.tolist() == [[3, 1, 0], [0, 2, 1], [1, 0, 2]]  # rows true, columns predicted
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_plot_labels_never_draw_empty_boxes():
    out = plot_labels(NAMES)
    assert len(out) == 3 and all(out)
    assert plot_labels(["negative", "positive"]) == ["negative", "positive"]


# What `" ".join(snownlp.SnowNLP(text).pinyin)` returns (snownlp 0.12.3): polyphones by word, other text
# split on whitespace, characters outside the table kept.
PINYIN = {
    "数据平台相关问题": "shu ju ping tai xiang guan wen ti",
    "重要 vs 重新": "zhong yao vs chong xin",
    "A类 银行卡问题!": "A lei yin hang ka wen ti !",
    "B2B 对接": "B2B dui jie",
    "𠀀字": "𠀀 zi",
}


def test_pinyin_matches_snownlp():
    assert {t: pinyin(t) for t in PINYIN} == PINYIN


def test_pinyin_labels_without_a_cjk_font(monkeypatch):
    monkeypatch.setattr(metrics, "_cjk_font", lambda: None)
    assert plot_labels([*NAMES, "other"]) == [
        "shu ju ping tai xiang guan wen ti",
        "tong yong dui hua",
        "wu guan wen ti",
        "other",
    ]


def test_pinyin_labels_do_not_import_snownlp():
    # `import snownlp` loads all its models: +413 MB resident for the rest of the process, ~6 s, at the
    # end of every training run (it was the text-classifier offline peak-RSS gap of `make bench`).
    code = (
        "import sys; from text_classifier import metrics; metrics._cjk_font = lambda: None; "
        "assert metrics.plot_labels(['无关问题']) == ['wu guan wen ti']; "
        "assert 'snownlp' not in sys.modules, sorted(m for m in sys.modules if 'snownlp' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
