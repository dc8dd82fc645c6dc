"""Metrics for vision-cls: accuracy and F1 from logits (local code: no hub download)."""

from __future__ import annotations

import numpy as np
from lora_shared.metrics import classification_metrics


def compute_metrics(eval_pred, num_classes: int) -> dict[str, float]:
    """Trainer hook: logits -> accuracy, macro_f1, weighted_f1."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    logits = logits[0] if isinstance(logits, tuple) else logits
    return classification_metrics(labels, np.argmax(logits, axis=-1), num_classes)
