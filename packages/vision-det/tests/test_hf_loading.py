"""A run dir and its export load with plain transformers/peft, loraworks not importable, and give our outputs
(issue 18), also on vision-det's own MobileNetV2 backbone (the offline recipe's shape): its code ships next to
the weights as remote code (config.json `auto_map`), loaded with `trust_remote_code=True`.

The loading runs in a subprocess whose import system refuses every loraworks package (checked first, so the
block is real), as for a user with only torch, transformers and peft. It runs the usage snippets of the run's
and the export's README.md as written there, from a directory other than the run.
"""

import json
from pathlib import Path

import pytest
from lora_shared.testing import import_roots, run_without_loraworks
from vision_det import backbone
from vision_det.cli import main

PLAIN_LOAD = """
import json, re, sys
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoModelForObjectDetection

run, export, images = sys.argv[1], sys.argv[2], sys.argv[3:]


def outputs(model, processor):
    rows = []
    for path in images:
        enc = processor(Image.open(path).convert("RGB"), return_tensors="pt")
        with torch.no_grad():
            out = model(pixel_values=enc["pixel_values"], pixel_mask=enc["pixel_mask"])
        rows.append({"logits": out.logits[0].tolist(), "boxes": out.pred_boxes[0].tolist()})
    return rows


card = {}
exec(card_snippet(run, "path/to/this/run"), card)  # PeftModel on the run's base_model/ (remote code)
merged = {}
exec(card_snippet(export, "path/to/this/export"), merged)  # pipeline("object-detection", trust_remote_code)
detect = merged["detect"]
auto = AutoModelForObjectDetection.from_pretrained(export, trust_remote_code=True).eval()
result = {
    "run": outputs(card["model"], card["processor"]),
    "export": outputs(detect.model, detect.image_processor),
    "auto": outputs(auto, detect.image_processor),
    "pipeline": [len(detect(p, threshold=0.0)) for p in images],
    "backbone_module": next(type(m).__module__ for m in auto.modules() if type(m).__name__ == "MobileNetV2Backbone"),
    "leaked": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
}
print(json.dumps(result))
"""

# D-FINE on random MobileNetV2 stages 3+4 (the offline recipe's shape, tiny; 2 decoder layers: D-FINE ties
# the later layers' heads to the first, and transformers refuses a tie with nothing to tie): no real weights.
DFINE_TINY = [
    "--model_type", "d_fine",
    "--backbone", "mobilenet_v2",
    "--backbone_overrides", "depth_multiplier=0.35,tf_padding=false",  # LoRA needs torch padding
    "--backbone_stage", "stage3,stage4",
    "--config_overrides",
    "d_model=32,encoder_hidden_dim=16,hidden_expansion=0.5,encoder_ffn_dim=32,decoder_ffn_dim=32,"
    "encoder_attention_heads=2,decoder_attention_heads=2,decoder_layers=2,num_queries=8,num_denoising=8",
    "--lora_target_modules", "expand_1x1.convolution",
    "--lora_modules_to_save", "enc_score_head", "enc_bbox_head", "decoder",
]  # fmt: skip


def test_shipped_backbone_imports_only_torch_and_transformers():
    """backbone.py is the remote code itself: an import of ours there would fail for every plain user."""
    roots = import_roots(backbone.__file__)
    assert roots <= {"__future__", "torch", "transformers"}, roots


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two square shapes images of other sizes than the model's 64 px: the processor's resize must match ours."""
    from PIL import Image
    from vision_det.data import write_shapes_dataset

    data = write_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", 2, 1, size=96, seed=4)
    root = tmp_path_factory.mktemp("imgs")
    paths = []
    for i, src in enumerate(sorted((data / "train").glob("*.png"))[:2]):
        img = Image.open(src).convert("RGB")
        (img if i == 0 else img.resize((50, 50))).save(root / f"{i}.png")
        paths.append(root / f"{i}.png")
    return paths


def test_mobilenet_run_and_export_load_with_plain_transformers_and_peft(tmp_path, images):
    import torch
    from lora_shared.cli import build_config
    from vision_det.cli import APP
    from vision_det.data import collate_fn, load_image
    from vision_det.model import REMOTE_CODE, load_trained

    run, export = tmp_path / "run", tmp_path / "export"
    assert main(["train", "--config", "tiny", "--output_dir", str(run), *DFINE_TINY]) == 0
    assert main(["export", "--adapter_dir", str(run), "--export_dir", str(export)]) == 0

    adapter = json.loads((run / "adapter_config.json").read_text())
    # What AutoPeftModel / the card load: the saved base where the run is published, not its stage.
    assert adapter["base_model_name_or_path"] == str((run / "base_model").resolve())
    source = Path(backbone.__file__).read_bytes()
    for where in (run / "base_model", export):
        config = json.loads((where / "config.json").read_text())
        assert config["auto_map"] == REMOTE_CODE, where
        assert config["backbone_config"]["model_type"] == backbone.MODEL_TYPE
        # The shipped file is backbone.py itself: no second copy that could drift from the code.
        assert (where / backbone.SHIPPED_FILE).read_bytes() == source, where
    for where in (run, export):  # the training size (tiny: 64 px), for AutoImageProcessor users
        proc = json.loads((where / "preprocessor_config.json").read_text())
        assert proc["size"] == {"max_height": 64, "max_width": 64}, where
    assert backbone.SHIPPED_FILE in json.loads((export / "loraworks_export.json").read_text())["files"]

    # Ours: the model and processor predict uses, on the images as predict reads them.
    cmd = next(c for c in APP.commands if c.name == "predict")
    cfg, _ = build_config(APP, cmd, ["--adapter_dir", str(run)])
    model, _labels, processor = load_trained(cfg)
    ours = []
    for path in images:
        enc = processor(images=load_image(path), return_tensors="pt")
        with torch.no_grad():
            out = model(**collate_fn([{"pixel_values": enc["pixel_values"][0]}]))
        ours.append((out.logits[0], out.pred_boxes[0]))

    elsewhere = tmp_path / "elsewhere"  # not the run dir: no path in the run may be relative to it
    elsewhere.mkdir()
    (elsewhere / "photo.jpg").write_bytes(images[0].read_bytes())  # what the card snippets detect in
    plain = run_without_loraworks(PLAIN_LOAD, elsewhere, run, export, *images)
    assert plain["leaked"] == []
    assert plain["backbone_module"].startswith("transformers_modules.")  # the shipped file, not vision_det
    assert all(n > 0 for n in plain["pipeline"])
    for key in ("run", "export", "auto"):
        for (logits, boxes), theirs in zip(ours, plain[key], strict=True):
            torch.testing.assert_close(torch.tensor(theirs["logits"]), logits, atol=1e-4, rtol=0, msg=key)
            torch.testing.assert_close(torch.tensor(theirs["boxes"]), boxes, atol=1e-4, rtol=0, msg=key)
