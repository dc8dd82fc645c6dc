import numpy as np
from lora_shared.metrics import accuracy, classification_metrics, confusion_matrix, per_class
from lora_shared.plots import plot_confusion_matrix, plot_curves


def test_confusion_matrix_counts():
    cm = confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_known_f1():
    # class 0: p=1/2 r=1/2 f1=1/2 ; class 1: p=2/3 r=1 f1=0.8 ; class 2: p=0 r=0 f1=0
    m = classification_metrics(
        [0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3, names=["a", "b", "c"], per_class_metrics=True
    )
    assert m["accuracy"] == 0.6
    assert np.isclose(m["macro_f1"], (0.5 + 0.8 + 0) / 3)
    assert np.isclose(m["weighted_f1"], (2 * 0.5 + 2 * 0.8 + 0) / 5)
    assert np.isclose(m["precision_b"], 2 / 3) and m["recall_b"] == 1.0


def test_perfect_and_absent_classes():
    m = classification_metrics([1, 1, 2], [1, 1, 2], 4)
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0  # classes 0 and 3 absent: not averaged in
    assert per_class(confusion_matrix([0], [1], 2))["precision"].tolist() == [0.0, 0.0]
    assert accuracy([1, 2, 3], [1, 2, 0]) == 2 / 3


def test_plots_write_png(tmp_path):
    cm = confusion_matrix([0, 1, 1], [0, 1, 0], 2)
    p = plot_confusion_matrix(cm, ["x", "y"], tmp_path / "cm.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hist = [
        {"step": 1, "loss": 2.0},
        {"step": 2, "loss": 1.0},
        {"step": 2, "eval_loss": 1.5, "eval_accuracy": 0.5},
    ]
    c = plot_curves(hist, tmp_path / "curves.png")
    assert c.stat().st_size > 1000
    assert plot_curves([], tmp_path / "none.png") is None
