import numpy as np
from transformers import EvalPrediction
from vision_cls.metrics import compute_metrics


def test_compute_metrics_from_logits():
    logits = np.array([[2.0, 0.1, 0.0], [0.0, 3.0, 0.1], [0.0, 0.2, 1.0], [5.0, 0.0, 0.0]])
    labels = np.array([0, 1, 2, 1])  # last one wrong
    m = compute_metrics(EvalPrediction(predictions=logits, label_ids=labels), num_classes=3)
    assert m["accuracy"] == 0.75
    # class0 p=.5 r=1 f1=2/3; class1 p=1 r=.5 f1=2/3; class2 f1=1
    assert np.isclose(m["macro_f1"], (2 / 3 + 2 / 3 + 1) / 3)
