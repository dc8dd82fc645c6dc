"""Models for vision-pose: ViTPose (transformers) or a MobileNetV2 backbone + SimpleBaseline deconvolution
head, both wrapped in `PoseNet`, which adds the heatmap loss; then LoRA on the backbone, head trained fully.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from lora_shared.config import LoraArgs
from lora_shared.errors import UsageError
from lora_shared.models import from_pretrained, parse_overrides, resolve_model_path
from lora_shared.modules import freeze_batchnorm
from lora_shared.peft import apply_lora
from lora_shared.runs import load_adapter, save_random_base
from torch import nn
from transformers.utils import ModelOutput

from .data import CropSettings, Schema, flip_permutation
from .heatmaps import encode_heatmaps

logger = logging.getLogger(__name__)

KEYPOINTS_FILE = "keypoints.json"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
KINDS = ("vitpose", "mobilenet_v2")
DEFAULT_SIZE = (256, 192)  # (height, width): ViTPose's and SimpleBaseline's COCO input


@dataclass
class PoseOutput(ModelOutput):
    """loss (when labels are given) and heatmaps (B, K, H/stride, W/stride)."""

    loss: torch.Tensor | None = None
    heatmaps: torch.Tensor | None = None


def heatmap_loss(heatmaps: torch.Tensor, labels: torch.Tensor, sigma: float) -> torch.Tensor:
    """Squared error to Gaussian targets built from labels (B, K, 5) = (u, v, weight, ...), summed over
    pixels and averaged over labelled keypoints (so the scale does not depend on the heatmap size)."""
    target = encode_heatmaps(labels[..., :2].float(), heatmaps.shape[-2:], sigma)
    w = labels[..., 2].float()
    err = ((heatmaps.float() - target) ** 2).sum((-2, -1))  # (B, K)
    return (err * w).sum() / w.sum().clamp(min=1.0)


class DeconvHead(nn.Module):
    """SimpleBaseline (Xiao et al., 2018): 3 x (4x4 stride-2 deconvolution, BN, ReLU) + 1x1 conv -> K heatmaps.

    A 1x1 reduction to `channels` comes first: MobileNetV2 ends in 1280 channels, and a deconvolution
    straight from them would cost more than the whole backbone.
    """

    def __init__(self, in_channels: int, num_keypoints: int, channels: int = 256, num_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        ]
        for _ in range(num_layers):
            layers += [
                nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(channels, num_keypoints, 1)
        for m in self.modules():  # SimpleBaseline's init: small weights so the first heatmaps are ~0
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.deconv(x))


class PoseNet(nn.Module):
    """One interface for both architectures: forward(pixel_values, labels=None) -> PoseOutput.

    ViTPose in transformers has no training loss ("not yet supported"), so the loss lives here.
    """

    def __init__(self, kind: str, sigma: float, vitpose=None, backbone=None, head=None):
        super().__init__()
        self.kind, self.sigma = kind, sigma
        if kind == "vitpose":
            self.vitpose = vitpose
        else:
            self.backbone, self.head = backbone, head

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> PoseOutput:
        if self.kind == "vitpose":
            heatmaps = self.vitpose(pixel_values=pixel_values).heatmaps
        else:
            heatmaps = self.head(self.backbone(pixel_values).last_hidden_state)
        loss = heatmap_loss(heatmaps, labels, self.sigma) if labels is not None else None
        return PoseOutput(loss=loss, heatmaps=heatmaps)

    @property
    def inner(self):
        """The transformers model that holds the (random or pretrained) base weights."""
        return self.vitpose if self.kind == "vitpose" else self.backbone


def _kind_of(model_args) -> tuple[str, str | None]:
    """(kind, resolved path or None for a random model) from --model_type or the checkpoint's config."""
    if model_args.model_type:
        if model_args.model_type not in KINDS:
            raise UsageError(f"model_type must be one of {', '.join(KINDS)}, got {model_args.model_type!r}")
        return model_args.model_type, None
    if not model_args.model_name_or_path:
        raise UsageError("set model_name_or_path (hub id, local dir, offline model name) or model_type")
    from transformers import AutoConfig

    config = from_pretrained(AutoConfig, model_args.model_name_or_path, revision=model_args.revision)
    if config.model_type not in KINDS:
        raise UsageError(
            f"{model_args.model_name_or_path}: a {config.model_type!r} checkpoint; vision-pose supports "
            f"{', '.join(KINDS)} (ViTPose, or a MobileNetV2 backbone with a heatmap head)"
        )
    return config.model_type, resolve_model_path(model_args.model_name_or_path)


def _random_vitpose(overrides: str | None, num_keypoints: int):
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation

    kw = parse_overrides(overrides)
    top = {k: kw.pop(k) for k in ("scale_factor", "use_simple_decoder") if k in kw}
    try:
        backbone = VitPoseBackboneConfig(**kw)
    except TypeError as e:
        raise UsageError(f"config_overrides: {e}") from None
    return VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, num_labels=num_keypoints, **top))


def build_base(model_args, num_keypoints: int) -> PoseNet:
    """The base PoseNet (frozen-BN backbone, fresh K-keypoint head), before LoRA."""
    kind, path = _kind_of(model_args)
    if kind == "vitpose":
        if path is None:
            net = _random_vitpose(model_args.config_overrides, num_keypoints)
        else:
            from transformers import VitPoseForPoseEstimation

            # A checkpoint with another keypoint count (COCO: 17) gets a new head conv, on purpose.
            net = from_pretrained(
                VitPoseForPoseEstimation,
                path,
                revision=model_args.revision,
                num_labels=num_keypoints,
                ignore_mismatched_sizes=True,
            )
        return PoseNet(kind, model_args.heatmap_sigma, vitpose=net)
    from transformers import MobileNetV2Config, MobileNetV2Model

    if path is None:
        try:
            backbone = MobileNetV2Model(MobileNetV2Config(**parse_overrides(model_args.config_overrides)))
        except TypeError as e:
            raise UsageError(f"config_overrides: {e}") from None
    else:
        backbone = from_pretrained(MobileNetV2Model, path, revision=model_args.revision)
    backbone.pooler = None  # pose needs the feature map, not the pooled vector
    # LoRA freezes the base, but BN in train mode still rewrites its statistics (not saved with the adapter).
    freeze_batchnorm(backbone)
    channels = backbone.conv_1x1.convolution.out_channels
    head = DeconvHead(channels, num_keypoints, model_args.head_channels)
    return PoseNet(kind, model_args.heatmap_sigma, backbone=backbone, head=head)


def input_size(model_args, base: PoseNet) -> tuple[int, int]:
    """(height, width) of the crops: ViTPose's is fixed by its position embeddings."""
    if base.kind == "vitpose":
        h, w = base.vitpose.config.backbone_config.image_size
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
def heatmap_size(base: PoseNet, height: int, width: int) -> tuple[int, int]:
    """Heatmap (height, width) for this input, found by one forward pass (stride differs per model)."""
    was = base.training
    base.eval()
    hm = base(pixel_values=torch.zeros(1, 3, height, width)).heatmaps
    base.train(was)
    hh, hw = int(hm.shape[-2]), int(hm.shape[-1])
    if height * hw != width * hh:
        raise UsageError(f"{height}x{width} crops give {hh}x{hw} heatmaps: not one stride for x and y")
    return hh, hw


def crop_settings(model_args, data_args, base: PoseNet, names: list[str], train: bool) -> CropSettings:
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
    """Base PoseNet + a fresh LoRA adapter on the backbone (the head in modules_to_save).

    With `output_dir`, a randomly initialised (tiny) base is saved there first, before LoRA wraps it.
    """
    base = build_base(model_args, num_keypoints)
    if output_dir is not None and model_args.model_type:
        from lora_shared.modules import unfreeze_batchnorm

        # The saved base must load as a stock transformers checkpoint: real BatchNorms, same numbers.
        unfreeze_batchnorm(base.inner)
        save_random_base(base.inner, output_dir, model_args)
        freeze_batchnorm(base.inner)
    return apply_lora(base, lora_args)


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


def load_trained(cfg):
    """(model with adapter, schema, sigmas, eval CropSettings) for eval / predict / export."""
    if not cfg.model.adapter_dir:
        raise UsageError("pass --adapter_dir (the output_dir of a finished `train` run)")
    info = read_run_info(cfg.model.adapter_dir)
    schema = Schema.from_json(info)
    base = build_base(cfg.model, schema.num_keypoints)
    model = load_adapter(base, Path(cfg.model.adapter_dir))
    cfg.model.image_height, cfg.model.image_width = info["image_height"], info["image_width"]
    settings = crop_settings(cfg.model, cfg.data, base, schema.names, train=False)
    return model, schema, info["sigmas"], settings


def load_exported(path) -> PoseNet:
    """Rebuild the PoseNet that `export` wrote (merged weights, no peft needed)."""
    from safetensors.torch import load_file
    from transformers import MobileNetV2Model, VitPoseForPoseEstimation

    path = Path(path)
    info = json.loads((path / KEYPOINTS_FILE).read_text())
    if info["kind"] == "vitpose":
        vitpose = VitPoseForPoseEstimation.from_pretrained(path, use_safetensors=True)  # never a pickle
        return PoseNet("vitpose", 2.0, vitpose=vitpose).eval()
    backbone = MobileNetV2Model.from_pretrained(path / "backbone", use_safetensors=True)
    backbone.pooler = None
    head = DeconvHead(
        backbone.conv_1x1.convolution.out_channels, len(info["keypoints"]), info["head_channels"]
    )
    head.load_state_dict(load_file(str(path / "head.safetensors")))
    return PoseNet("mobilenet_v2", 2.0, backbone=backbone, head=head).eval()
