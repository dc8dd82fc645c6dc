"""Metrics for llm-chat on generated text (pure Python, Chinese-aware: character level, no tokeniser).

- exact match / accuracy for classification and extraction answers (after light normalisation),
- character-level ROUGE-L F1 and BLEU-4 for free answers (Chinese has no spaces: characters are the units),
- keyword match, completeness, an overall score and a win / tie / loss tally for the base-vs-tuned comparison,
- perplexity from the mean assistant-token loss,
- the per-task scoring of `eval` and the tables of its and `compare`'s reports.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

from lora_shared.reports import markdown_table

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


# ---------------------------------------------------------------------------------------------- eval
SIDES = ("base", "tuned")  # the base model (adapter off) and base + adapter, in report order
MAIN_METRICS = ("accuracy", "exact_match", "item_f1", "keyword_match", "rouge_l", "bleu")


def task_labels(records: Sequence[dict]) -> dict[str, list[str]]:
    """Labels of each classification task (`*_cls`): the records' own `labels` list, else every answer seen."""
    out: dict[str, list[str]] = {}
    for r in records:
        task = r.get("task") or ""
        if task.endswith("_cls"):
            labels = out.setdefault(task, [])
            for lab in r.get("labels") or [r["messages"][-1]["content"]]:
                if lab not in labels:
                    labels.append(lab)
    return out


def score_record(record: dict, prediction: str, labels_by_task: dict[str, list[str]]) -> dict[str, float]:
    """Metrics of one generated answer, chosen by the record's task (classification, extraction, free text)."""
    reference = record["messages"][-1]["content"]
    task = record.get("task")
    if task and task.endswith("_cls"):
        labels = record.get("labels") or labels_by_task.get(task, ())
        return {"accuracy": label_match(prediction, reference, labels)}
    if task and task.endswith("_extract"):
        s = set_match(prediction, reference)
        return {"exact_match": s["exact"], "item_f1": s["f1"]}
    scores = {"rouge_l": rouge_l(prediction, reference), "bleu": bleu(prediction, reference)}
    if record.get("keywords"):
        scores["keyword_match"] = keyword_match(prediction, record["keywords"])
    return scores


def summarize_eval(name: str, scored: Sequence[dict], prefix: str = "") -> dict[str, float]:
    """`{prefix}eval_<task>_<metric>` means over one set's scored answers (dicts with `task` and the scores)."""
    per_task: dict[str, dict[str, list[float]]] = {}
    for row in scored:
        for k in MAIN_METRICS:
            if k in row:
                per_task.setdefault(row.get("task") or name, {}).setdefault(k, []).append(row[k])
    return {
        f"{prefix}eval_{task}_{k}": round(mean(vals), 4)
        for task, metrics in per_task.items()
        for k, vals in metrics.items()
    }


def classification_accuracy(summary: dict[str, float], prefix: str = "") -> dict[str, float]:
    """`{prefix}eval_classification_accuracy`: the mean over the classification tasks present, if any."""
    cls = [v for k, v in summary.items() if k.startswith(f"{prefix}eval_") and k.endswith("_cls_accuracy")]
    return {f"{prefix}eval_classification_accuracy": round(mean(cls), 4)} if cls else {}


def eval_table(
    summary: dict[str, float], counts: dict[str, tuple[str, int]], sides: Sequence[str]
) -> list[dict]:
    """Report rows `task | set | n | metric | base | tuned | change`, one per task and metric.

    `counts` maps each task to (its set, items scored); a side's value is `summary[prefix + eval_<task>_<m>]`.
    """
    rows = []
    for task, (name, n) in counts.items():
        for k in MAIN_METRICS:
            values = {s: summary.get(f"{_prefix(s)}eval_{task}_{k}") for s in sides}
            if all(v is None for v in values.values()):
                continue
            row = {"set": name, "task": task, "n": n, "metric": k, **values}
            if len(sides) == 2 and None not in values.values():
                row["change"] = f"{values['tuned'] - values['base']:+.4f}"
            rows.append(row)
    return rows


def _prefix(side: str) -> str:
    return "base_" if side == "base" else ""


# ---------------------------------------------------------------------------------------------- compare
def overall_score(keyword: float, complete: float) -> float:
    """One score per answer, 0..1: the mean of keyword match and completeness.

    The banking reference system (seed 001) reports an overall score next to keyword match and completeness
    without a formula; an equal-weight mean keeps it on the same 0..1 scale and counts the facts (keywords)
    and the form (coverage, size, a finished answer) alike.
    """
    return (keyword + complete) / 2


def answer_scores(answer: str, keywords: Sequence[str], reference: str | None, finished: bool) -> dict:
    """keyword_match, completeness and overall of one FAQ answer."""
    kw = keyword_match(answer, keywords)
    comp = completeness(answer, keywords, reference, finished)
    return {"keyword_match": kw, "completeness": comp, "overall": overall_score(kw, comp)}


def win_tie_loss(base: Sequence[float], tuned: Sequence[float], tol: float = 1e-6) -> tuple[list[str], dict]:
    """Per question "win" / "tie" / "loss" of tuned vs base (scores within `tol` tie), and the tally."""
    if len(base) != len(tuned):
        raise ValueError(f"{len(base)} base scores vs {len(tuned)} tuned scores")
    outcomes = ["tie" if abs(t - b) <= tol else "win" if t > b else "loss" for b, t in zip(base, tuned)]
    return outcomes, {k: outcomes.count(k) for k in ("win", "tie", "loss")}


COMPARE_METRICS = ("keyword_match", "completeness", "overall", "latency_s", "tokens_per_s")


def compare_summary(rows: Sequence[dict], sides: Sequence[str]) -> dict[str, float]:
    """Means per side (`base_*`, `tuned_*`), gains in points and the win / tie / loss tally (both sides)."""
    summary: dict[str, float] = {}
    for side in sides:
        for k in COMPARE_METRICS:
            summary[f"{side}_{k}"] = round(mean([r[side][k] for r in rows]), 4)
    if len(sides) == 2:
        for k in ("keyword_match", "overall"):
            summary[f"{k}_gain_points"] = round(100 * (summary[f"tuned_{k}"] - summary[f"base_{k}"]), 2)
        _, tally = win_tie_loss([r["base"]["overall"] for r in rows], [r["tuned"]["overall"] for r in rows])
        summary.update(wins=tally["win"], ties=tally["tie"], losses=tally["loss"])
    summary["questions"] = len(rows)
    return summary


def compare_tables(summary: dict, rows: Sequence[dict], sides: Sequence[str]) -> tuple[str, str]:
    """(metric table, per-question answers table) as markdown."""
    metrics = markdown_table(
        [{"metric": k, **{s: summary[f"{s}_{k}"] for s in sides}} for k in COMPARE_METRICS]
    )
    answers = []
    for r in rows:
        row = {"question": r["question"], "keywords": "、".join(r["keywords"])}
        for s in sides:
            row[f"{s} answer"] = _cell(r[s]["answer"])
            row[f"overall {s}"] = round(r[s]["overall"], 3)
        if "outcome" in r:
            row["tuned vs base"] = r["outcome"]
        answers.append(row)
    return metrics, markdown_table(answers)


def _cell(text: str, limit: int = 80) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"
