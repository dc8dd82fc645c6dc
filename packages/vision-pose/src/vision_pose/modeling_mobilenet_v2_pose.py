"""MobileNetV2 + SimpleBaseline heatmap head for top-down pose: vision-pose's own architecture.

This file is also the remote code of a saved model: it is copied next to the weights and config.json's
`auto_map` names its classes, so `AutoModelForPoseEstimation.from_pretrained(dir, trust_remote_code=True)`
loads the model without vision_pose. Hence it imports nothing but torch and transformers.
(ViTPose is a stock transformers model and needs none of this.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import MobileNetV2Config
from transformers.models.mobilenet_v2.modeling_mobilenet_v2 import (
    MobileNetV2Model,
    MobileNetV2PreTrainedModel,
)
from transformers.utils import ModelOutput

MODEL_TYPE = "vision_pose_mobilenet_v2"


@dataclass
class PoseOutput(ModelOutput):
    """loss (when labels are given) and heatmaps (B, K, H/stride, W/stride)."""

    loss: torch.Tensor | None = None
    heatmaps: torch.Tensor | None = None


def heatmap_loss(heatmaps: torch.Tensor, labels: torch.Tensor, sigma: float) -> torch.Tensor:
    """Squared error to Gaussian targets built from labels (B, K, 5) = (u, v, weight, ...), summed over
    pixels and averaged over labelled keypoints (so the scale does not depend on the heatmap size).

    (u, v) are in heatmap pixels with pixel centres at integers; the Gaussians peak at 1.
    """
    h, w = heatmaps.shape[-2:]
    uv = labels[..., :2].float()
    xs = torch.arange(w, dtype=uv.dtype, device=uv.device)
    ys = torch.arange(h, dtype=uv.dtype, device=uv.device)
    gx = torch.exp(-((xs - uv[..., 0:1]) ** 2) / (2 * sigma**2))  # (B, K, W)
    gy = torch.exp(-((ys - uv[..., 1:2]) ** 2) / (2 * sigma**2))  # (B, K, H)
    target = gy[..., :, None] * gx[..., None, :]
    weight = labels[..., 2].float()
    err = ((heatmaps.float() - target) ** 2).sum((-2, -1))  # (B, K)
    return (err * weight).sum() / weight.sum().clamp(min=1.0)


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
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """SimpleBaseline's init: small weights so the first heatmaps are ~0."""
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.deconv(x))


class MobileNetV2PoseConfig(MobileNetV2Config):
    """MobileNetV2Config + the heatmap head: one keypoint per label (`id2label` = keypoint names)."""

    model_type = MODEL_TYPE

    head_channels: int = 256  # width of the deconvolution layers
    heatmap_sigma: float = 2.0  # Gaussian sigma of the training targets, in heatmap pixels


class MobileNetV2ForPoseEstimation(MobileNetV2PreTrainedModel):
    """forward(pixel_values, labels=None) -> PoseOutput: heatmaps at stride 4 (the backbone's 32 / 2**3)."""

    config_class = MobileNetV2PoseConfig
    base_model_prefix = "backbone"

    def __init__(self, config: MobileNetV2PoseConfig):
        super().__init__(config)
        self.backbone = MobileNetV2Model(config, add_pooling_layer=False)  # pose needs the feature map
        channels = self.backbone.conv_1x1.convolution.out_channels
        self.head = DeconvHead(channels, config.num_labels, config.head_channels)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, DeconvHead):
            module.reset_parameters()  # after the generic init of its layers (children come first)
        else:
            super()._init_weights(module)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs) -> PoseOutput:
        heatmaps = self.head(self.backbone(pixel_values).last_hidden_state)
        loss = heatmap_loss(heatmaps, labels, self.config.heatmap_sigma) if labels is not None else None
        return PoseOutput(loss=loss, heatmaps=heatmaps)
