import numpy as np
import pytest
import torch
from transformers import EvalPrediction
from vision_det.data import coco_to_detr
from vision_det.metrics import CocoMetrics, coco_evaluate, outputs_to_detections

NAMES = ["circle", "square"]
GT = {
    "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 0, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [60, 50, 30, 30], "area": 900, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 0, "bbox": [5, 50, 50, 45], "area": 2250, "iscrowd": 0},
    ],
    "categories": [{"id": 0, "name": "circle"}, {"id": 1, "name": "square"}],
}


def _dets(shift=0.0, score=0.9):
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": [a["bbox"][0] + shift, *a["bbox"][1:]],
            "score": score,
        }
        for a in GT["annotations"]
    ]


def test_perfect_detections_score_one():
    m = coco_evaluate(GT, _dets(), NAMES)
    for k in ("AP", "AP50", "AP75", "APs", "APm", "AR100", "AP_circle", "AP_square"):
        assert m[k] == pytest.approx(1.0), k
    assert m["APl"] == -1.0  # no box over 96x96 px: COCO's "nothing to score"


def test_shifted_boxes_score_lower():
    # shift by 1/4 of the width: IoU ~0.6 for the 40 px box, ~0.6 for 30 px -> matched at .5, not at .75
    m = coco_evaluate(
        GT, [{**d, "bbox": [d["bbox"][0] + d["bbox"][2] / 4, *d["bbox"][1:]]} for d in _dets()], NAMES
    )
    assert m["AP50"] == pytest.approx(1.0)
    assert m["AP75"] == pytest.approx(0.0)
    assert 0.0 < m["AP"] < 0.5


def test_wrong_class_and_false_positive():
    dets = _dets()
    dets[1] = {**dets[1], "category_id": 0}  # the square called a circle
    m = coco_evaluate(GT, dets, NAMES)
    assert m["AP_square"] == 0.0 and m["AP_circle"] < 1.0
    # a confident false positive ranked above the true circles lowers AP, a low-scored one does not
    fp = {"image_id": 2, "category_id": 0, "bbox": [70, 5, 20, 20]}
    hi = coco_evaluate(GT, _dets() + [{**fp, "score": 0.99}], NAMES)["AP_circle"]
    lo = coco_evaluate(GT, _dets() + [{**fp, "score": 0.01}], NAMES)["AP_circle"]
    assert hi < lo == pytest.approx(1.0)


def test_no_detections_is_zero():
    assert coco_evaluate(GT, [], NAMES)["AP50"] == 0.0


def _model_outputs(num_queries=5, sigmoid=False):
    """Logits/boxes that put each GT box on one query, confidently, other queries on 'no object'."""
    n_cls = len(NAMES) if sigmoid else len(NAMES) + 1
    logits = np.full((2, num_queries, n_cls), -8.0, dtype=np.float32)
    if not sigmoid:
        logits[..., -1] = 8.0
    boxes = np.full((2, num_queries, 4), 0.5, dtype=np.float32)
    slot = {1: 0, 2: 0}
    for a in GT["annotations"]:
        b, q = a["image_id"] - 1, slot[a["image_id"]]
        slot[a["image_id"]] += 1
        logits[b, q] = -8.0
        logits[b, q, a["category_id"]] = 8.0
        boxes[b, q] = coco_to_detr(torch.tensor(a["bbox"], dtype=torch.float32), (100, 100))[0].numpy()
    return logits, boxes


@pytest.mark.parametrize("sigmoid", [False, True])
def test_outputs_to_detections_round_trip(sigmoid):
    logits, boxes = _model_outputs(sigmoid=sigmoid)
    dets = outputs_to_detections(logits, boxes, [1, 2], [(100, 100)] * 2, num_classes=len(NAMES))
    assert coco_evaluate(GT, dets, NAMES)["AP"] == pytest.approx(1.0)
    kept = outputs_to_detections(
        logits, boxes, [1, 2], [(100, 100)] * 2, threshold=0.5, num_classes=len(NAMES)
    )
    assert len(kept) == 3 and all(d["score"] > 0.99 for d in kept)
    found = sorted((d["image_id"], d["category_id"], d["bbox"]) for d in kept)
    want = sorted((a["image_id"], a["category_id"], a["bbox"]) for a in GT["annotations"])
    for (fi, fc, fb), (wi, wc, wb) in zip(found, want):
        assert (fi, fc) == (wi, wc)
        np.testing.assert_allclose(fb, wb, atol=0.02)


def test_coco_metrics_accumulates_batches():
    """The Trainer hook, fed one image per eval batch, equals scoring everything at once."""
    logits, boxes = _model_outputs()
    logits[1, 0, 0], logits[1, 0, -1] = 1.0, 0.5  # image 2: less confident -> still AP 1.0
    metric = CocoMetrics(NAMES)
    for b in range(2):
        img = GT["images"][b]
        anns = [a for a in GT["annotations"] if a["image_id"] == img["id"]]
        label = {
            "image_id": torch.tensor([img["id"]]),
            "orig_size": torch.tensor([100, 100]),
            "boxes": coco_to_detr(torch.tensor([a["bbox"] for a in anns], dtype=torch.float32), (100, 100)),
            "class_labels": torch.tensor([a["category_id"] for a in anns]),
            "iscrowd": torch.zeros(len(anns)),
        }
        out = metric(
            EvalPrediction(predictions=(logits[b : b + 1], boxes[b : b + 1]), label_ids=[label]),
            compute_result=b == 1,
        )
        assert (out == {}) == (b == 0)
    assert out["AP"] == pytest.approx(1.0) and out["AP_square"] == pytest.approx(1.0)
    assert "APl" not in out and "APs" in out  # undefined (-1) metrics are left out
    assert metric.detections == []  # reset for the next evaluation


def test_predictions_survive_trimming_of_the_last_eval_batch():
    """Regression: gathering must trim the last eval batch per image, never cut an image's boxes."""
    from vision_det.config import DetTrainingArguments
    from vision_det.metrics import preprocess_logits_for_metrics, split_predictions

    logits, boxes = (torch.from_numpy(a) for a in _model_outputs())
    packed = preprocess_logits_for_metrics(({"loss_ce": 0.0}, logits, boxes), None)
    assert packed.shape[:2] == logits.shape[:2]  # one batch-first tensor
    # what accelerate does with eval_use_gather_object on the last batch: keep the first `remainder` items
    got_l, got_b = split_predictions(packed[:1])
    np.testing.assert_allclose(got_l, logits[:1].numpy()) and np.testing.assert_allclose(
        got_b, boxes[:1].numpy()
    )
    per_image = split_predictions(list(packed))  # the multi-process gather_object form
    np.testing.assert_allclose(per_image[1], boxes.numpy())
    assert DetTrainingArguments(output_dir="x", use_cpu=True).eval_use_gather_object
