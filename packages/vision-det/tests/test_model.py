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


def test_parse_stages_lists_and_rejects():
    import pytest
    from lora_shared.errors import UsageError
    from vision_det.model import parse_stages

    assert parse_stages("stage3") == ["stage3"]
    assert parse_stages("stage2, stage3,stage4") == ["stage2", "stage3", "stage4"]
    with pytest.raises(UsageError, match="stage5.*expected one or more of stem, stage1"):
        parse_stages("stage5")
    with pytest.raises(UsageError, match="shallow to deep"):
        parse_stages("stage4,stage3")


RT_TINY = (
    "d_model=32,encoder_hidden_dim=16,hidden_expansion=0.5,encoder_ffn_dim=32,decoder_ffn_dim=32,"
    "encoder_attention_heads=2,decoder_attention_heads=2,decoder_layers=1,num_queries=8,num_denoising=8"
)


def _multiscale_lora(n_levels: int, target: str = "expand_1x1.convolution") -> LoraArgs:
    """LoRA on the backbone's pointwise convs; the new multi-scale transformer trains fully."""
    projections = [f"{side}_input_proj.{i}" for side in ("encoder", "decoder") for i in range(n_levels)]
    return LoraArgs(
        lora_r=2,
        lora_target_modules=[target],
        lora_modules_to_save=[
            *projections,
            "encoder",
            "enc_output",
            "enc_score_head",
            "enc_bbox_head",
            "decoder",
        ],
    )


def test_rt_detr_takes_multiscale_mobilenet_backbone():
    """RT-DETR on random MobileNetV2 stages 3+4: channels, strides and levels follow the backbone."""
    args = DetModelArgs(
        model_type="rt_detr",
        config_overrides=RT_TINY,
        backbone="mobilenet_v2",
        backbone_overrides="depth_multiplier=0.35,tf_padding=false",  # LoRA needs torch padding
        backbone_stage="stage3,stage4",
    )
    model = build_model(args, _multiscale_lora(2), ["a", "b", "c"])
    cfg = model.config
    assert cfg.backbone_config.out_features == ["stage3", "stage4"]
    assert list(cfg.encoder_in_channels) == [32, 112] and list(cfg.feat_strides) == [16, 32]
    assert cfg.num_feature_levels == 2 and list(cfg.decoder_in_channels) == [16, 16]
    assert list(cfg.encode_proj_layers) == [1]  # the attention encoder layer runs on the deepest map
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(is_adapter_param(n) for n in trainable)
    assert any("expand_1x1.convolution.lora_A" in n for n in trainable)
    x = torch.randn(2, 3, 64, 64)
    loss = model.train()(pixel_values=x, labels=TARGET).loss  # train mode adds the denoising queries
    assert torch.isfinite(loss)
    loss.backward()
    with torch.no_grad():
        out = model.eval()(pixel_values=x)
    assert out.logits.shape == (2, 8, 3) and out.pred_boxes.shape == (2, 8, 4)  # sigmoid head: no "no object"


def test_d_fine_takes_resnet_stages():
    args = DetModelArgs(
        model_type="d_fine",
        # tie_word_embeddings=false: PEFT 0.21 otherwise asks DFineModel for input embeddings it lacks
        # (and fails); it also unties the per-layer heads. D-FINE needs >= 2 decoder layers.
        config_overrides=RT_TINY
        + ",decoder_layers=2,depth_mult=0.34,max_num_bins=8,tie_word_embeddings=false",
        backbone="resnet",
        backbone_overrides="embedding_size=8,hidden_sizes=[8,16,16,32],depths=[1,1,1,1]",
        backbone_stage="stage2,stage3,stage4",
    )
    model = build_model(args, _multiscale_lora(3, target="convolution"), ["a", "b"])  # ResNet's convs
    assert list(model.config.encoder_in_channels) == [16, 16, 32]
    assert list(model.config.feat_strides) == [8, 16, 32]
    x = torch.randn(2, 3, 64, 64)
    assert torch.isfinite(model.train()(pixel_values=x, labels=TARGET).loss)
    with torch.no_grad():
        assert model.eval()(pixel_values=x).logits.shape == (2, 8, 2)


def test_multiscale_needs_consecutive_stages_and_explicit_overrides_win():
    import pytest
    from lora_shared.errors import UsageError
    from vision_det.model import build_base

    args = DetModelArgs(
        model_type="rt_detr",
        config_overrides=RT_TINY,
        backbone="mobilenet_v2",
        backbone_overrides="depth_multiplier=0.35,tf_padding=false",  # LoRA needs torch padding
        backbone_stage="stage2,stage4",
    )
    with pytest.raises(UsageError, match=r"consecutive stages \(strides \[8, 32\]\)"):
        build_base(args, ["a"])
    args.backbone_stage = "stage3,stage4"
    args.config_overrides = RT_TINY + ",encode_proj_layers=[0]"  # attention on the shallower map
    config = build_base(args, ["a"]).config
    assert list(config.encode_proj_layers) == [0] and list(config.feat_strides) == [16, 32]


def test_offline_recipe_trains_every_new_layer():
    """The bundled offline recipe (D-FINE on MobileNetV2 stages): every layer outside the pretrained
    backbone trains fully (a random layer left frozen, e.g. the denoising class embedding, would silently
    cap mAP), the backbone takes LoRA only, and a training step (denoising queries included) runs."""
    from lora_shared.cli import Command, build_config
    from vision_det.cli import APP

    cfg, _ = build_config(APP, Command("train", "", "", uses_adapter=False), ["--config", "offline"])
    args = cfg.model
    assert args.model_type == "d_fine"
    # A random MobileNetV2 with the same layer names stands in for `make models`' pretrained one.
    args.backbone, args.backbone_overrides = "mobilenet_v2", "depth_multiplier=0.35,tf_padding=false"
    model = build_model(args, cfg.lora, ["circle", "square", "triangle"])
    params = dict(model.named_parameters())
    frozen_new = [
        n
        for n, p in params.items()
        if not p.requires_grad and ".backbone." not in n and "original_module" not in n
    ]
    assert not frozen_new
    assert all(is_adapter_param(n) for n, p in params.items() if p.requires_grad)
    assert any(".backbone." in n and "lora_A" in n for n in params)
    loss = model.train()(pixel_values=torch.randn(2, 3, 64, 64), labels=TARGET).loss
    assert torch.isfinite(loss)
