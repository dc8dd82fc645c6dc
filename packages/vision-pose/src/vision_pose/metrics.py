"""Pose metrics: PCK@0.05 / PCK@0.1 (normalised by the person box), pixel errors, and OKS AP through
pycocotools' COCOeval(iouType="keypoints") with per-keypoint sigmas. Local code, no hub download."""

from __future__ import annotations

import contextlib
import io

import numpy as np

from .heatmaps import decode_heatmaps

PCK_THRESHOLDS = (0.05, 0.1)


def keypoint_metrics(pred_xy, gt_xy, weight, box_size, names=None, px_per_unit=None) -> dict[str, float]:
    """PCK@t (distance <= t * box_size), mean pixel error and, with `names`, the error per keypoint.

    Args:
        pred_xy, gt_xy: (N, K, 2) coordinates in one unit (image pixels, or heatmap pixels).
        weight: (N, K), >0 where the ground-truth keypoint is labelled (COCO v > 0).
        box_size: (N,) or (N, K) normaliser, max(box width, height) in the same unit.
        names: keypoint names for per-keypoint errors `error_<name>`.
        px_per_unit: (N,) or (N, K) factor to image pixels when the unit is not pixels.

    Returns:
        {"pck@0.05", "pck@0.1", "mean_px_error", "error_<name>"...}; keypoints never labelled give NaN errors.
    """
    pred_xy, gt_xy = np.asarray(pred_xy, np.float64), np.asarray(gt_xy, np.float64)
    valid = np.asarray(weight) > 0
    n, k = valid.shape
    box = np.broadcast_to(np.asarray(box_size, np.float64).reshape(n, -1), (n, k))
    scale = (
        1.0
        if px_per_unit is None
        else np.broadcast_to(np.asarray(px_per_unit, np.float64).reshape(n, -1), (n, k))
    )
    dist = np.linalg.norm(pred_xy - gt_xy, axis=-1)
    out: dict[str, float] = {}
    for t in PCK_THRESHOLDS:
        out[f"pck@{t:g}"] = float((dist[valid] <= t * box[valid]).mean()) if valid.any() else 0.0
    px = dist * scale
    out["mean_px_error"] = float(px[valid].mean()) if valid.any() else float("nan")
    for j, name in enumerate(names or []):
        col = valid[:, j]
        out[f"error_{name}"] = float(px[col, j].mean()) if col.any() else float("nan")
    return out


def decode_for_metrics(logits, labels=None, method: str = "dark", sigma: float = 2.0):
    """Trainer `preprocess_logits_for_metrics`: heatmaps -> (B, K, 3) (u, v, score), so eval keeps no heatmaps."""
    import torch

    heatmaps = logits[0] if isinstance(logits, (tuple, list)) else logits
    uv, score = decode_heatmaps(heatmaps.detach().float().cpu().numpy(), method, sigma)
    out = np.concatenate([uv, score[..., None]], -1).astype(np.float32)
    return torch.from_numpy(out).to(heatmaps.device)


def compute_metrics(eval_pred) -> dict[str, float]:
    """Trainer hook on crops: PCK from decoded (u, v) vs labels (u, v, weight, box_size, px_per_unit)."""
    pred, labels = eval_pred.predictions, eval_pred.label_ids
    pred = pred[0] if isinstance(pred, tuple) else pred
    m = keypoint_metrics(pred[..., :2], labels[..., :2], labels[..., 2], labels[..., 3], None, labels[..., 4])
    return {k: v for k, v in m.items() if k.startswith("pck")}


def oks_ap(coco_gt: dict, results: list[dict], sigmas) -> dict[str, float]:
    """OKS AP / AP50 / AP75 / AR of COCO-results keypoints against a COCO keypoints dict (pycocotools).

    Every gt annotation needs `area`, `iscrowd` and `num_keypoints` (data.validate_coco fills them in).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {"oks_ap": 0.0, "oks_ap50": 0.0, "oks_ap75": 0.0, "oks_ar": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and its table
        gt = COCO()
        gt.dataset = {k: list(v) for k, v in coco_gt.items() if k in ("images", "annotations", "categories")}
        gt.createIndex()
        dt = gt.loadRes([dict(r) for r in results])
        ev = COCOeval(gt, dt, iouType="keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats  # [AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl]; -1 = no gt in that range
    return {
        "oks_ap": float(max(s[0], 0.0)),
        "oks_ap50": float(max(s[1], 0.0)),
        "oks_ap75": float(max(s[2], 0.0)),
        "oks_ar": float(max(s[5], 0.0)),
    }
