"""Metrics for text-classifier: accuracy, macro-F1, per-class precision/recall (local code: no hub download),
and the confusion-matrix PNG with label names a headless box can draw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lora_shared.metrics import classification_metrics, confusion_matrix

# Fonts with CJK glyphs matplotlib may find on a desktop or server; first one installed wins.
CJK_FONTS = [
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
    "Heiti SC",
    "Arial Unicode MS",
]


def compute_metrics(eval_pred, num_classes: int) -> dict[str, float]:
    """Trainer hook: logits -> accuracy, macro_f1, weighted_f1."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    logits = logits[0] if isinstance(logits, tuple) else logits
    return classification_metrics(labels, np.argmax(logits, axis=-1), num_classes)


def full_report(labels, preds, names: list[str]) -> dict[str, float]:
    """accuracy, macro/weighted F1 and per-class precision / recall / F1 (keys like precision_<name>)."""
    return classification_metrics(labels, preds, len(names), names=names, per_class_metrics=True)


def _has_cjk(s: str) -> bool:
    return any("\u2e80" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" for ch in s)


def _cjk_font() -> str | None:
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in installed), None)


def plot_labels(names: list[str]) -> list[str]:
    """Tick labels for the PNG: the names themselves when a CJK font is installed (it is then made the
    default), else pinyin (snownlp), since DejaVu draws Chinese as empty boxes."""
    if not any(_has_cjk(n) for n in names):
        return list(names)
    font = _cjk_font()
    if font:
        import matplotlib

        matplotlib.rcParams["font.sans-serif"] = [font, *matplotlib.rcParams["font.sans-serif"]]
        matplotlib.rcParams["font.family"] = "sans-serif"
        return list(names)
    from snownlp import SnowNLP

    return [" ".join(SnowNLP(n).pinyin) if _has_cjk(n) else n for n in names]


def save_confusion_png(labels, preds, names: list[str], path: str | Path, title: str) -> np.ndarray:
    """Confusion matrix (rows true, columns predicted) to a PNG; returns the counts."""
    from lora_shared.plots import plot_confusion_matrix

    cm = confusion_matrix(labels, preds, len(names))
    plot_confusion_matrix(cm, plot_labels(names), path, title=title)
    return cm
