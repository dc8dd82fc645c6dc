"""Model for vision-cls: any AutoModelForImageClassification + LoRA, and the matching image settings."""

from __future__ import annotations

import logging
from pathlib import Path

from lora_shared.config import LoraArgs
from lora_shared.hfload import name_published_base
from lora_shared.models import from_pretrained
from lora_shared.modules import freeze_batchnorm
from lora_shared.peft import apply_lora
from lora_shared.runs import load_adapter, load_base_model, read_labels, save_random_base

logger = logging.getLogger(__name__)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build_base(model_args, labels: list[str]):
    """The base classifier with a head for `labels` (a pretrained head of another size is replaced)."""
    from transformers import AutoModelForImageClassification

    id2label = dict(enumerate(labels))
    kwargs = {
        "num_labels": len(labels),
        "id2label": id2label,
        "label2id": {v: k for k, v in id2label.items()},
    }
    if not model_args.model_type:
        kwargs["ignore_mismatched_sizes"] = True  # new label set: the old head is dropped on purpose
    return load_base_model(AutoModelForImageClassification, model_args, **kwargs)


def build_model(model_args, lora_args: LoraArgs, labels: list[str], output_dir=None):
    """Base model + a fresh LoRA adapter (head in modules_to_save).

    With `output_dir`, a randomly initialised (tiny) base is saved there first, before LoRA wraps it.
    """
    base = build_base(model_args, labels)
    if model_args.image_size:
        record_image_size(base, model_args.image_size)
    if output_dir is not None:
        save_random_base(base, output_dir, model_args)
        name_published_base(base, model_args, output_dir)  # what AutoPeftModel loads the base from
    freeze_batchnorm(base)  # conv nets (MobileNetV2): BN statistics must not drift outside the adapter
    return apply_lora(base, lora_args)


def image_settings(model_args, model) -> tuple[int, tuple, tuple]:
    """(side, mean, std): from the checkpoint's image processor when it has one, else the model config."""
    config = model.config
    size = model_args.image_size or getattr(config, "image_size", None) or 224
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if model_args.model_name_or_path and not model_args.model_type:
        from lora_shared.errors import UsageError
        from transformers import AutoImageProcessor

        try:
            proc = from_pretrained(
                AutoImageProcessor, model_args.model_name_or_path, revision=model_args.revision
            )
            mean, std = tuple(proc.image_mean), tuple(proc.image_std)
            if not model_args.image_size:
                s = proc.size if isinstance(proc.size, dict) else {"shortest_edge": proc.size}
                size = s.get("height") or s.get("shortest_edge") or size
                if getattr(proc, "crop_size", None):
                    size = proc.crop_size.get("height", size)
        except (UsageError, OSError, ValueError):
            logger.info("no image processor with %s; using ImageNet mean/std", model_args.model_name_or_path)
    return int(size), mean, std


def build_image_processor(size: int, mean, std):
    """A transformers image processor doing what the eval transform does (`data.build_transforms`).

    Saved with the run and the export, so `pipeline("image-classification")` preprocesses as `predict`
    does: a square bilinear resize to `size`, then scale to [0, 1] and normalise with `mean`/`std`
    (the base's own processor would resize to its 224 px and centre-crop instead).
    """
    from transformers import ViTImageProcessor

    return ViTImageProcessor(
        do_resize=True,
        size={"height": int(size), "width": int(size)},
        resample=2,  # PIL bilinear, as torchvision's Resize on PIL images
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(mean),
        image_std=list(std),
    )


def record_image_size(model, size: int) -> None:
    """Write the trained input side into the config (MobileNetV2's still said ImageNet's 224 after 96 px).

    Skipped for models with position embeddings (ViT): there `image_size` sets their shape.
    """
    config = model.config
    if getattr(config, "image_size", None) in (None, size):
        return
    if any("position_embeddings" in name for name, _ in model.named_parameters()):
        return
    config.image_size = int(size)


def load_trained(cfg):
    """(model with adapter, labels, (size, mean, std)) for eval / predict / export."""
    from lora_shared.errors import UsageError

    if not cfg.model.adapter_dir:
        raise UsageError("pass --adapter_dir (the output_dir of a finished `train` run)")
    labels = read_labels(cfg.model.adapter_dir, "vision-cls")
    base = build_base(cfg.model, labels)
    freeze_batchnorm(base)  # as in training
    model = load_adapter(base, Path(cfg.model.adapter_dir))
    return model, labels, image_settings(cfg.model, base)
