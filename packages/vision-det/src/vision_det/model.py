"""Model for vision-det: any DETR-family AutoModelForObjectDetection + LoRA, its image processor, and
the random-init (tiny / offline) builders with a ResNet or (pretrained) MobileNetV2 backbone."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lora_shared.config import LoraArgs
from lora_shared.errors import UsageError
from lora_shared.hfload import name_published_base, stage_pretrained
from lora_shared.models import build_config, from_pretrained, parse_overrides, resolve_model_path
from lora_shared.peft import apply_lora
from lora_shared.runs import (
    BASE_MODEL_DIR,
    load_adapter,
    load_base_model,
    read_labels,
    save_random_base,
    stage_dir,
)

from . import backbone as _backbone  # noqa: F401  registers the MobileNetV2 backbone with the Auto classes

logger = logging.getLogger(__name__)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 512  # random-init detectors have no processor to say; DETR papers use 800


# ---------------------------------------------------------------- backbones of random-init detectors
def parse_stages(spec: str) -> list[str]:
    """'stage3' -> ['stage3']; 'stage2,stage3,stage4' -> the three (multi-scale detectors: RT-DETR, ...)."""
    stages = [s.strip() for s in str(spec).split(",") if s.strip()]
    bad = [s for s in stages if s not in _backbone.STAGE_NAMES]
    if not stages or bad:
        raise UsageError(
            f"backbone_stage {spec!r}: expected one or more of {', '.join(_backbone.STAGE_NAMES)} "
            "(comma-separated, e.g. stage2,stage3,stage4)"
        )
    if stages != sorted(set(stages), key=_backbone.STAGE_NAMES.index):
        raise UsageError(f"backbone_stage {spec!r}: list each stage once, shallow to deep")
    return stages


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
    stages = parse_stages(model_args.backbone_stage)
    if name == "resnet":
        return ResNetConfig(out_features=stages, **overrides), None
    if name == "mobilenet_v2":
        return _backbone.MobileNetV2BackboneConfig(out_features=stages, **overrides), None
    path = Path(resolve_model_path(name))
    if not (path / "config.json").is_file():
        raise UsageError(
            f"backbone {name!r}: not resnet, mobilenet_v2 or a local MobileNetV2 model dir "
            "(run `loraworks-models` (or `make models`) for mobilenet_v2-imagenet)"
        )
    cfg = json.loads((path / "config.json").read_text())
    if cfg.get("model_type") != "mobilenet_v2":
        raise UsageError(
            f"backbone {path}: model_type {cfg.get('model_type')!r}; only mobilenet_v2 dirs load"
        )
    keep = {k: v for k, v in cfg.items() if k in _MNV2_FIELDS}
    return _backbone.MobileNetV2BackboneConfig(out_features=stages, **keep, **overrides), path


# Stride of each stage's output: ResNet's stem already pools to stride 4, MobileNetV2's is stride 2.
_STAGE_STRIDES = {"resnet": [4, 4, 8, 16, 32], _backbone.MODEL_TYPE: [2, 4, 8, 16, 32]}


def multiscale_fields(config, backbone_config) -> dict:
    """Config fields that tie a multi-scale detector (RT-DETR / D-FINE: `encoder_in_channels`) to its
    backbone's feature maps: their channels and strides, one encoder/decoder level per map, and the
    attention-based (AIFI) encoder layer on the deepest one. {} for single-scale detectors (DETR, ...).
    """
    from transformers import AutoBackbone

    if not hasattr(config, "encoder_in_channels"):
        return {}
    # Built once to read its channels (MobileNetV2 to stage 4: ~2 M parameters, well under a second).
    channels = list(AutoBackbone.from_config(backbone_config).channels)
    strides = _STAGE_STRIDES.get(backbone_config.model_type)
    if strides is None:
        raise UsageError(f"{config.model_type}: backbone {backbone_config.model_type} has no known strides")
    feat_strides = [strides[i] for i in backbone_config.out_indices]
    if any(b != 2 * a for a, b in zip(feat_strides, feat_strides[1:])):
        # the hybrid encoder's FPN upsamples by exactly 2 between levels
        raise UsageError(
            f"backbone_stage: {config.model_type} needs consecutive stages (strides {feat_strides}), "
            "e.g. stage2,stage3,stage4"
        )
    n = len(channels)
    return {
        "encoder_in_channels": channels,
        "feat_strides": feat_strides,
        "num_feature_levels": n,
        "decoder_in_channels": [config.encoder_hidden_dim] * n,
        "encode_proj_layers": [n - 1],
    }


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


# ---------------------------------------------------------------- remote code for plain transformers
# config.json's auto_map entry: the shipped copy of backbone.py registers the backbone, then hands over to
# the detector's stock config class (backbone.DetectorConfig).
REMOTE_CODE = {"AutoConfig": f"{Path(_backbone.SHIPPED_FILE).stem}.DetectorConfig"}


def needs_remote_code(model) -> bool:
    """Whether the detector's backbone is ours (transformers alone cannot build it)."""
    backbone_config = getattr(model.config, "backbone_config", None)
    return getattr(backbone_config, "model_type", None) == _backbone.MODEL_TYPE


def mark_remote_code(model) -> bool:
    """Put REMOTE_CODE in the config's auto_map (saved in config.json) when the backbone is ours."""
    if not needs_remote_code(model):
        return False
    model.config.auto_map = {**(getattr(model.config, "auto_map", None) or {}), **REMOTE_CODE}
    return True


def ship_remote_code(model, directory) -> Path | None:
    """Copy backbone.py (the one source: no second version to drift) next to saved weights, under the name
    that config.json's auto_map gives it, so `trust_remote_code=True` loads without vision_det."""
    import os

    from lora_shared.io import atomic_write_bytes

    if not needs_remote_code(model) or int(os.environ.get("RANK", "0")) != 0:  # DDP: rank 0 saves
        return None
    target = Path(directory) / _backbone.SHIPPED_FILE
    atomic_write_bytes(target, Path(_backbone.__file__).read_bytes())
    return target


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
        config = build_config(model_args.model_type, model_args.config_overrides, **kwargs)
        if backbone_config is not None:
            given = parse_overrides(model_args.config_overrides)
            for k, v in multiscale_fields(config, backbone_config).items():
                if k not in given:  # an explicit config_overrides value wins
                    setattr(config, k, v)
        model = AutoModelForObjectDetection.from_config(config)
        if pretrained is not None:
            load_pretrained_backbone(model, pretrained)
    else:
        # A checkpoint trained on other classes: its class head is dropped on purpose (new label set).
        model = load_base_model(
            AutoModelForObjectDetection, model_args, ignore_mismatched_sizes=True, **kwargs
        )
    mark_remote_code(model)  # also for bases saved before auto_map was written: their exports get it
    return model


def build_model(model_args, lora_args: LoraArgs, labels: list[str], output_dir=None):
    """Base detector + a fresh LoRA adapter (heads, and whatever else is listed, in modules_to_save).

    With `output_dir`, the run's image processor is staged for plain transformers users, and a random-init
    (tiny/offline) base is saved there first, before LoRA wraps it, with the backbone code when it is ours.
    adapter_config.json then names what a user loads: the saved `<run>/base_model`, or the hub id /
    offline model name the base came from (never the local cache path it was read from).
    DETR already swaps its backbone's BatchNorms for frozen ones, so no BN statistics drift.
    """
    base = build_base(model_args, labels)
    if output_dir is not None:
        stage_pretrained(build_processor(model_args), output_dir)  # before model_args names the saved base
        if model_args.model_type:
            save_random_base(base, output_dir, model_args)
            ship_remote_code(base, stage_dir(output_dir) / BASE_MODEL_DIR)
            name_published_base(base, model_args, output_dir)
        else:
            base.name_or_path = model_args.model_name_or_path
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


def load_trained(cfg):
    """(model with adapter, labels, processor) for eval / predict / export."""
    if not cfg.model.adapter_dir:
        raise UsageError("pass --adapter_dir (the output_dir of a finished `train` run)")
    labels = read_labels(cfg.model.adapter_dir, "vision-det")
    base = build_base(cfg.model, labels)
    model = load_adapter(base, Path(cfg.model.adapter_dir))
    return model, labels, build_processor(cfg.model)
