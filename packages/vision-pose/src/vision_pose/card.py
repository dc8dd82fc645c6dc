"""This app's part of the model card (`lora_shared.cards`): the hub task and plain transformers/peft usage.

The snippets run as written in this package's tests/test_hf_loading.py, in a process that cannot import
loraworks.
"""

CARD = {
    "app": "vision-pose",
    "pipeline_tag": "keypoint-detection",
    "task": "Keypoint (pose) estimation on person crops: LoRA on the backbone, heatmap head trained in full",
    "usage": """
import json
from pathlib import Path

from peft import PeftConfig, PeftModel
from transformers import AutoModelForPoseEstimation

run = "{RUN}"
info = json.load(open(f"{run}/keypoints.json"))  # keypoint names, skeleton, crop size
# The base: this run's base_model/ when it has one (a tiny model, or MobileNetV2 + heatmap head, whose code
# ships there: trust_remote_code=True runs it), else the stock ViTPose that adapter_config.json names.
saved = Path(run, "base_model")
base_id = str(saved) if saved.is_dir() else PeftConfig.from_pretrained(run).base_model_name_or_path
base = AutoModelForPoseEstimation.from_pretrained(
    base_id, num_labels=len(info["keypoints"]), ignore_mismatched_sizes=True, trust_remote_code=True
)
model = PeftModel.from_pretrained(base, run).eval()  # LoRA weights + the trained heatmap head
# crops: (N, 3, info["image_height"], info["image_width"]) person crops, RGB in [0, 1] normalised with the
# ImageNet mean/std; model(pixel_values=crops).heatmaps: one heatmap per keypoint in info["keypoints"]
""",
    "usage_merged": """
import json

from transformers import AutoModelForPoseEstimation

info = json.load(open("{RUN}/keypoints.json"))  # keypoint names, skeleton, crop size
# ViTPose exports are stock checkpoints; MobileNetV2 ones ship their modeling file (trust_remote_code=True)
model = AutoModelForPoseEstimation.from_pretrained("{RUN}", trust_remote_code=True).eval()
# model(pixel_values=crops).heatmaps, crops as for the adapter: see keypoints.json's image_height/width
""",
}
