"""This app's part of the model card (`lora_shared.cards`): the hub task and plain transformers/peft usage."""

CARD = {
    "app": "vision-pose",
    "pipeline_tag": "keypoint-detection",
    "task": "Keypoint (pose) estimation on person crops: LoRA on the backbone, heatmap head trained in full",
    "usage": """
import json

# ViTPose bases are stock transformers models; the MobileNetV2 + deconv head (offline config) is this
# app's own module: load those with `vision_pose.model.load_exported` on an `export` of the run.
from peft import PeftModel
from transformers import VitPoseForPoseEstimation

run = "{RUN}"
info = json.load(open(f"{run}/keypoints.json"))  # keypoint names, skeleton, crop size
base = VitPoseForPoseEstimation.from_pretrained("{BASE}")
model = PeftModel.from_pretrained(base, run).eval()
# model(pixel_values=crops).heatmaps: one heatmap per keypoint in info["keypoints"]
""",
    "usage_merged": """
from transformers import VitPoseForPoseEstimation

# ViTPose exports are a stock checkpoint; MobileNetV2 exports (backbone/ + head.safetensors) load with
# `vision_pose.model.load_exported`.
model = VitPoseForPoseEstimation.from_pretrained("{RUN}").eval()
""",
}
