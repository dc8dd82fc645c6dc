"""Classification metrics as plain numpy functions (local: `evaluate.load` needs the hub, which we can't reach).

Everything derives from the confusion matrix, so accuracy, F1 and the PNG always agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(labels: Sequence[int], preds: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts [true, predicted] for class ids 0..num_classes-1."""
    labels = np.asarray(labels, dtype=np.int64).ravel()
    preds = np.asarray(preds, dtype=np.int64).ravel()
    if labels.shape != preds.shape:
        raise ValueError(f"labels {labels.shape} and preds {preds.shape} differ in length")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def per_class(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class; 0 where undefined (no predictions / no samples)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def classification_metrics(
    labels, preds, num_classes: int, names: Sequence[str] | None = None, per_class_metrics: bool = False
) -> dict[str, float]:
    """accuracy, macro_f1, weighted_f1 (and per-class precision/recall/F1 when asked).

    Macro F1 averages over classes present in the labels, as scikit-learn does with `labels=present`.
    """
    cm = confusion_matrix(labels, preds, num_classes)
    stats = per_class(cm)
    total = cm.sum()
    present = stats["support"] > 0
    out = {
        "accuracy": float(np.trace(cm) / total) if total else 0.0,
        "macro_f1": float(stats["f1"][present].mean()) if present.any() else 0.0,
        "weighted_f1": float((stats["f1"] * stats["support"]).sum() / total) if total else 0.0,
    }
    if per_class_metrics:
        names = list(names) if names is not None else [str(i) for i in range(num_classes)]
        for i, name in enumerate(names):
            out[f"precision_{name}"] = float(stats["precision"][i])
            out[f"recall_{name}"] = float(stats["recall"][i])
            out[f"f1_{name}"] = float(stats["f1"][i])
    return out


def accuracy(labels, preds) -> float:
    """Fraction of exact matches."""
    labels, preds = np.asarray(labels).ravel(), np.asarray(preds).ravel()
    return float((labels == preds).mean()) if labels.size else 0.0
