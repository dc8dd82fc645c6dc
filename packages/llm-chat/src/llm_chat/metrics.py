"""Metrics for llm-chat on generated text (pure Python, Chinese-aware: character level, no tokeniser).

- exact match / accuracy for classification and extraction answers (after light normalisation),
- character-level ROUGE-L F1 and BLEU-4 for free answers (Chinese has no spaces: characters are the units),
- keyword match and a completeness score for the banking comparison,
- perplexity from the mean assistant-token loss.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

_PUNCT = re.compile(r"[\s\u3000。，、；：！？,.;:!?\"'“”‘’「」『』（）()【】\[\]<>《》]+")


def normalize(text: str) -> str:
    """NFKC (full-width -> ASCII), lower case, punctuation and whitespace removed."""
    return _PUNCT.sub("", unicodedata.normalize("NFKC", text or "")).lower()


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised strings are equal."""
    return float(normalize(prediction) == normalize(reference))


def label_match(prediction: str, reference: str, labels: Sequence[str] = ()) -> float:
    """Classification answer: exact match, or the reference label is the only known label the answer names."""
    if exact_match(prediction, reference):
        return 1.0
    p = normalize(prediction)
    named = [lab for lab in labels if normalize(lab) in p]
    return float(
        named == [reference]
        or (not labels and normalize(reference) in p and len(p) <= 2 * len(normalize(reference)))
    )


def split_items(text: str) -> list[str]:
    """Items of a list answer (file names): split on commas, semicolons, whitespace and 、."""
    return [t for t in re.split(r"[\s,，;；、]+", unicodedata.normalize("NFKC", text or "").strip()) if t]


def set_match(prediction: str, reference: str) -> dict[str, float]:
    """Extraction: exact set equality, and item-level precision/recall/F1."""
    pred, ref = set(split_items(prediction)), set(split_items(reference))
    tp = len(pred & ref)
    p = tp / len(pred) if pred else float(not ref)
    r = tp / len(ref) if ref else float(not pred)
    return {"exact": float(pred == ref), "f1": 2 * p * r / (p + r) if p + r else 0.0}


def _lcs(a: str, b: str) -> int:
    prev = [0] * (len(b) + 1)
    for ca in a:
        cur = [0]
        for j, cb in enumerate(b):
            cur.append(prev[j] + 1 if ca == cb else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """Character-level ROUGE-L F1 (longest common subsequence) on normalised text."""
    p, r = normalize(prediction), normalize(reference)
    if not p or not r:
        return float(p == r)
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    prec, rec = lcs / len(p), lcs / len(r)
    return 2 * prec * rec / (prec + rec)


def bleu(prediction: str, reference: str, max_n: int = 4) -> float:
    """Sentence BLEU-4 over characters with add-one smoothing (Lin & Och 2004) and the brevity penalty."""
    p, r = normalize(prediction), normalize(reference)
    if not p or not r:
        return float(p == r)
    log_sum = 0.0
    for n in range(1, max_n + 1):
        pn = Counter(p[i : i + n] for i in range(len(p) - n + 1))
        rn = Counter(r[i : i + n] for i in range(len(r) - n + 1))
        match = sum(min(c, rn[g]) for g, c in pn.items())
        total = max(len(p) - n + 1, 0)
        if n == 1:
            if match == 0:
                return 0.0
            log_sum += math.log(match / total)
        else:
            # Add-one smoothing keeps a short answer with no 4-gram overlap from scoring exactly 0.
            log_sum += math.log((match + 1) / (total + 1))
    bp = 1.0 if len(p) > len(r) else math.exp(1 - len(r) / len(p))
    return bp * math.exp(log_sum / max_n)


def keyword_match(answer: str, keywords: Sequence[str]) -> float:
    """Fraction of expected keywords found in the answer (normalised substring match)."""
    if not keywords:
        return 0.0
    a = normalize(answer)
    return sum(normalize(k) in a for k in keywords) / len(keywords)


def completeness(answer: str, keywords: Sequence[str], reference: str | None, finished: bool) -> float:
    """0..1: mean of three checks a reviewer would make of a FAQ answer: it covers at least half of the
    expected keywords, its length is within 0.5x..2x of the reference answer's (not a stub, not rambling),
    and it ended by itself rather than being cut at max_new_tokens."""
    covered = keyword_match(answer, keywords) >= 0.5
    if reference:
        ratio = len(normalize(answer)) / max(len(normalize(reference)), 1)
        sized = 0.5 <= ratio <= 2.0
    else:
        sized = len(normalize(answer)) >= 10
    return (covered + sized + bool(finished)) / 3


def perplexity(mean_loss: float) -> float:
    """exp(mean token negative log-likelihood), capped to stay finite in JSON."""
    return float(math.exp(min(mean_loss, 50.0)))


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; 0.0 for no values."""
    return float(sum(values) / len(values)) if values else 0.0
