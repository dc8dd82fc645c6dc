"""A MobileNetV2 *backbone* for the DETR family: transformers ships MobileNetV2 only as a classifier.

DETR builds its CNN through `AutoBackbone.from_config(config.backbone_config)`, so instead of
patching a module into a built model we register a small backbone class (config + model) with the
Auto classes. A DETR with this backbone then saves, reloads (`from_pretrained`) and merges like any
other transformers model once this module has run: `vision_det.model` imports it, and a saved detector
ships this very file as its remote code (`SHIPPED_FILE`, named by config.json's `auto_map`), so
`AutoModelForObjectDetection.from_pretrained(dir, trust_remote_code=True)` works without vision_det.
Hence this file imports nothing but torch and transformers.

Stages (stride / channels at depth multiplier 1.0):
    stem 2/16, stage1 4/24, stage2 8/32, stage3 16/96, stage4 32/320.
Only the layers up to the last requested stage are built: later layers would cost compute and
memory for nothing, because DETR reads the last feature map only.
"""

from __future__ import annotations

import torch
from transformers import AutoBackbone, AutoConfig, MobileNetV2Config, PreTrainedConfig
from transformers.backbone_utils import BackboneConfigMixin, BackboneMixin
from transformers.modeling_outputs import BackboneOutput
from transformers.models.mobilenet_v2.modeling_mobilenet_v2 import (
    MobileNetV2Model,
    MobileNetV2PreTrainedModel,
    apply_depth_multiplier,
)

MODEL_TYPE = "vision_det_mobilenet_v2_backbone"
SHIPPED_FILE = "modeling_mobilenet_v2_backbone.py"  # this file's name next to a saved detector's weights
STAGE_NAMES = ["stem", "stage1", "stage2", "stage3", "stage4"]
# Index of the inverted-residual layer that ends each stage (None: the stem itself), and the width of
# that layer's output at depth multiplier 1.0 (MobileNetV2Model's channel table).
_STAGE_END_LAYER = [None, 1, 4, 11, 15]
_STAGE_CHANNELS = [16, 24, 32, 96, 320]


class MobileNetV2BackboneConfig(BackboneConfigMixin, MobileNetV2Config):
    """MobileNetV2Config + `out_features`/`out_indices` over STAGE_NAMES (the backbone API)."""

    model_type = MODEL_TYPE

    def __post_init__(self, **kwargs):
        self.stage_names = list(STAGE_NAMES)
        kwargs.pop("stage_names", None)
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
        )
        super().__post_init__(**kwargs)


class MobileNetV2Backbone(BackboneMixin, MobileNetV2PreTrainedModel):
    """Feature maps of a MobileNetV2 at the requested stages; weights keyed like the classifier's."""

    config_class = MobileNetV2BackboneConfig
    has_attentions = False

    def __init__(self, config: MobileNetV2BackboneConfig):
        super().__init__(config)
        self.num_features = [apply_depth_multiplier(config, c) for c in _STAGE_CHANNELS]
        # Same submodule name as MobileNetV2ForImageClassification, so its checkpoint loads as is.
        self.mobilenet_v2 = MobileNetV2Model(config, add_pooling_layer=False)
        last = max(self.out_indices)
        n_layers = (_STAGE_END_LAYER[last] + 1) if last > 0 else 0
        self.mobilenet_v2.layer = self.mobilenet_v2.layer[:n_layers]
        self.mobilenet_v2.conv_1x1 = None  # the 1280-wide classifier projection: not a DETR feature
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, output_hidden_states=None, return_dict=None, **kwargs):
        hidden = self.mobilenet_v2.conv_stem(pixel_values)
        stages = [hidden]
        for i, layer in enumerate(self.mobilenet_v2.layer):
            hidden = layer(hidden)
            if i in _STAGE_END_LAYER:
                stages.append(hidden)
        feature_maps = tuple(stages[i] for i in self.out_indices)
        return BackboneOutput(
            feature_maps=feature_maps, hidden_states=tuple(stages) if output_hidden_states else None
        )


class DetectorConfig(PreTrainedConfig):
    """config.json's `auto_map["AutoConfig"]` for a detector on this backbone (remote code).

    Not a config of its own: by the time transformers calls it, importing this file has registered the
    backbone, so it hands over to the detector's stock config class (config.json's `model_type`: detr,
    rt_detr, ...), which can now read `backbone_config`. The detector itself stays a stock model.
    """

    model_type = "vision_det_detector"

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        kwargs["trust_remote_code"] = False  # the stock class for model_type; this file already ran
        return AutoConfig.from_pretrained(pretrained_model_name_or_path, **kwargs)


def register() -> None:
    """Make `AutoConfig`/`AutoBackbone` (and so DETR's `load_backbone`) know the MobileNetV2 backbone."""
    AutoConfig.register(MODEL_TYPE, MobileNetV2BackboneConfig, exist_ok=True)
    AutoBackbone.register(MobileNetV2BackboneConfig, MobileNetV2Backbone, exist_ok=True)


register()
