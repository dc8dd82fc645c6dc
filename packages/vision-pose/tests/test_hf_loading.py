"""A run dir and its export load with plain transformers/peft, loraworks not importable, and give our heatmaps
(issue 18). ViTPose is a stock transformers model; the MobileNetV2 + deconvolution head model ships its
modeling file next to the weights as remote code (config.json `auto_map`), loaded with `trust_remote_code=True`.

The loading runs in a subprocess whose import system refuses every loraworks package (checked first, so the
block is real), as for a user with only torch, transformers and peft. It runs the usage snippets of the run's
and the export's README.md as written there, from a directory other than the run.
"""

import json
from pathlib import Path

import pytest
from lora_shared.testing import import_roots, run_without_loraworks
from vision_pose import modeling_mobilenet_v2_pose as modeling
from vision_pose.cli import main

PLAIN_LOAD = """
import json, re, sys
from pathlib import Path

import torch
from safetensors.torch import load_file

run, export, crops = sys.argv[1], sys.argv[2], load_file(sys.argv[3])["crops"]


card = {}
exec(card_snippet(run, "path/to/this/run"), card)  # PeftModel on the base (remote code for MobileNetV2)
merged = {}
exec(card_snippet(export, "path/to/this/export"), merged)  # AutoModelForPoseEstimation on the export
with torch.no_grad():
    result = {
        "run": card["model"](pixel_values=crops).heatmaps.tolist(),
        "export": merged["model"](pixel_values=crops).heatmaps.tolist(),
    }
result["module"] = type(merged["model"]).__module__
result["leaked"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps(result))
"""

KINDS = {
    "mobilenet_v2": [
        "--model_type", "mobilenet_v2",
        "--config_overrides", "depth_multiplier=0.35,tf_padding=false",  # LoRA needs torch padding
        "--image_height", "64", "--image_width", "32", "--head_channels", "16",
        "--lora_target_modules", "expand_1x1.convolution",
    ],
    "vitpose": [],  # the tiny config: a random ViTPose
}  # fmt: skip


def test_modeling_file_imports_only_torch_and_transformers():
    """The modeling file is the remote code itself: an import of ours there would fail for every plain user."""
    roots = import_roots(modeling.__file__)
    assert roots <= {"__future__", "dataclasses", "torch", "transformers"}, roots


@pytest.mark.parametrize("kind", list(KINDS))
def test_run_and_export_load_with_plain_transformers_and_peft(kind, tmp_path):
    import torch
    from lora_shared.cli import build_config
    from safetensors.torch import save_file
    from vision_pose.cli import APP
    from vision_pose.model import load_trained

    run, export = tmp_path / "run", tmp_path / "export"
    assert main(["train", "--config", "tiny", "--output_dir", str(run), *KINDS[kind]]) == 0
    assert main(["export", "--adapter_dir", str(run), "--export_dir", str(export)]) == 0

    adapter = json.loads((run / "adapter_config.json").read_text())
    # What AutoPeftModel / the card load: the saved base where the run is published, not its stage.
    assert adapter["base_model_name_or_path"] == str((run / "base_model").resolve())
    shipped = modeling.__name__.rsplit(".", 1)[-1]
    for where in (run / "base_model", export):
        config = json.loads((where / "config.json").read_text())
        if kind == "vitpose":  # stock: no remote code, and config.json names the stock class
            assert "auto_map" not in config and config["architectures"] == ["VitPoseForPoseEstimation"]
            continue
        assert config["auto_map"] == {
            "AutoConfig": f"{shipped}.MobileNetV2PoseConfig",
            "AutoModelForPoseEstimation": f"{shipped}.MobileNetV2ForPoseEstimation",
        }, where
        # The shipped file is the package's module itself: no second copy that could drift from the code.
        assert (where / f"{shipped}.py").read_bytes() == Path(modeling.__file__).read_bytes(), where

    # Ours: the model predict uses, on crops of the run's size.
    cmd = next(c for c in APP.commands if c.name == "predict")
    cfg, _ = build_config(APP, cmd, ["--adapter_dir", str(run)])
    model, _schema, _sigmas, settings = load_trained(cfg)
    crops = torch.randn(2, 3, settings.height, settings.width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(pixel_values=crops).heatmaps
    save_file({"crops": crops}, str(tmp_path / "crops.safetensors"))

    elsewhere = tmp_path / "elsewhere"  # not the run dir: no path in the run may be relative to it
    elsewhere.mkdir()
    plain = run_without_loraworks(PLAIN_LOAD, elsewhere, run, export, tmp_path / "crops.safetensors")
    assert plain["leaked"] == []
    expected_module = "transformers_modules." if kind == "mobilenet_v2" else "transformers.models.vitpose"
    assert plain["module"].startswith(expected_module), plain["module"]
    for key in ("run", "export"):
        torch.testing.assert_close(torch.tensor(plain[key]), ours, atol=1e-4, rtol=0, msg=key)


def test_shipped_loss_builds_the_data_side_targets():
    """The modeling file's loss has its own Gaussian (it may import nothing of ours): it must be heatmaps.py's."""
    import numpy as np
    import torch
    from vision_pose.heatmaps import encode_heatmaps

    uv = np.array([[[3.0, 5.0], [7.25, 2.5]]], np.float32)  # (B=1, K=2, 2) heatmap pixels
    target = torch.from_numpy(encode_heatmaps(uv, (12, 9), 1.5))
    labels = torch.zeros(1, 2, 5)
    labels[..., :2], labels[..., 2] = torch.from_numpy(uv), 1.0
    assert modeling.heatmap_loss(target, labels, 1.5).item() < 1e-10
    labels[0, 1, 0] += 1.0  # one keypoint a pixel off
    assert modeling.heatmap_loss(target, labels, 1.5).item() > 0.1


def test_older_layouts_are_refused_with_the_fix(tmp_path):
    """A ViTPose adapter from the wrapper days and an export of backbone/ + head.safetensors: one clear line each."""
    import torch
    from lora_shared.cli import build_config
    from lora_shared.errors import UsageError
    from safetensors.torch import save_file
    from vision_pose.cli import APP
    from vision_pose.model import load_exported, load_trained

    run = tmp_path / "old_run"
    run.mkdir()
    (run / "keypoints.json").write_text(json.dumps({"keypoints": ["a", "b"]}))
    (run / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    key = "base_model.model.vitpose.backbone.encoder.layer.0.attention.query.lora_A.weight"
    save_file({key: torch.zeros(4, 8)}, str(run / "adapter_model.safetensors"))
    cmd = next(c for c in APP.commands if c.name == "predict")
    cfg, _ = build_config(APP, cmd, ["--adapter_dir", str(run)])
    with pytest.raises(UsageError, match="older vision-pose .*train it again"):
        load_trained(cfg)

    export = tmp_path / "old_export"
    (export / "backbone").mkdir(parents=True)
    (export / "keypoints.json").write_text(json.dumps({"kind": "mobilenet_v2", "keypoints": ["a"]}))
    with pytest.raises(UsageError, match="older vision-pose .*export the run again"):
        load_exported(export)
