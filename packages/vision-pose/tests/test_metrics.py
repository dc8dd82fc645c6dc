import numpy as np
import pytest
from transformers import EvalPrediction
from vision_pose.data import default_sigmas, figures_split
from vision_pose.metrics import compute_metrics, keypoint_metrics, oks_ap
from vision_pose.predict import to_results


def _gt(split):
    people = split.people
    return people, np.stack([np.asarray(a["keypoints"], float).reshape(-1, 3) for a in people])


def test_cocoeval_perfect_predictions_ap_1():
    split = figures_split(6, 64, seed=2, split="val")
    people, gt = _gt(split)
    preds = gt.copy()
    preds[..., 2] = 1.0  # score
    sig = default_sigmas(split.schema.names)
    m = oks_ap(split.coco_gt(), to_results(people, preds, split.schema.category_id), sig)
    assert m["oks_ap"] == pytest.approx(1.0) and m["oks_ap50"] == pytest.approx(1.0)
    # Moving every keypoint by 20% of the box size must cost AP.
    box = np.array([max(a["bbox"][2:]) for a in people])[:, None]
    bad = preds.copy()
    bad[..., 0] += 0.2 * box
    m2 = oks_ap(split.coco_gt(), to_results(people, bad, split.schema.category_id), sig)
    assert m2["oks_ap"] < 0.5


def test_keypoint_metrics_hand_made():
    gt = np.zeros((2, 3, 2))
    pred = gt.copy()
    pred[0, 0] = [3, 4]  # 5 px: > 0.05*50=2.5, <= 0.1*50=5
    pred[0, 1] = [1, 0]  # 1 px: within both
    pred[1, 2] = [30, 40]  # 50 px: outside both
    weight = np.array([[1, 1, 0], [1, 1, 1]])  # [0, 2] unlabelled: ignored even though perfect
    m = keypoint_metrics(pred, gt, weight, np.array([50.0, 50.0]), ["a", "b", "c"])
    assert m["pck@0.05"] == pytest.approx(3 / 5)  # 1 px and two exact
    assert m["pck@0.1"] == pytest.approx(4 / 5)
    assert m["mean_px_error"] == pytest.approx((5 + 1 + 0 + 0 + 50) / 5)
    assert m["error_a"] == pytest.approx(2.5) and m["error_c"] == pytest.approx(50.0)


def test_compute_metrics_on_crops():
    labels = np.zeros((1, 2, 5), np.float32)
    labels[..., 2], labels[..., 3], labels[..., 4] = 1, 20, 4  # box 20 units, 4 px per unit
    pred = np.zeros((1, 2, 3), np.float32)
    pred[0, 1, 0] = 1.5  # 1.5 > 0.05*20 = 1, <= 2
    m = compute_metrics(EvalPrediction(predictions=pred, label_ids=labels))
    assert m == {"pck@0.05": 0.5, "pck@0.1": 1.0}


def test_default_sigmas():
    assert default_sigmas(["nose", "left_wrist", "left_hand", "mystery"]) == [0.026, 0.062, 0.062, 0.072]
