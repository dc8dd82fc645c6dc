"""Models for vision-pose: ViTPose (stock transformers) or a MobileNetV2 backbone + SimpleBaseline deconvolution
head (`modeling_mobilenet_v2_pose`, shipped as remote code with saved models), both with the heatmap loss;
then LoRA on the backbone, head trained fully.

Both keep the layout of a model plain transformers loads (ViTPose: `VitPoseForPoseEstimation`; MobileNetV2:
`AutoModelForPoseEstimation` with `trust_remote_code=True`), so a run's adapter loads with plain peft.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from lora_shared.config import LoraArgs
from lora_shared.errors import UsageError
from lora_shared.hfload import name_published_base
from lora_shared.models import from_pretrained, parse_overrides, resolve_model_path
from lora_shared.modules import freeze_batchnorm, unfreeze_batchnorm
from lora_shared.peft import apply_lora
from lora_shared.runs import BASE_MODEL_DIR, load_adapter, save_random_base, stage_dir
from transformers import AutoConfig, AutoModelForPoseEstimation, VitPoseForPoseEstimation

from . import modeling_mobilenet_v2_pose as mnv2_pose
from .data import CropSettings, Schema, flip_permutation
from .modeling_mobilenet_v2_pose import (
    MobileNetV2ForPoseEstimation,
    MobileNetV2PoseConfig,
    PoseOutput,
    heatmap_loss,
)

logger = logging.getLogger(__name__)

KEYPOINTS_FILE = "keypoints.json"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
KINDS = ("vitpose", "mobilenet_v2")
DEFAULT_SIZE = (256, 192)  # (height, width): ViTPose's and SimpleBaseline's COCO input

# Our process knows the MobileNetV2 pose model without remote code; saving it ships the modeling file and
# writes config.json's auto_map (transformers' mechanism for custom architectures on the hub).
AutoConfig.register(mnv2_pose.MODEL_TYPE, MobileNetV2PoseConfig, exist_ok=True)
AutoModelForPoseEstimation.register(MobileNetV2PoseConfig, MobileNetV2ForPoseEstimation, exist_ok=True)
MobileNetV2PoseConfig.register_for_auto_class()
MobileNetV2ForPoseEstimation.register_for_auto_class("AutoModelForPoseEstimation")


class VitPoseWithLoss(VitPoseForPoseEstimation):
    """ViTPose + the heatmap loss (transformers has none: "not yet supported"); weights and layout stock."""

    heatmap_sigma = 2.0  # set per model by build_base; not saved (only training uses it)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs) -> PoseOutput:
        heatmaps = super().forward(pixel_values=pixel_values, **kwargs).heatmaps
        loss = heatmap_loss(heatmaps, labels, self.heatmap_sigma) if labels is not None else None
        return PoseOutput(loss=loss, heatmaps=heatmaps)


def kind_of(model) -> str:
    """The architecture of a (merged or base) pose model: "vitpose" or "mobilenet_v2"."""
    return "vitpose" if isinstance(model, VitPoseForPoseEstimation) else "mobilenet_v2"


def save_pose_model(model, directory) -> None:
    """save_pretrained, as a checkpoint plain transformers loads.

    ViTPose: config.json names the stock class (not our loss subclass). MobileNetV2: real BatchNorms (same
    numbers as the frozen ones), and transformers writes the modeling file + auto_map next to the weights.
    """
    directory = Path(directory)
    if kind_of(model) == "mobilenet_v2":
        unfreeze_batchnorm(model.backbone)
        try:
            model.save_pretrained(directory, safe_serialization=True)
        finally:
            freeze_batchnorm(model.backbone)
        return
    model.save_pretrained(directory, safe_serialization=True)
    name_stock_class(directory)


def name_stock_class(directory) -> None:
    """config.json of a saved ViTPose names `VitPoseForPoseEstimation`, the class users load."""
    from lora_shared.io import atomic_write_json

    path = Path(directory) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["architectures"] = [VitPoseForPoseEstimation.__name__]
    atomic_write_json(path, config)


def _kind_of(model_args) -> tuple[str, str | None, str | None]:
    """(kind, resolved path or None for a random model, its model_type) from --model_type or the checkpoint."""
    if model_args.model_type:
        if model_args.model_type not in KINDS:
            raise UsageError(f"model_type must be one of {', '.join(KINDS)}, got {model_args.model_type!r}")
        return model_args.model_type, None, None
    if not model_args.model_name_or_path:
        raise UsageError("set model_name_or_path (hub id, local dir, offline model name) or model_type")
    config = from_pretrained(AutoConfig, model_args.model_name_or_path, revision=model_args.revision)
    kind = "mobilenet_v2" if config.model_type == mnv2_pose.MODEL_TYPE else config.model_type
    if kind not in KINDS:
        raise UsageError(
            f"{model_args.model_name_or_path}: a {config.model_type!r} checkpoint; vision-pose supports "
            f"{', '.join(KINDS)} (ViTPose, or a MobileNetV2 backbone with a heatmap head)"
        )
    return kind, resolve_model_path(model_args.model_name_or_path), config.model_type


def _random_vitpose(overrides: str | None, num_keypoints: int):
    from transformers import VitPoseBackboneConfig, VitPoseConfig

    kw = parse_overrides(overrides)
    top = {k: kw.pop(k) for k in ("scale_factor", "use_simple_decoder") if k in kw}
    try:
        backbone = VitPoseBackboneConfig(**kw)
    except TypeError as e:
        raise UsageError(f"config_overrides: {e}") from None
    return VitPoseWithLoss(VitPoseConfig(backbone_config=backbone, num_labels=num_keypoints, **top))


# MobileNetV2Config fields a pose config takes over from a MobileNetV2 checkpoint (not its labels or head).
_MNV2_FIELDS = (
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
    "classifier_dropout_prob",
    "initializer_range",
    "layer_norm_eps",
)


def _mobilenet_pose(model_args, num_keypoints: int, path, model_type):
    """MobileNetV2 + a fresh K-keypoint head: random, on a MobileNetV2 checkpoint's weights, or a saved pose
    model (a run's base_model/ or an export: its head gives way if the keypoint count differs)."""
    from transformers import MobileNetV2Model

    head = {"num_labels": num_keypoints, "head_channels": model_args.head_channels}
    head["heatmap_sigma"] = model_args.heatmap_sigma
    if path is None:
        try:
            return MobileNetV2ForPoseEstimation(
                MobileNetV2PoseConfig(**parse_overrides(model_args.config_overrides), **head)
            )
        except TypeError as e:
            raise UsageError(f"config_overrides: {e}") from None
    if model_type == mnv2_pose.MODEL_TYPE:
        return from_pretrained(
            MobileNetV2ForPoseEstimation,
            path,
            revision=model_args.revision,
            ignore_mismatched_sizes=True,
            **head,
        )
    backbone = from_pretrained(MobileNetV2Model, path, revision=model_args.revision)
    fields = {k: getattr(backbone.config, k) for k in _MNV2_FIELDS if hasattr(backbone.config, k)}
    model = MobileNetV2ForPoseEstimation(MobileNetV2PoseConfig(**fields, **head))
    backbone.pooler = None  # pose needs the feature map, not the pooled vector
    model.backbone = backbone  # the checkpoint's weights (its classifier head is not loaded)
    return model


def build_base(model_args, num_keypoints: int):
    """The base model (frozen-BN backbone, fresh K-keypoint head) with the heatmap loss, before LoRA."""
    kind, path, model_type = _kind_of(model_args)
    if kind == "vitpose":
        if path is None:
            net = _random_vitpose(model_args.config_overrides, num_keypoints)
        else:
            # A checkpoint with another keypoint count (COCO: 17) gets a new head conv, on purpose.
            net = from_pretrained(
                VitPoseWithLoss,
                path,
                revision=model_args.revision,
                num_labels=num_keypoints,
                ignore_mismatched_sizes=True,
            )
        net.heatmap_sigma = model_args.heatmap_sigma
        return net
    net = _mobilenet_pose(model_args, num_keypoints, path, model_type)
    # LoRA freezes the base, but BN in train mode still rewrites its statistics (not saved with the adapter).
    freeze_batchnorm(net.backbone)
    return net


def input_size(model_args, base) -> tuple[int, int]:
    """(height, width) of the crops: ViTPose's is fixed by its position embeddings."""
    if kind_of(base) == "vitpose":
        h, w = base.config.backbone_config.image_size
        asked = (model_args.image_height or h, model_args.image_width or w)
        if asked != (h, w):
            raise UsageError(
                f"this ViTPose takes {h}x{w} crops (its position embeddings); got {asked[0]}x{asked[1]}"
            )
        return int(h), int(w)
    h, w = model_args.image_height or DEFAULT_SIZE[0], model_args.image_width or DEFAULT_SIZE[1]
    if h % 32 or w % 32:
        raise UsageError(f"MobileNetV2 crops must be multiples of 32 px (its stride), got {h}x{w}")
    return h, w


@torch.no_grad()
def heatmap_size(base, height: int, width: int) -> tuple[int, int]:
    """Heatmap (height, width) for this input, found by one forward pass (stride differs per model)."""
    was = base.training
    base.eval()
    hm = base(pixel_values=torch.zeros(1, 3, height, width)).heatmaps
    base.train(was)
    hh, hw = int(hm.shape[-2]), int(hm.shape[-1])
    if height * hw != width * hh:
        raise UsageError(f"{height}x{width} crops give {hh}x{hw} heatmaps: not one stride for x and y")
    return hh, hw


def crop_settings(model_args, data_args, base, names: list[str], train: bool) -> CropSettings:
    """Geometry + augmentation of the crops this model is trained / evaluated on."""
    h, w = input_size(model_args, base)
    hh, hw = heatmap_size(base, h, w)
    return CropSettings(
        height=h,
        width=w,
        heatmap_height=hh,
        heatmap_width=hw,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        padding=data_args.box_padding,
        flip_prob=data_args.flip_prob if train else 0.0,
        rotation_deg=data_args.rotation_deg if train else 0.0,
        scale_jitter=data_args.scale_jitter if train else 0.0,
        flip_perm=flip_permutation(names),
    )


def build_model(model_args, lora_args: LoraArgs, num_keypoints: int, output_dir=None):
    """Base model + a fresh LoRA adapter on the backbone (the head in modules_to_save).

    With `output_dir`, the base is saved there first, before LoRA wraps it, when no hub id or file names
    it: a randomly initialised (tiny) one, and any MobileNetV2 one (its new head exists nowhere else).
    adapter_config.json then names what a user loads: that `<run>/base_model`, or the hub id / offline
    model name of a ViTPose base (never the local cache path it was read from).
    """
    base = build_base(model_args, num_keypoints)
    if output_dir is not None and model_args.model_type:
        save_random_base(_Saver(base), output_dir, model_args)
        name_published_base(base, model_args, output_dir)
    elif output_dir is not None and kind_of(base) == "mobilenet_v2":
        from lora_shared.io import atomic_dir

        target = stage_dir(output_dir) / BASE_MODEL_DIR  # published with the adapter, as a random base is
        if int(os.environ.get("RANK", "0")) == 0:  # DDP ranks build the same base: one writer
            with atomic_dir(target) as tmp:
                save_pose_model(base, tmp)
        base.name_or_path = str(Path(output_dir).resolve() / BASE_MODEL_DIR)
    elif output_dir is not None:
        base.name_or_path = model_args.model_name_or_path
    return apply_lora(base, lora_args)


class _Saver:
    """What `save_random_base` calls `save_pretrained` on: the model, saved the way plain users load it."""

    def __init__(self, model):
        self.model = model

    def save_pretrained(self, directory, **_kwargs) -> None:
        save_pose_model(self.model, directory)


def read_run_info(adapter_dir) -> dict:
    """keypoints.json saved next to the adapter by `train` (schema, sigmas, crop geometry)."""
    from lora_shared.cli import find_adapter_dir

    path = find_adapter_dir(adapter_dir) / KEYPOINTS_FILE
    if not path.is_file():
        raise UsageError(f"{path} missing: not a vision-pose run directory")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        info = None
    if not isinstance(info, dict) or "keypoints" not in info:  # e.g. overwritten by an older predict
        raise UsageError(
            f"{path}: not the run's keypoint schema (damaged or overwritten); restore it or retrain"
        )
    return info


def _refuse_wrapped_vitpose_adapter(adapter_dir) -> None:
    """Older runs trained ViTPose inside a wrapper (adapter keys under `vitpose.`): say so, not "another model"."""
    from lora_shared.runs import find_adapter_dir
    from safetensors import SafetensorError, safe_open

    path = find_adapter_dir(adapter_dir) / "adapter_model.safetensors"
    try:
        with safe_open(str(path), framework="pt") as f:
            wrapped = any(k.startswith("base_model.model.vitpose.") for k in f.keys())
    except (SafetensorError, OSError):
        return  # missing or damaged: load_adapter names the file and the fix
    if wrapped:
        raise UsageError(
            f"{path}: trained by an older vision-pose (ViTPose wrapped, keys under `vitpose.`); "
            "train it again with this version (its adapter then loads on a stock ViTPose)"
        )


def load_trained(cfg):
    """(model with adapter, schema, sigmas, eval CropSettings) for eval / predict / export."""
    if not cfg.model.adapter_dir:
        raise UsageError("pass --adapter_dir (the output_dir of a finished `train` run)")
    info = read_run_info(cfg.model.adapter_dir)
    _refuse_wrapped_vitpose_adapter(cfg.model.adapter_dir)
    schema = Schema.from_json(info)
    base = build_base(cfg.model, schema.num_keypoints)
    model = load_adapter(base, Path(cfg.model.adapter_dir))
    cfg.model.image_height, cfg.model.image_width = info["image_height"], info["image_width"]
    settings = crop_settings(cfg.model, cfg.data, base, schema.names, train=False)
    return model, schema, info["sigmas"], settings


def load_exported(path):
    """Rebuild the model that `export` wrote (merged weights, no peft needed), with the heatmap loss."""
    path = Path(path)
    info = json.loads((path / KEYPOINTS_FILE).read_text())
    if info["kind"] == "vitpose":
        return VitPoseWithLoss.from_pretrained(path, use_safetensors=True).eval()  # never a pickle
    if (path / "backbone").is_dir():  # the layout before the pose model was one checkpoint
        raise UsageError(
            f"{path}: an export of an older vision-pose (backbone/ + head.safetensors); export the run again"
        )
    return MobileNetV2ForPoseEstimation.from_pretrained(path, use_safetensors=True).eval()
