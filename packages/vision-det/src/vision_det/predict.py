"""Inference for vision-det: boxes for images (COCO results JSON + PNGs with boxes drawn), and export
of a merged model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lora_shared.images import collect_inputs

from .data import load_image
from .metrics import outputs_to_detections
from .model import load_trained

logger = logging.getLogger(__name__)

# Distinct, saturated colours (Tableau 10) so neighbouring classes are told apart on any background.
PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]


def detect(
    model, processor, images, threshold: float, num_classes: int, batch_size: int = 8
) -> list[list[dict]]:
    """Per PIL image, the boxes scoring >= threshold: [{category_id, bbox (COCO xywh px), score}], best first."""
    import torch

    from .data import collate_fn

    device = next(model.parameters()).device
    results = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            chunk = images[i : i + batch_size]
            enc = [processor(images=im, return_tensors="pt") for im in chunk]
            batch = collate_fn([{"pixel_values": e["pixel_values"][0]} for e in enc])
            out = model(
                pixel_values=batch["pixel_values"].to(device), pixel_mask=batch["pixel_mask"].to(device)
            )
            sizes = [(im.height, im.width) for im in chunk]
            dets = outputs_to_detections(
                out.logits.float().cpu(),
                out.pred_boxes.float().cpu(),
                range(len(chunk)),
                sizes,
                threshold,
                num_classes,
            )
            for j in range(len(chunk)):
                mine = [d for d in dets if d["image_id"] == j]
                results.append(sorted(mine, key=lambda d: -d["score"]))
    return results


def draw_boxes(image, detections: list[dict], labels: list[str]):
    """A copy of `image` with each box, its label and score drawn (line width scales with the image)."""
    from PIL import ImageDraw, ImageFont

    img = image.copy()
    draw = ImageDraw.Draw(img)
    width = max(1, round(max(img.size) / 160))
    font = ImageFont.load_default(size=max(10, round(max(img.size) / 25)))
    for d in sorted(detections, key=lambda d: d["score"]):  # best drawn last, on top
        x, y, w, h = d["bbox"]
        colour = PALETTE[d["category_id"] % len(PALETTE)]
        # COCO [x, y, w, h] covers pixels x .. x+w-1: the outline sits on the object's outermost pixels
        draw.rectangle([x, y, max(x, x + w - 1), max(y, y + h - 1)], outline=colour, width=width)
        text = f"{labels[d['category_id']]} {d['score']:.2f}"
        tx, ty = x, max(0.0, y - font.size - 2)
        box = draw.textbbox((tx, ty), text, font=font)
        draw.rectangle(box, fill=colour)
        draw.text((tx, ty), text, fill=(255, 255, 255), font=font)
    return img


def _png_names(paths: list[Path]) -> list[str]:
    """One output PNG name per input, unique even when two inputs share a file name (a/x.png, b/x.png,
    c/x_1.png -> x.png, x_1.png, x_1_1.png)."""
    used: set[str] = set()
    names = []
    for p in paths:
        name, n = f"{p.stem}.png", 0
        while name in used:
            n += 1
            name = f"{p.stem}_{n}.png"
        used.add(name)
        names.append(name)
    return names


def predict(cfg, inputs: list[str]) -> int:
    """Detect objects in images/folders; write predictions.json (COCO results) and boxed PNGs."""
    from lora_shared.io import atomic_write_bytes, atomic_write_json
    from lora_shared.models import pick_device, set_cpu_threads
    from lora_shared.outputs import check_outputs, png_bytes
    from tqdm.auto import tqdm

    set_cpu_threads(cfg.train.cpu_threads)
    paths = collect_inputs(inputs)
    images = [load_image(p) for p in paths]  # all decoded first: a bad file fails before any output
    opts = cfg.infer
    default_dir = Path(cfg.train.output_dir) / "predictions"
    out_dir = Path(opts.predictions_dir or default_dir).expanduser()
    pngs = _png_names(paths)
    # Never write over an input (predictions_dir = the photos' folder) or a file predict did not write.
    outputs = [out_dir / "predictions.json"] + ([out_dir / n for n in pngs] if opts.draw else [])
    check_outputs(outputs, paths, out_dir, default_dir)
    model, labels, processor = load_trained(cfg)
    model.to(pick_device())
    out_dir.mkdir(parents=True, exist_ok=True)
    dets = detect(model, processor, images, opts.threshold, len(labels))
    results = []
    for image_id, (path, image, found, png) in enumerate(
        tqdm(list(zip(paths, images, dets, pngs)), desc="writing", disable=len(paths) < 20),
        start=1,
    ):
        rows = [
            {**d, "image_id": image_id, "file_name": str(path), "label": labels[d["category_id"]]}
            for d in found
        ]
        results += rows
        if opts.draw:
            atomic_write_bytes(out_dir / png, png_bytes(draw_boxes(image, found, labels)))
        if opts.json:
            print(json.dumps({"image": str(path), "detections": rows}, ensure_ascii=False))
        else:
            shown = ", ".join(f"{r['label']} {r['score']:.2f} @{[round(v) for v in r['bbox']]}" for r in rows)
            print(f"{path}: {len(rows)} box(es){': ' + shown if rows else ''}")
    atomic_write_json(out_dir / "predictions.json", results)
    print(
        f"predictions: {out_dir / 'predictions.json'}" + (f", images: {out_dir}/*.png" if opts.draw else "")
    )
    return 0


def export(cfg) -> int:
    """Merge the adapter into the base detector and save a standalone safetensors model dir + processor
    (+ the backbone code when it is ours: config.json's auto_map names it for `trust_remote_code=True`)."""
    from lora_shared.runs import check_export_dir, export_target, export_writer

    from .model import mark_remote_code, ship_remote_code

    target = export_target(cfg.infer.export_dir, cfg.model.adapter_dir)  # refused before loading: exit 2
    model, labels, processor = load_trained(cfg)
    check_export_dir(target, cfg.model.adapter_dir)
    merged = model.merge_and_unload()
    mark_remote_code(merged)
    with export_writer(target, cfg.model.adapter_dir) as tmp:  # replaces only a previous export
        merged.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        ship_remote_code(merged, tmp)
    print(f"merged model: {target}")
    return 0
