"""This app's part of the model card (`lora_shared.cards`): the hub task and plain transformers/peft usage.

The snippets run as written in this package's tests/test_hf_loading.py, in a process that cannot import
loraworks.
"""

CARD = {
    "app": "vision-det",
    "pipeline_tag": "object-detection",
    "task": "Object detection (DETR family): LoRA on the backbone, transformer and box heads trained",
    "usage": """
import json
from pathlib import Path

import torch
from PIL import Image
from peft import PeftConfig, PeftModel
from transformers import AutoImageProcessor, AutoModelForObjectDetection

run = "{RUN}"
labels = json.load(open(f"{run}/labels.json"))["labels"]
# A base built from a config (tiny/offline) is saved in the run: base_model/, with the code of vision-det's
# MobileNetV2 backbone when it has one (trust_remote_code=True runs that file; stock bases need no code).
# Otherwise adapter_config.json names the base's hub id.
saved = Path(run, "base_model")
base_id = str(saved) if saved.is_dir() else PeftConfig.from_pretrained(run).base_model_name_or_path
base = AutoModelForObjectDetection.from_pretrained(
    base_id,
    num_labels=len(labels),
    id2label=dict(enumerate(labels)),
    ignore_mismatched_sizes=True,  # a pretrained base's own class head gives way to the trained one
    trust_remote_code=True,
)
try:
    base.get_input_embeddings()
except NotImplementedError:  # D-FINE, RT-DETRv2: peft asks every model for input embeddings; these have none
    base.get_input_embeddings = torch.nn.Identity
model = PeftModel.from_pretrained(base, run).eval()  # LoRA weights + the trained heads
processor = AutoImageProcessor.from_pretrained(run)  # the input size and normalisation used in training
image = Image.open("photo.jpg").convert("RGB")
with torch.no_grad():
    outputs = model(**processor(image, return_tensors="pt"))
found = processor.post_process_object_detection(outputs, threshold=0.5, target_sizes=[image.size[::-1]])
print([(labels[i], box.tolist()) for i, box in zip(found[0]["labels"], found[0]["boxes"])])
""",
    "usage_merged": """
from transformers import pipeline

# trust_remote_code=True: a detector on vision-det's MobileNetV2 backbone ships that backbone's code here
detect = pipeline("object-detection", model="{RUN}", trust_remote_code=True)
print(detect("photo.jpg", threshold=0.5))
""",
}
