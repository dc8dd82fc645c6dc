"""This app's part of the model card (`lora_shared.cards`): the hub task and plain transformers/peft usage."""

CARD = {
    "app": "llm-chat",
    "pipeline_tag": "text-generation",
    "task": "Chat: supervised fine-tuning of a causal LM with LoRA, loss on the assistant turns only",
    "usage": """
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

run = "{RUN}"
model = AutoPeftModelForCausalLM.from_pretrained(run).eval()  # loads the base named in adapter_config.json
tokenizer = AutoTokenizer.from_pretrained(run)  # saved with the run, chat template included
messages = [{"role": "user", "content": "Hello! What can you do?"}]
inputs = tokenizer.apply_chat_template(
    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
)
out = model.generate(**inputs, max_new_tokens=128)
print(tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
""",
    "usage_merged": """
from transformers import pipeline

chat = pipeline("text-generation", model="{RUN}")
messages = [{"role": "user", "content": "Hello! What can you do?"}]
print(chat(messages, max_new_tokens=128)[0]["generated_text"][-1]["content"])
""",
}
