import torch
from lora_shared.config import LoraArgs
from lora_shared.testing import is_adapter_param
from vision_cls.config import ClsModelArgs
from vision_cls.model import build_model, image_settings

TINY = ClsModelArgs(
    model_type="vit",
    config_overrides="hidden_size=32,num_hidden_layers=2,num_attention_heads=2,"
    "intermediate_size=64,image_size=32,patch_size=8",
)
LORA = LoraArgs(lora_r=4, lora_target_modules=["q_proj", "v_proj"], lora_modules_to_save=["classifier"])


def test_only_adapter_and_head_trainable():
    model = build_model(TINY, LORA, ["a", "b", "c"])
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(is_adapter_param(n) for n in names)
    assert any("classifier" in n for n in names) and any("q_proj.lora_A" in n for n in names)


def test_forward_shapes_and_label_maps():
    model = build_model(TINY, LORA, ["a", "b", "c"])
    size, mean, std = image_settings(TINY, model)
    assert size == 32
    out = model(pixel_values=torch.randn(2, 3, size, size), labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and out.loss.ndim == 0
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}
