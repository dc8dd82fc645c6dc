"""COCO detection metrics for vision-det through pycocotools' COCOeval (local code: no hub download).

`coco_evaluate(gt, detections, names)` is the core (AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l and
per-class AP); `CocoMetrics` feeds it from the Trainer's eval batches. COCO's convention is kept: a
metric with no ground truth to score (e.g. APs when there are no small objects) is -1.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

# Order of COCOeval.stats (the 12 numbers its summarize() prints).
STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def _quiet():
    """pycocotools prints progress to stdout; the command's stdout is for results only."""
    return contextlib.redirect_stdout(io.StringIO())


def coco_evaluate(gt: dict, detections: list[dict], names: list[str]) -> dict[str, float]:
    """COCO box metrics of `detections` against `gt`.

    Args:
        gt: COCO dict {images: [{id, width, height}], annotations: [{id, image_id, category_id, bbox,
            area, iscrowd}], categories: [{id, name}]}; boxes COCO [x, y, w, h] in pixels.
        detections: COCO results [{image_id, category_id, bbox [x, y, w, h], score}].
        names: class names; category id i is names[i] (for the per-class keys `AP_<name>`).

    Returns:
        {AP, AP50, ..., ARl, AP_<name>...} as floats (0..1, or -1 where nothing was there to score).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    keys = STAT_NAMES + [f"AP_{n}" for n in names]
    if not gt["annotations"]:
        return dict.fromkeys(keys, -1.0)
    if not detections:
        # loadRes cannot take an empty list; no detections means zero precision and recall.
        return dict.fromkeys(keys, 0.0)
    with _quiet():
        coco_gt = COCO()
        coco_gt.dataset = {"info": {}, **gt}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([dict(d) for d in detections])
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {k: float(v) for k, v in zip(STAT_NAMES, ev.stats)}
    # precision: [IoU thresholds, recall points, classes, area ranges, max dets]; area "all", 100 dets.
    precision = ev.eval["precision"][:, :, :, 0, -1]
    cat_ids = ev.params.catIds
    for k, name in enumerate(names):
        if k not in cat_ids:
            out[f"AP_{name}"] = -1.0
            continue
        p = precision[:, :, cat_ids.index(k)]
        p = p[p > -1]
        out[f"AP_{name}"] = float(p.mean()) if p.size else -1.0
    return out


def outputs_to_detections(
    logits,
    pred_boxes,
    image_ids,
    sizes,
    threshold: float = 0.0,
    num_classes: int | None = None,
    top_k: int = 100,
) -> list[dict]:
    """DETR-family outputs -> COCO results in each image's pixels (the models' own post-processing).

    Args:
        logits: (B, Q, C+1) softmax logits whose last class is "no object" (DETR), or (B, Q, C) sigmoid
            logits when C == num_classes (Conditional / Deformable DETR, trained with focal loss).
        pred_boxes: (B, Q, 4) normalised [cx, cy, w, h] relative to the unpadded image.
        image_ids: B ints.
        sizes: B (height, width) of the images the boxes should be scaled to.
        threshold: minimum score kept (0 for mAP: COCOeval ranks by score itself).
        num_classes: number of real classes; tells the two logit layouts apart.
        top_k: sigmoid layout only: keep the k best (query, class) pairs per image, as those models do.

    Returns:
        [{image_id, category_id, bbox [x, y, w, h], score}] with category ids 0..C-1.
    """
    import torch

    from .data import detr_to_coco

    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float32)
    boxes = torch.as_tensor(np.asarray(pred_boxes), dtype=torch.float32)
    sigmoid = num_classes is not None and logits.shape[-1] == num_classes
    out = []
    for b, (iid, (h, w)) in enumerate(zip(image_ids, sizes)):
        coco = detr_to_coco(boxes[b], (int(h), int(w)))
        if sigmoid:
            # every (query, class) pair is a candidate; one query may propose two classes
            flat = logits[b].sigmoid().flatten()
            scores, idx = flat.topk(min(top_k, flat.numel()))
            queries, classes = idx // logits.shape[-1], idx % logits.shape[-1]
        else:
            scores, classes = logits[b].softmax(-1)[..., :-1].max(-1)
            queries = torch.arange(len(scores))
        for s, q, c in zip(scores.tolist(), queries.tolist(), classes.tolist()):
            if s >= threshold:
                out.append(
                    {
                        "image_id": int(iid),
                        "category_id": int(c),
                        "bbox": [round(float(v), 2) for v in coco[q]],
                        "score": round(float(s), 5),
                    }
                )
    return out


def labels_to_ground_truth(labels) -> tuple[list[dict], list[dict]]:
    """Processor targets (normalised cxcywh boxes + orig_size) -> COCO (images, annotations) in pixels."""
    from .data import detr_to_coco

    images, annotations = [], []
    for t in labels:
        iid = int(np.asarray(t["image_id"]).reshape(-1)[0])
        h, w = (int(v) for v in np.asarray(t["orig_size"]).reshape(-1)[:2])
        images.append({"id": iid, "width": w, "height": h})
        boxes = detr_to_coco(np.asarray(t["boxes"]).reshape(-1, 4), (h, w))
        crowd = np.asarray(t.get("iscrowd", np.zeros(len(boxes)))).reshape(-1)
        for box, cat, c in zip(boxes.tolist(), np.asarray(t["class_labels"]).reshape(-1).tolist(), crowd):
            annotations.append(
                {
                    "image_id": iid,
                    "category_id": int(cat),
                    "bbox": box,
                    "area": box[2] * box[3],  # box area: the scale COCO's small/medium/large ranges apply to
                    "iscrowd": int(c),
                }
            )
    return images, annotations


def preprocess_logits_for_metrics(outputs, labels):
    """Keep only (logits, pred_boxes) of DETR's output tuple so eval does not hold hidden states."""
    import torch

    tensors = [
        t for t in (outputs if isinstance(outputs, (tuple, list)) else (outputs,)) if torch.is_tensor(t)
    ]
    logits, boxes = tensors[0], tensors[1]  # ModelOutput order: (loss_dict,) logits, pred_boxes, (aux,) ...
    # One (B, Q, C + 4) tensor, batch first: with eval_use_gather_object the last eval batch is trimmed
    # as a whole (a tuple would be cut to its first `remainder` members); `split_predictions` undoes it.
    return torch.cat([logits, boxes.to(logits.dtype)], dim=-1)


def split_predictions(predictions) -> tuple[np.ndarray, np.ndarray]:
    """(logits, boxes) from preprocess_logits_for_metrics' output, a (logits, boxes) pair, or a list of
    per-image / per-batch tensors (what gather_object returns across processes)."""
    if isinstance(predictions, tuple):
        return _np(predictions[0]), _np(predictions[1])
    if isinstance(predictions, list):
        arrays = [_np(p) for p in predictions]
        joined = np.concatenate(arrays) if arrays[0].ndim == 3 else np.stack(arrays)
    else:
        joined = _np(predictions)
    return joined[..., :-4], joined[..., -4:]


class CocoMetrics:
    """Trainer `compute_metrics` for `batch_eval_metrics=True`: gathers detections and targets batch by
    batch (DETR targets are per-image dicts that cannot be concatenated), scores at the last batch."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self._reset()

    def _reset(self):
        self.images, self.annotations, self.detections = [], [], []

    def add(self, predictions, labels) -> None:
        logits, boxes = split_predictions(predictions)
        images, annotations = labels_to_ground_truth(labels)
        self.images += images
        self.annotations += annotations
        sizes = [(im["height"], im["width"]) for im in images]
        self.detections += outputs_to_detections(
            logits, boxes, [im["id"] for im in images], sizes, num_classes=len(self.names)
        )

    def compute(self) -> dict[str, float]:
        annotations = [{**a, "id": i + 1} for i, a in enumerate(self.annotations)]
        gt = {
            "images": self.images,
            "annotations": annotations,
            "categories": [{"id": i, "name": n} for i, n in enumerate(self.names)],
        }
        result = coco_evaluate(gt, self.detections, self.names)
        self._reset()
        # COCO's -1 ("nothing to score here", e.g. APl without large objects) is not a score: left out of
        # the Trainer's metrics so it neither squashes the curves nor reads as a result; the table says n/a.
        return {k: v for k, v in result.items() if v >= 0}

    def __call__(self, eval_pred, compute_result: bool = True) -> dict[str, float]:
        preds, labels = eval_pred.predictions, eval_pred.label_ids
        if _is_batch_list(preds):  # eval_do_concat_batches=False without batch metrics: a list of batches
            for p, lbl in zip(preds, labels):
                self.add(p, lbl)
        else:
            self.add(preds, labels)
        return self.compute() if compute_result else {}


def _np(x):
    import torch

    return x.detach().float().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _is_batch_list(preds) -> bool:
    """True for [(logits, boxes), ...] (one tuple per batch), False for one batch's (logits, boxes)."""
    return isinstance(preds, list) and len(preds) > 0 and isinstance(preds[0], (tuple, list))


def format_table(metrics: dict[str, float], names: list[str], prefix: str = "") -> str:
    """The COCO summary and per-class AP as an aligned text table."""
    rows = [("AP @[.50:.95]", "AP"), ("AP @.50", "AP50"), ("AP @.75", "AP75")]
    rows += [("AP small / medium / large", ("APs", "APm", "APl"))]
    rows += [("AR @1 / @10 / @100 dets", ("AR1", "AR10", "AR100"))]
    rows += [("AR small / medium / large", ("ARs", "ARm", "ARl"))]
    lines = []
    for label, key in rows:
        keys = key if isinstance(key, tuple) else (key,)
        vals = " / ".join(_fmt(metrics.get(prefix + k)) for k in keys)
        lines.append(f"  {label.ljust(26)} {vals}")
    if names:
        lines.append("  per-class AP @[.50:.95]")
        width = max(len(n) for n in names)
        for n in names:
            lines.append(f"    {n.ljust(width)}  {_fmt(metrics.get(f'{prefix}AP_{n}'))}")
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "  n/a"
    return "  n/a" if v < 0 else f"{v:.3f}"
