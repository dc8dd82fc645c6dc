"""Model for vision-det: any DETR-family AutoModelForObjectDetection + LoRA, its image processor, and
the random-init (tiny / offline) builders with a ResNet or (pretrained) MobileNetV2 backbone."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lora_shared.config import LoraArgs
from lora_shared.errors import UsageError
from lora_shared.models import from_pretrained, parse_overrides, resolve_model_path
from lora_shared.peft import apply_lora
from lora_shared.runs import load_adapter, load_base_model, save_random_base

from . import backbone as _backbone  # noqa: F401  registers the MobileNetV2 backbone with the Auto classes

logger = logging.getLogger(__name__)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LABELS_FILE = "labels.json"
DEFAULT_IMAGE_SIZE = 512  # random-init detectors have no processor to say; DETR papers use 800


# ---------------------------------------------------------------- backbones of random-init detectors
def build_backbone_config(model_args):
    """(backbone config, pretrained MobileNetV2 dir or None) for a `--model_type` detector.

    `backbone`: resnet | mobilenet_v2 (random init) | a MobileNetV2 dir / offline model name (its
    ImageNet weights are copied in after the detector is built). None: the detector type's own default.
    """
    from transformers import ResNetConfig

    name = model_args.backbone
    if not name:
        return None, None
    overrides = parse_overrides(model_args.backbone_overrides)
    stage = model_args.backbone_stage
    if name == "resnet":
        return ResNetConfig(out_features=[stage], **overrides), None
    if name == "mobilenet_v2":
        return _backbone.MobileNetV2BackboneConfig(out_features=[stage], **overrides), None
    path = Path(resolve_model_path(name))
    if not (path / "config.json").is_file():
        raise UsageError(
            f"backbone {name!r}: not resnet, mobilenet_v2 or a local MobileNetV2 model dir "
            "(run `make models` for mobilenet_v2-imagenet)"
        )
    cfg = json.loads((path / "config.json").read_text())
    if cfg.get("model_type") != "mobilenet_v2":
        raise UsageError(
            f"backbone {path}: model_type {cfg.get('model_type')!r}; only mobilenet_v2 dirs load"
        )
    keep = {k: v for k, v in cfg.items() if k in _MNV2_FIELDS}
    return _backbone.MobileNetV2BackboneConfig(out_features=[stage], **keep, **overrides), path


_MNV2_FIELDS = {
    "num_channels",
    "image_size",
    "depth_multiplier",
    "depth_divisible_by",
    "min_depth",
    "expand_ratio",
    "output_stride",
    "first_layer_is_expansion",
    "finegrained_output",
    "hidden_act",
    "tf_padding",
    "layer_norm_eps",
}


def load_pretrained_backbone(model, path: Path) -> int:
    """Copy a MobileNetV2 classifier checkpoint's `mobilenet_v2.*` weights into the detector's backbone.

    Every backbone tensor must be found (a silently random backbone would waste a whole run).
    Returns the number of tensors copied.
    """
    import torch
    from safetensors.torch import load_file

    target = next((m for m in model.modules() if isinstance(m, _backbone.MobileNetV2Backbone)), None)
    if target is None:
        raise UsageError("pretrained backbone given but the detector has no MobileNetV2 backbone")
    source = load_file(str(path / "model.safetensors"))
    own = target.state_dict()
    missing = [k for k in own if k not in source]
    if missing:
        raise UsageError(f"{path}: checkpoint lacks backbone weights, e.g. {missing[0]}")
    with torch.no_grad():
        for k, v in own.items():
            if v.shape != source[k].shape:
                raise UsageError(
                    f"{path}: {k} has shape {tuple(source[k].shape)}, backbone wants {tuple(v.shape)}"
                )
            v.copy_(source[k])
    logger.info("backbone: %d ImageNet tensors copied from %s", len(own), path)
    return len(own)


# ---------------------------------------------------------------- detector
def build_base(model_args, labels: list[str]):
    """The base detector with a class head for `labels` (a pretrained head of another size is replaced)."""
    from transformers import AutoModelForObjectDetection

    id2label = dict(enumerate(labels))
    kwargs = {
        "num_labels": len(labels),
        "id2label": id2label,
        "label2id": {v: k for k, v in id2label.items()},
    }
    if model_args.model_type:
        backbone_config, pretrained = build_backbone_config(model_args)
        if backbone_config is not None:
            # No timm, no download: the CNN is a transformers backbone built from its config.
            kwargs.update(
                backbone_config=backbone_config, use_timm_backbone=False, use_pretrained_backbone=False
            )
        model = load_base_model(AutoModelForObjectDetection, model_args, **kwargs)
        if pretrained is not None:
            load_pretrained_backbone(model, pretrained)
        return model
    # A checkpoint trained on other classes: its class head is dropped on purpose (new label set).
    return load_base_model(AutoModelForObjectDetection, model_args, ignore_mismatched_sizes=True, **kwargs)


def build_model(model_args, lora_args: LoraArgs, labels: list[str], output_dir=None):
    """Base detector + a fresh LoRA adapter (heads, and whatever else is listed, in modules_to_save).

    With `output_dir`, a random-init (tiny/offline) base is saved there first, before LoRA wraps it.
    DETR already swaps its backbone's BatchNorms for frozen ones, so no BN statistics drift.
    """
    base = build_base(model_args, labels)
    if output_dir is not None:
        save_random_base(base, output_dir, model_args)
    return apply_lora(base, lora_args)


def build_processor(model_args):
    """The checkpoint's image processor when it has one, else a DETR processor with ImageNet mean/std.

    `image_size` caps both sides (aspect ratio kept, `max_height`/`max_width`); batches are padded with a
    pixel mask by `collate_fn`.
    """
    from transformers import AutoImageProcessor, DetrImageProcessor

    proc = None
    name = model_args.model_name_or_path
    if name and not model_args.model_type:
        path = Path(resolve_model_path(name))
        has_local = (path / "preprocessor_config.json").is_file()
        if has_local or not path.is_dir():
            try:
                proc = from_pretrained(AutoImageProcessor, name, revision=model_args.revision)
            except (UsageError, OSError, ValueError):
                logger.info("no image processor with %s; using DETR defaults", name)
    size = model_args.image_size
    if proc is None:
        side = size or DEFAULT_IMAGE_SIZE
        return DetrImageProcessor(
            size={"max_height": side, "max_width": side},
            image_mean=list(IMAGENET_MEAN),
            image_std=list(IMAGENET_STD),
            do_pad=True,
        )
    if size:
        proc.size = {"max_height": size, "max_width": size}
    return proc


def read_labels(adapter_dir) -> list[str]:
    """Labels saved next to the adapter by `train`."""
    from lora_shared.cli import find_adapter_dir

    path = find_adapter_dir(adapter_dir) / LABELS_FILE
    if not path.is_file():
        raise UsageError(f"{path} missing: not a vision-det run directory")
    return json.loads(path.read_text())["labels"]


def load_trained(cfg):
    """(model with adapter, labels, processor) for eval / predict / export."""
    if not cfg.model.adapter_dir:
        raise UsageError("pass --adapter_dir (the output_dir of a finished `train` run)")
    labels = read_labels(cfg.model.adapter_dir)
    base = build_base(cfg.model, labels)
    model = load_adapter(base, Path(cfg.model.adapter_dir))
    return model, labels, build_processor(cfg.model)
