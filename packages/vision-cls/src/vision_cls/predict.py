"""Inference for vision-cls: top-k labels for images, and export of a merged model."""

from __future__ import annotations

import json
import logging

from lora_shared.images import collect_inputs

from .data import build_transforms, load_image
from .model import build_image_processor, load_trained, record_image_size

logger = logging.getLogger(__name__)


def classify(
    model, images, transform, labels: list[str], top_k: int, batch_size: int = 32
) -> list[list[dict]]:
    """Top-k [{label, score}] per PIL image."""
    import torch

    device = next(model.parameters()).device
    results = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = torch.stack([transform(im) for im in images[i : i + batch_size]]).to(device)
            probs = model(pixel_values=x).logits.float().softmax(-1)
            scores, idx = probs.topk(min(top_k, len(labels)), dim=-1)
            for s_row, i_row in zip(scores.tolist(), idx.tolist()):
                results.append([{"label": labels[j], "score": round(s, 6)} for s, j in zip(s_row, i_row)])
    return results


def predict(cfg, inputs: list[str]) -> int:
    """Print the top-k labels of each image (text, or JSON lines with --json)."""
    from lora_shared.models import pick_device

    paths = collect_inputs(inputs)
    images = [load_image(p) for p in paths]  # a bad file fails before the model is loaded
    model, labels, (size, mean, std) = load_trained(cfg)
    model.to(pick_device())
    preds = classify(model, images, build_transforms(size, mean, std, False), labels, cfg.infer.top_k)
    for path, top in zip(paths, preds):
        if cfg.infer.json:
            print(json.dumps({"image": str(path), "top_k": top}, ensure_ascii=False))
        else:
            print(f"{path}: " + ", ".join(f"{t['label']} {t['score']:.3f}" for t in top))
    return 0


def export(cfg) -> int:
    """Merge the adapter into the base model and save a standalone safetensors model directory.

    With the image processor of training, so `pipeline("image-classification", model=DIR)` predicts as
    `predict` does.
    """
    from lora_shared.modules import unfreeze_batchnorm
    from lora_shared.runs import export_merged, export_target

    target = export_target(cfg.infer.export_dir, cfg.model.adapter_dir)  # refused before loading: exit 2
    model, labels, (size, mean, std) = load_trained(cfg)
    unfreeze_batchnorm(model)  # the merged model must load as a stock transformers checkpoint
    record_image_size(model.get_base_model(), size)
    processor = build_image_processor(size, mean, std)
    export_merged(model, target, processor=processor, run_dir=cfg.model.adapter_dir)
    print(f"merged model: {target}")
    return 0
