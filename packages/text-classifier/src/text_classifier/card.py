"""This app's part of the model card (`lora_shared.cards`): the hub task and plain transformers/peft usage."""

CARD = {
    "app": "text-classifier",
    "pipeline_tag": "text-classification",
    "task": "Text classification: LoRA on the encoder/decoder, a new classification head trained in full",
    "usage": """
import json

from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

run = "{RUN}"
labels = json.load(open(f"{run}/labels.json"))["labels"]
base = AutoModelForSequenceClassification.from_pretrained(
    "{BASE}", num_labels=len(labels), id2label=dict(enumerate(labels))
)
model = PeftModel.from_pretrained(base, run).eval()  # LoRA weights + the trained head
tokenizer = AutoTokenizer.from_pretrained("{BASE}")
logits = model(**tokenizer("my card was stolen", return_tensors="pt")).logits
print(labels[logits.argmax(-1).item()])
""",
    "usage_merged": """
from transformers import pipeline

classify = pipeline("text-classification", model="{RUN}")
print(classify("my card was stolen", top_k=3))
""",
}
