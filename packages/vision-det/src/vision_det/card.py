"""This app's part of the model card (`lora_shared.cards`): the hub task and plain transformers/peft usage."""

CARD = {
    "app": "vision-det",
    "pipeline_tag": "object-detection",
    "task": "Object detection (DETR family): LoRA on the backbone, transformer and box heads trained",
    "usage": """
import json

import torch
from PIL import Image
from peft import PeftModel
from transformers import AutoImageProcessor, AutoModelForObjectDetection

# A run on the MobileNetV2 backbone (the offline config) needs `import vision_det` first: that backbone
# is registered by the app; DETR-R50 and other stock bases load with transformers alone.
run = "{RUN}"
labels = json.load(open(f"{run}/labels.json"))["labels"]
base = AutoModelForObjectDetection.from_pretrained(
    "{BASE}", num_labels=len(labels), id2label=dict(enumerate(labels)), ignore_mismatched_sizes=True
)
model = PeftModel.from_pretrained(base, run).eval()
processor = AutoImageProcessor.from_pretrained("{BASE}")
image = Image.open("photo.jpg").convert("RGB")
with torch.no_grad():
    outputs = model(**processor(image, return_tensors="pt"))
found = processor.post_process_object_detection(outputs, threshold=0.5, target_sizes=[image.size[::-1]])
print([(labels[i], box.tolist()) for i, box in zip(found[0]["labels"], found[0]["boxes"])])
""",
    "usage_merged": """
from transformers import pipeline

detect = pipeline("object-detection", model="{RUN}")  # custom backbones: `import vision_det` first
print(detect("photo.jpg", threshold=0.5))
""",
}
