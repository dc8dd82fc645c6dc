import torch
from lora_shared.config import LoraArgs
from lora_shared.testing import is_adapter_param
from vision_det.config import DetModelArgs
from vision_det.model import build_model, build_processor

TINY = DetModelArgs(
    model_type="detr",
    config_overrides="d_model=32,encoder_layers=1,decoder_layers=1,encoder_attention_heads=2,"
    "decoder_attention_heads=2,encoder_ffn_dim=64,decoder_ffn_dim=64,num_queries=10",
    backbone="resnet",
    backbone_overrides="embedding_size=16,hidden_sizes=[16,32,64,128],depths=[1,1,1,1]",
    image_size=64,
)
LORA = LoraArgs(
    lora_r=4,
    lora_target_modules=["q_proj", "v_proj"],
    lora_modules_to_save=["class_labels_classifier", "bbox_predictor"],
)
TARGET = [{"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.2]])}] * 2


def test_only_adapter_and_heads_trainable():
    model = build_model(TINY, LORA, ["a", "b", "c"])
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(is_adapter_param(n) for n in names)
    assert any("class_labels_classifier" in n for n in names) and any("bbox_predictor" in n for n in names)
    assert any("q_proj.lora_A" in n for n in names) and any("encoder_attn.v_proj.lora_B" in n for n in names)


def test_forward_shapes_loss_and_processor():
    model = build_model(TINY, LORA, ["a", "b", "c"])
    out = model(pixel_values=torch.randn(2, 3, 64, 64), labels=TARGET)
    assert out.logits.shape == (2, 10, 4) and out.pred_boxes.shape == (2, 10, 4)  # 3 classes + "no object"
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert build_processor(TINY).size.max_height == 64


def test_mobilenet_backbone_loads_imagenet_style_weights(tmp_path):
    """A MobileNetV2 classifier checkpoint (the offline model's format) fills the DETR backbone exactly."""
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    clf = MobileNetV2ForImageClassification(
        MobileNetV2Config(depth_multiplier=0.35, num_labels=5, tf_padding=False)
    )
    clf.save_pretrained(tmp_path / "mnv2")
    args = DetModelArgs(
        model_type="conditional_detr",
        config_overrides=TINY.config_overrides,
        backbone=str(tmp_path / "mnv2"),
        backbone_stage="stage3",
    )
    lora = LoraArgs(
        lora_r=2,
        lora_target_modules=["expand_1x1.convolution"],
        lora_modules_to_save=[
            "input_projection",
            "encoder",
            "decoder",
            "class_labels_classifier",
            "bbox_predictor",
        ],
    )
    model = build_model(args, lora, ["a", "b", "c"])
    ref = clf.state_dict()
    backbone = dict(model.named_parameters(), **dict(model.named_buffers()))
    conv = "mobilenet_v2.layer.3.expand_1x1.convolution"
    w = next(v for k, v in backbone.items() if k.endswith(conv + ".base_layer.weight"))
    assert torch.equal(w, ref[conv + ".weight"])
    bn = next(
        v
        for k, v in backbone.items()
        if k.endswith("mobilenet_v2.conv_stem.first_conv.normalization.running_var")
    )
    assert torch.equal(bn, ref["mobilenet_v2.conv_stem.first_conv.normalization.running_var"])
    # the pretrained convs are frozen (LoRA only), the new transformer trains fully
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(is_adapter_param(n) for n in trainable)
    assert any("expand_1x1.convolution.lora_A" in n for n in trainable)
    assert any(".encoder.modules_to_save" in n for n in trainable)
    out = model(pixel_values=torch.randn(2, 3, 64, 64), labels=TARGET)
    assert out.logits.shape == (2, 10, 3) and torch.isfinite(out.loss)  # focal-loss head: no "no object"
