"""Inference for vision-pose: keypoints for people in images (COCO results JSON + skeleton PNGs), the
image-space scoring used by train/eval, and export of a merged model."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from lora_shared.errors import DataError, UsageError
from lora_shared.images import collect_inputs

from .data import PoseSplit, Schema, heatmap_to_image, load_coco, make_sample
from .heatmaps import decode_heatmaps
from .metrics import keypoint_metrics, oks_ap
from .model import load_trained

logger = logging.getLogger(__name__)

# Skeleton colours by side, so a left/right swap is visible at a glance.
LEFT, RIGHT, CENTRE = (30, 144, 255), (255, 140, 0), (50, 205, 50)


def infer_people(model, people, image_of, settings, decode="dark", sigma=2.0, batch_size=32) -> np.ndarray:
    """(N, K, 3) image-space (x, y, score) for `people` (COCO annotations with a bbox).

    `image_of(image_id)` returns the PIL image; crops use `settings` (no augmentation).
    """
    import torch
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    out = []
    was = model.training
    model.eval()
    with torch.inference_mode():
        for i in tqdm(
            range(0, len(people), batch_size), desc="keypoints", leave=False, disable=len(people) < 256
        ):
            chunk = people[i : i + batch_size]
            samples = [make_sample(image_of(a["image_id"]), a, settings) for a in chunk]
            x = torch.stack([s["pixel_values"] for s in samples]).to(device)
            hm = model(pixel_values=x).heatmaps.float().cpu().numpy()
            uv, score = decode_heatmaps(hm, decode, sigma)
            for s, p, sc in zip(samples, uv, score):
                xy = heatmap_to_image(p, s["matrix"], settings.stride)
                out.append(np.concatenate([xy, sc[:, None]], -1))
    model.train(was)
    k = settings.flip_perm.shape[0] if settings.flip_perm is not None else 0
    return np.stack(out) if out else np.zeros((0, k, 3))


def to_results(people, preds: np.ndarray, category_id: int) -> list[dict]:
    """COCO results format: one {image_id, category_id, keypoints [x, y, score]*K, score} per person."""
    results = []
    for a, p in zip(people, preds):
        results.append(
            {
                "image_id": a["image_id"],
                "category_id": category_id,
                "keypoints": [round(float(v), 3) for v in p.reshape(-1)],
                # Person score: mean heatmap peak, the usual top-down choice (no detector score here).
                "score": round(float(np.clip(p[:, 2], 0, None).mean()), 5),
                "bbox": [round(float(v), 2) for v in a["bbox"]],
            }
        )
    return results


def score_split(model, split: PoseSplit, settings, sigmas, decode="dark", sigma=2.0, max_people=None):
    """Image-space metrics (PCK, pixel errors, OKS AP) of `model` on a split -> (metrics, results, preds)."""
    people = split.people[:max_people] if max_people else split.people
    cache: dict = {}

    def image_of(image_id):
        if image_id not in cache:
            cache.clear()  # people come grouped by image, so one cached image is enough
            cache[image_id] = split.image(image_id)
        return cache[image_id]

    preds = infer_people(model, people, image_of, settings, decode, sigma)
    gt = np.stack([np.asarray(a["keypoints"], np.float64).reshape(-1, 3) for a in people])
    box = np.array([max(a["bbox"][2], a["bbox"][3]) for a in people])
    metrics = keypoint_metrics(preds[..., :2], gt[..., :2], gt[..., 2], box, split.schema.names)
    results = to_results(people, preds, split.schema.category_id)
    coco = split.coco_gt()
    if max_people:
        keep = {a["image_id"] for a in people}
        coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
        coco["images"] = [im for im in coco["images"] if im["id"] in keep]
    metrics.update(oks_ap(coco, results, sigmas))
    return metrics, results, preds


def draw_skeleton(img, kps: np.ndarray, schema: Schema, threshold: float = 0.0, gt: np.ndarray | None = None):
    """A copy of `img` (upscaled to >= 384 px) with the skeleton drawn; gt keypoints as white rings."""
    from PIL import Image, ImageDraw

    scale = max(1.0, 384 / min(img.size))
    out = img.convert("RGB").resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
    d = ImageDraw.Draw(out)
    width = max(2, round(min(out.size) / 160))
    r = width + 1

    def side(name: str):
        low = name.lower()
        return (
            LEFT
            if "left" in low or low.startswith("l_")
            else RIGHT
            if "right" in low or low.startswith("r_")
            else CENTRE
        )

    for person in kps if kps.ndim == 3 else kps[None]:
        ok = person[:, 2] > threshold
        for a, b in schema.skeleton:
            i, j = a - 1, b - 1
            if ok[i] and ok[j]:
                sa, sb = side(schema.names[i]), side(schema.names[j])
                colour = sa if sa == sb else CENTRE
                d.line([tuple(person[i, :2] * scale), tuple(person[j, :2] * scale)], fill=colour, width=width)
        for k, (x, y, _) in enumerate(person):
            if ok[k]:
                x, y = x * scale, y * scale
                d.ellipse([x - r, y - r, x + r, y + r], fill=side(schema.names[k]), outline=(0, 0, 0))
    if gt is not None:
        for person in gt if gt.ndim == 3 else gt[None]:
            for x, y, v in person:
                if v > 0:
                    x, y = x * scale, y * scale
                    d.ellipse([x - r - 2, y - r - 2, x + r + 2, y + r + 2], outline=(255, 255, 255))
    return out


def save_png(img, path: Path, mark: bool = False) -> None:
    """Write a PNG atomically (a kill never leaves half a file); `mark` tags it as a predict output."""
    import io

    from lora_shared.io import atomic_write_bytes
    from lora_shared.outputs import png_bytes

    if mark:
        data = png_bytes(img)
    else:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        data = buf.getvalue()
    atomic_write_bytes(path, data)


def _inputs_as_split(paths: list[Path], schema: Schema, image_dir: str | None) -> PoseSplit:
    """Predict inputs as one split: a COCO .json keeps its person boxes; a plain image is one person box
    covering the whole image (top-down needs a box; run a detector first for crowded images)."""
    from lora_shared.images import open_image

    images, anns, pil = {}, [], {}
    for p in paths:
        if p.suffix.lower() == ".json":
            split = load_coco(p, image_dir)
            if split.schema.names != schema.names:
                raise DataError(f"{p}: keypoints {split.schema.names} differ from the model's {schema.names}")
            for a in split.anns:
                img_id = len(images) + 1
                im = split.images[a["image_id"]]
                if ("json", str(p), a["image_id"]) not in images:
                    images[("json", str(p), a["image_id"])] = {
                        "id": img_id,
                        "file_name": str(Path(split.root or p.parent) / im["file_name"]),
                        "width": im["width"],
                        "height": im["height"],
                    }
                entry = images[("json", str(p), a["image_id"])]
                anns.append(
                    {**a, "id": len(anns) + 1, "image_id": entry["id"], "category_id": schema.category_id}
                )
            continue
        img = open_image(p)
        img_id = len(images) + 1
        images[("img", str(p), 0)] = {
            "id": img_id,
            "file_name": str(p),
            "width": img.width,
            "height": img.height,
        }
        pil[img_id] = img
        k = schema.num_keypoints
        anns.append(
            {
                "id": len(anns) + 1,
                "image_id": img_id,
                "category_id": schema.category_id,
                "bbox": [0.0, 0.0, float(img.width), float(img.height)],
                "keypoints": [0] * (3 * k),
                "num_keypoints": k,  # not labels: makes the person count as one to predict
                "area": float(img.width * img.height),
                "iscrowd": 0,
            }
        )
    by_id = {e["id"]: e for e in images.values()}
    return PoseSplit("predict inputs", schema, by_id, anns, pil, Path("/"))


def _drawing_names(split: PoseSplit) -> dict[int, str]:
    """image id -> `<stem>_pose.png`, unique even when two inputs share a stem (a/x.png, b/x.png)."""
    names: dict[int, str] = {}
    used: set[str] = set()
    for a in split.anns:
        image_id = a["image_id"]
        if image_id in names:
            continue
        stem = Path(split.images[image_id]["file_name"]).stem
        name, n = f"{stem}_pose.png", 0
        while name in used:  # same stem in two folders: keep both
            n += 1
            name = f"{stem}_{image_id}_pose.png" if n == 1 else f"{stem}_{image_id}_{n}_pose.png"
        used.add(name)
        names[image_id] = name
    return names


def predict(cfg, inputs: list[str]) -> int:
    """Write <predictions_dir>/keypoints.json (COCO results) and one skeleton PNG per image."""
    from lora_shared.io import atomic_write_json
    from lora_shared.models import pick_device
    from lora_shared.outputs import check_outputs

    from .model import read_run_info

    if not cfg.model.adapter_dir:
        raise UsageError("pass --adapter_dir (the output_dir of a finished `train` run)")
    paths = collect_inputs(inputs, "image, directory or COCO keypoints .json")
    # The run's schema (a small JSON) is enough to read the inputs and plan the outputs: both are checked
    # before the model is built.
    split = _inputs_as_split(
        paths, Schema.from_json(read_run_info(cfg.model.adapter_dir)), cfg.data.image_dir
    )
    default_dir = Path(cfg.model.adapter_dir).expanduser() / "predictions"
    out = Path(cfg.infer.predictions_dir or default_dir).expanduser()
    names = _drawing_names(split)
    # --predictions_dir <run> would put keypoints.json over the run's own schema file: refused, as is
    # writing over an input image or any file predict did not write.
    inputs_used = [*paths, *(Path(e["file_name"]) for e in split.images.values())]
    check_outputs([out / "keypoints.json", *(out / n for n in names.values())], inputs_used, out, default_dir)
    model, schema, _sigmas, settings = load_trained(cfg)
    model.to(pick_device())
    people = split.anns
    preds = infer_people(model, people, split.image, settings, cfg.model.decode, cfg.model.heatmap_sigma)
    results = to_results(people, preds, schema.category_id)
    for r in results:
        r["file_name"] = split.images[r["image_id"]]["file_name"]
    by_image: dict[int, list[int]] = {}
    for n, a in enumerate(people):
        by_image.setdefault(a["image_id"], []).append(n)
    for image_id, idx in by_image.items():
        save_png(
            draw_skeleton(split.image(image_id), preds[idx], schema, cfg.infer.draw_threshold),
            out / names[image_id],
            mark=True,
        )
        for n in idx:
            results[n]["drawing"] = names[image_id]
    atomic_write_json(out / "keypoints.json", results)
    for r in results:
        xy = np.asarray(r["keypoints"]).reshape(-1, 3)
        print(
            f"{r['file_name']}: score {r['score']:.3f}, "
            + ", ".join(f"{n} ({x:.1f}, {y:.1f})" for n, (x, y, _) in zip(schema.names, xy))
        )
    print(f"keypoints JSON and {len(by_image)} skeleton PNG(s) in {out}")
    return 0


def export(cfg) -> int:
    """Merge the adapter into the base and save a standalone model dir that plain transformers loads.

    ViTPose: a stock `VitPoseForPoseEstimation` checkpoint. MobileNetV2: its modeling file ships next to the
    weights (config.json's auto_map), for `AutoModelForPoseEstimation.from_pretrained(dir,
    trust_remote_code=True)`. keypoints.json holds the schema and crop size; `load_exported` rebuilds either.
    """
    from lora_shared.io import atomic_write_json
    from lora_shared.runs import export_target, export_writer

    from .model import kind_of, save_pose_model

    target = export_target(cfg.infer.export_dir, cfg.model.adapter_dir)  # refused before loading: exit 2
    model, schema, sigmas, settings = load_trained(cfg)
    info = {**schema.as_json(sigmas), "image_height": settings.height, "image_width": settings.width}
    merged = model.merge_and_unload()
    merged.config.id2label = dict(enumerate(schema.names))
    merged.config.label2id = {n: i for i, n in enumerate(schema.names)}
    kind = kind_of(merged)
    if kind == "mobilenet_v2":
        info["head_channels"] = cfg.model.head_channels
    with export_writer(target, cfg.model.adapter_dir) as tmp:  # replaces only a previous export
        save_pose_model(merged, tmp)
        atomic_write_json(tmp / "keypoints.json", {**info, "kind": kind})
    print(f"merged model: {target}")
    return 0
