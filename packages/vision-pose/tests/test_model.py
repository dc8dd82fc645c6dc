import pytest
import torch
from lora_shared.config import LoraArgs
from lora_shared.errors import UsageError
from lora_shared.testing import is_adapter_param
from vision_pose.config import PoseDataArgs, PoseModelArgs
from vision_pose.model import build_model, crop_settings

TINY_VIT = PoseModelArgs(
    model_type="vitpose",
    config_overrides="hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,"
    "image_size=[64,48],patch_size=[8,8],out_indices=[2]",
)
TINY_MNV2 = PoseModelArgs(
    model_type="mobilenet_v2",
    config_overrides="depth_multiplier=0.35,tf_padding=false",
    image_height=64,
    image_width=32,
    head_channels=16,
)


def _model(args, targets):
    return build_model(
        args, LoraArgs(lora_r=4, lora_target_modules=targets, lora_modules_to_save=["head"]), 5
    )


@pytest.mark.parametrize(
    "args,targets,heatmaps",
    [(TINY_VIT, ["query", "value"], (32, 24)), (TINY_MNV2, ["expand_1x1.convolution"], (16, 8))],
    ids=["vitpose", "mobilenet_v2"],
)
def test_only_adapter_and_head_trainable_and_shapes(args, targets, heatmaps):
    model = _model(args, targets)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(is_adapter_param(n) for n in names)
    assert any(".head." in n for n in names) and any("lora_A" in n for n in names)
    st = crop_settings(
        args, PoseDataArgs(), model.get_base_model(), ["a", "left_x", "right_x", "b", "c"], False
    )
    assert (st.heatmap_height, st.heatmap_width) == heatmaps
    labels = torch.zeros(2, 5, 5)
    labels[..., :2], labels[..., 2] = 4.0, 1.0
    out = model(pixel_values=torch.randn(2, 3, st.height, st.width), labels=labels)
    assert out.heatmaps.shape == (2, 5, *heatmaps) and out.loss.ndim == 0 and out.loss > 0
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "lora_A" in n)


def test_vitpose_input_size_is_fixed():
    args = PoseModelArgs(**{**TINY_VIT.__dict__, "image_height": 128})
    model = _model(args, ["query", "value"])
    with pytest.raises(UsageError, match="64x48 crops"):
        crop_settings(args, PoseDataArgs(), model.get_base_model(), ["a"] * 5, False)


def test_unknown_model_type():
    with pytest.raises(UsageError, match="model_type must be one of"):
        _model(PoseModelArgs(model_type="bert"), ["query"])


def test_mobilenet_input_must_fit_its_stride():
    args = PoseModelArgs(**{**TINY_MNV2.__dict__, "image_width": 48})
    model = _model(args, ["expand_1x1.convolution"])
    with pytest.raises(UsageError, match="multiples of 32"):
        crop_settings(args, PoseDataArgs(), model.get_base_model(), ["a"] * 5, False)
