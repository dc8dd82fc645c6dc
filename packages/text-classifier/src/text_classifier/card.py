"""This app's part of the model card (`lora_shared.cards`): the hub task and plain transformers/peft usage.

The snippets run as written in this package's tests/test_hf_loading.py, in a process that cannot import
loraworks.
"""

CARD = {
    "app": "text-classifier",
    "pipeline_tag": "text-classification",
    "task": "Text classification: LoRA on the encoder/decoder, a new classification head trained in full",
    "usage": """
import json

from peft import AutoPeftModelForSequenceClassification
from transformers import AutoTokenizer

run = "{RUN}"
names = json.load(open(f"{run}/labels.json"))["labels"]  # the trained head's classes, in id order
# Loads the base that adapter_config.json names (base_model_name_or_path); this run's base: {BASE}
model = AutoPeftModelForSequenceClassification.from_pretrained(
    run,
    num_labels=len(names),
    id2label=dict(enumerate(names)),
    label2id={name: i for i, name in enumerate(names)},
).eval()  # the base with a head for these classes, then the LoRA weights + the trained head
tokenizer = AutoTokenizer.from_pretrained(run)  # the run's tokenizer, cutting at its max_length
logits = model(**tokenizer("my card was stolen", truncation=True, return_tensors="pt")).logits
print(model.config.id2label[logits.argmax(-1).item()])
""",
    "usage_merged": """
from transformers import pipeline

classify = pipeline("text-classification", model="{RUN}")
print(classify("my card was stolen", top_k=3, truncation=True))
""",
}
