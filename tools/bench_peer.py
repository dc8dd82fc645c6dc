"""The peer `make bench` compares llm-chat's `train` with: TRL's `SFTTrainer`, as a TRL user would set it up.

Same resolved config as our run (model, dialogs in the same order, batch, steps, LoRA, learning rate and
schedule, seed), with TRL doing its own data work: a conversational `messages` dataset, tokenised and
masked by TRL (`assistant_only_loss=True`), batched padding-free (`padding_free=True`: the batch's dialogs
flattened into one row, position_ids restarting per dialog, TRL's own collator) and its fused LM-head loss.

TRL 1.16 facts this relies on (read in trl/trainer/sft_trainer.py and chat_template_utils.py):
- assistant_only_loss needs `{% generation %}` markers in the chat template. TRL swaps in a tagged copy
  for templates it knows (qwen2_5_training.jinja for Qwen2.5's), but that copy also labels the "\\n" after
  "<|im_start|>assistant" and after "<|im_end|>": 2 more tokens per answer than llm-chat, so the losses
  would not be over the same tokens. We pass our own tagged ChatML (`chat_template_path`, a TRL option),
  checked to render every dialog exactly like the model's own template, which labels exactly what
  llm-chat labels (answer + <|im_end|>); the label sets are compared token by token.
- padding_free without packing leaves max_length unenforced (TRL raises unless max_length=None), so every
  dialog must already fit: checked, else the run fails with the lengths.
- packing=True (BFD) would regroup the dataset into rows of max_length: other batches than ours, so no
  per-step loss comparison; padding_free keeps the batch = the same 8 (or n) dialogs.
- gradient_checkpointing defaults to True in SFTConfig; set to ours (off) so both do the same work.
"""

from __future__ import annotations

import tempfile

# ChatML with `{% generation %}` around exactly what llm-chat's loss reads (answer + <|im_end|>); the
# optional default system message is what Qwen2.5's template adds to dialogs without one.
_TAGGED_CHATML = (
    "{%- if messages[0]['role'] != 'system' and default_system %}"
    "{{- '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def tagged_chatml(tokenizer) -> str:
    """The generation-tagged ChatML for `tokenizer`, with its template's default system message, if any."""
    probe = [{"role": "user", "content": "\ue000"}]
    text = tokenizer.apply_chat_template(probe, tokenize=False)
    head = text.split("<|im_start|>user\n\ue000", 1)[0]
    system = ""
    if head.startswith("<|im_start|>system\n") and head.endswith("<|im_end|>\n"):
        system = head[len("<|im_start|>system\n") : -len("<|im_end|>\n")]
    return "{%- set default_system = " + _jinja_str(system) + " %}" + _TAGGED_CHATML


def _jinja_str(s: str) -> str:
    """A Jinja string literal of `s`."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def label_mismatch(ours: list[list[int]], theirs: list[list[int]]) -> tuple[int, int]:
    """(supervised tokens in `ours`, positions whose label differs) over dialogs of the same token ids."""
    total = diff = 0
    for a, b in zip(ours, theirs, strict=True):
        total += sum(x != -100 for x in a)
        if len(a) != len(b):
            diff += max(len(a), len(b))
            continue
        diff += sum(x != y for x, y in zip(a, b))
    return total, diff


def compare_losses(ours: list[list], theirs: list[list], rel_tol: float) -> dict:
    """Per-step logged losses side by side: the largest relative difference and whether all are within tol."""
    a, b = dict((int(s), x) for s, x in ours), dict((int(s), x) for s, x in theirs)
    steps = sorted(set(a) & set(b))
    rel = [abs(a[s] - b[s]) / max(abs(b[s]), 1e-12) for s in steps]
    return {
        "steps": steps,
        "ours": [a[s] for s in steps],
        "trl": [b[s] for s in steps],
        "max_rel_diff": max(rel) if rel else None,
        "rel_tol": rel_tol,
        "match": bool(steps) and len(steps) == len(a) == len(b) and max(rel) <= rel_tol,
    }


def trl_llm_chat(cfg) -> dict:
    """SFTTrainer (assistant_only_loss, padding_free) on llm-chat's resolved config; returns its checks."""
    import dataclasses

    from bench_plain import plain_causal_lm
    from datasets import Dataset
    from llm_chat.data import load_splits, tokenize_dialog
    from llm_chat.model import build_tokenizer
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    m, d, lora, t = cfg.model, cfg.data, cfg.lora, cfg.train
    # ---- data: the same dialogs in the same order as our train (the tokenizer is data, like the plain script's)
    set_seed(t.seed)
    tok = build_tokenizer(m, t.chat_template_path)
    records = load_splits(d, seed=t.seed)[0]
    ours = [tokenize_dialog(tok, r["messages"]) for r in records]
    longest = max(len(r["input_ids"]) for r in ours)
    if t.max_length and longest > t.max_length:
        raise SystemExit(
            f"peer run: a dialog has {longest} tokens > max_length {t.max_length}: TRL's padding_free does not "
            "truncate, so the two runs would train on different tokens; raise --max_length"
        )
    template = tagged_chatml(tok)
    for r in records:  # the tagged copy must render exactly what the model's own template renders
        if tok.apply_chat_template(r["messages"], tokenize=False) != tok.apply_chat_template(
            r["messages"], tokenize=False, chat_template=template
        ):
            raise SystemExit("peer run: the tagged ChatML does not render like this model's chat template")

    # ---- model: built as our train builds it (same seed, same init order), LoRA by peft
    model = plain_causal_lm(m, lora, tok)

    # ---- SFTConfig: every TrainingArguments value of our run, then TRL's data options
    path = tempfile.NamedTemporaryFile("w", suffix=".jinja", delete=False)
    path.write(template)
    path.close()
    names = {f.name for f in dataclasses.fields(SFTConfig) if f.init}
    kw = {k: v for k, v in t.to_dict().items() if k in names and not k.startswith("hub_")}
    kw.update(
        output_dir=tempfile.mkdtemp(prefix="bench-trl-"),
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        remove_unused_columns=True,  # TRL's default: it keeps its own tokenised columns
        gradient_checkpointing=t.gradient_checkpointing,
        chat_template_path=path.name,
        assistant_only_loss=True,
        padding_free=True,
        packing=False,
        max_length=None,  # padding_free without packing requires it; every dialog fits (checked above)
        dataset_num_proc=None,
    )
    args = SFTConfig(**kw)
    train_ds = Dataset.from_list([{"messages": r["messages"]} for r in records])
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, processing_class=tok)

    # ---- same tokens trained on: TRL's input ids and labels vs llm-chat's, dialog by dialog
    prepared = trainer.train_dataset
    same_ids = sum(list(a) == r["input_ids"] for a, r in zip(prepared["input_ids"], ours))
    total, diff = label_mismatch([r["labels"] for r in ours], [list(x) for x in prepared["labels"]])
    trainer.train()
    return {
        "dialogs": len(records),
        "same_input_ids": same_ids,
        "label_tokens": total,
        "label_mismatch": diff,
        "longest_dialog": longest,
    }


PEERS = {"llm_chat": trl_llm_chat}
