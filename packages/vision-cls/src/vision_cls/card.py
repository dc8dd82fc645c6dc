"""This app's part of the model card (`lora_shared.cards`): the hub task and plain transformers/peft usage.

The snippets run as written in this package's tests/test_hf_loading.py, in a process that cannot import
loraworks.
"""

CARD = {
    "app": "vision-cls",
    "pipeline_tag": "image-classification",
    "task": "Image classification: LoRA on the backbone, a new classification head trained in full",
    "usage": """
import json

from PIL import Image
from peft import PeftModel
from transformers import AutoImageProcessor, AutoModelForImageClassification

run = "{RUN}"
names = json.load(open(f"{run}/labels.json"))["labels"]  # the trained head's classes, in id order
base = AutoModelForImageClassification.from_pretrained(
    "{BASE}",
    num_labels=len(names),
    id2label=dict(enumerate(names)),
    label2id={name: i for i, name in enumerate(names)},
    ignore_mismatched_sizes=True,  # the base's own head (e.g. ImageNet's) gives way to the trained one
)
model = PeftModel.from_pretrained(base, run).eval()  # LoRA weights + the trained head
processor = AutoImageProcessor.from_pretrained(run)  # the size and normalisation used in training
logits = model(**processor(Image.open("photo.jpg").convert("RGB"), return_tensors="pt")).logits
print(model.config.id2label[logits.argmax(-1).item()])
""",
    "usage_merged": """
from transformers import pipeline

classify = pipeline("image-classification", model="{RUN}")
print(classify("photo.jpg", top_k=3))
""",
}
