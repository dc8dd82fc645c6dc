"""Train (SFT with LoRA), evaluate and compare chat adapters.

uv run llm-chat train --config tiny --output_dir /tmp/t
uv run llm-chat eval --adapter_dir /tmp/t
uv run llm-chat compare --adapter_dir /tmp/t
"""

from __future__ import annotations

import json
import logging
import tempfile
from functools import partial
from pathlib import Path

from lora_shared.callbacks import default_callbacks
from lora_shared.config import log_config, save_resolved_config
from lora_shared.errors import DataError, UsageError
from lora_shared.io import atomic_write_text, replace_files_from
from lora_shared.models import set_cpu_threads
from lora_shared.peft import trainable_report
from lora_shared.reports import markdown_table, print_metrics
from lora_shared.runs import full_state_dict, resolve_resume, save_adapter, write_metrics
from lora_shared.seed import seed_everything

from . import metrics as M
from .data import (
    BUILTIN,
    IGNORE_INDEX,
    builtin_path,
    collate_fn,
    load_splits,
    prompt_and_reference,
    read_dialogs,
    tokenize_dialogs,
)
from .model import build_model, build_tokenizer, keeps_logits_mask, load_for_cfg, packing_is_exact
from .predict import answer, gen_options

logger = logging.getLogger(__name__)


def train(cfg) -> dict[str, float]:
    """Fine-tune `cfg.model` with LoRA on `cfg.data` (loss on assistant tokens); write adapter, tokenizer, metrics."""
    from transformers import Trainer

    # ---- 1. Setup: seed, output dir, resolved config
    args = cfg.train
    seed_everything(args.seed)
    set_cpu_threads(args.cpu_threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_config(cfg.groups())

    # ---- 2. Data: dialogs validated and normalised before any model is loaded
    train_records, eval_records, _ = load_splits(cfg.data, seed=args.seed)

    # ---- 3. Model: tokenizer with a chat template, base + LoRA; a random (tiny) base is saved with the run
    tokenizer = build_tokenizer(cfg.model, args.chat_template_path)
    model = build_model(cfg.model, cfg.lora, tokenizer, output_dir=out)
    save_resolved_config(cfg.groups()[:4], out)
    logger.info("%s", trainable_report(model))

    # ---- 4. Tokenise: assistant-only labels; packing only where the model keeps attention per dialog
    train_ds = tokenize_dialogs(tokenizer, train_records, args.max_length, "train")
    eval_ds = tokenize_dialogs(tokenizer, eval_records, args.max_length, "eval") if eval_records else None
    packing = bool(args.packing)
    if packing and not packing_is_exact(model, len(tokenizer)):
        logger.warning("packing: this model's attention mixes packed dialogs; training with padding instead")
        packing = False
    logger.info("batching: %s", "padding-free packing (position_ids)" if packing else "padded")
    if eval_ds is None:
        args.eval_strategy = "no"
    args.prediction_loss_only = True  # eval = loss/perplexity; keeping [B, T, vocab] logits costs GBs
    args.label_names = ["labels"]

    # ---- 5. Trainer: plain HF Trainer (our collator does the masking/packing), shared callbacks
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=partial(
            collate_fn,
            pad_token_id=tokenizer.pad_token_id,
            packing=packing,
            pack_length=args.max_length,
            supervised_logits=keeps_logits_mask(model),
        ),
        processing_class=tokenizer,
        callbacks=default_callbacks(args),
    )

    # ---- 6. Run: train (resuming if asked), held-out loss, save adapter + tokenizer + metrics
    result = trainer.train(resume_from_checkpoint=resolve_resume(args))
    state = full_state_dict(trainer)  # all ranks: a collective under FSDP / ZeRO-3
    metrics = dict(result.metrics)
    if eval_ds is not None:
        ev = trainer.evaluate()
        metrics.update(ev)
        metrics["eval_perplexity"] = M.perplexity(ev["eval_loss"])
    if trainer.is_world_process_zero():
        save_adapter(model, out, state_dict=state)
        save_tokenizer(tokenizer, out)
        metrics.update(trainable_report(model, out).as_dict())
        metrics.update(
            train_dialogs=len(train_ds), eval_dialogs=len(eval_ds) if eval_ds else 0, packing=int(packing)
        )
        write_metrics(out, metrics)
        print_metrics("llm-chat train", metrics, out)
        return metrics
    return {}


def save_tokenizer(tokenizer, out: Path) -> None:
    """Tokenizer (with its chat template) next to the adapter, each file replaced atomically."""
    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer.", suffix=".tmp", dir=out))
    try:
        tokenizer.save_pretrained(tmp)
        replace_files_from(tmp, out)
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- eval
def eval_sets(spec: str, data_args) -> dict[str, list[dict]]:
    """Held-out records per set: built-in names (their test split) or JSONL paths."""
    sets = {}
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        if item in BUILTIN:
            sets[item], _ = read_dialogs(builtin_path(item, "test"), "openai")
        else:
            sets[Path(item).stem], _ = read_dialogs(item, data_args.data_format, data_args.skip_bad_records)
    if not sets:
        raise UsageError("eval_tasks is empty")
    return sets


def score_record(record: dict, prediction: str, labels_by_task: dict[str, list[str]]) -> dict[str, float]:
    """Metrics of one generated answer, chosen by the record's task (classification, extraction, free text)."""
    _, reference = prompt_and_reference(record)
    task = record.get("task")
    if task and task.endswith("_cls"):
        return {"accuracy": M.label_match(prediction, reference, labels_by_task.get(task, ()))}
    if task and task.endswith("_extract"):
        s = M.set_match(prediction, reference)
        return {"exact_match": s["exact"], "item_f1": s["f1"]}
    scores = {"rouge_l": M.rouge_l(prediction, reference), "bleu": M.bleu(prediction, reference)}
    if record.get("keywords"):
        scores["keyword_match"] = M.keyword_match(prediction, record["keywords"])
    return scores


def dialog_loss(model, tokenizer, records: list[dict], max_length: int | None, batch_size: int = 8) -> float:
    """Mean assistant-token loss over held-out dialogs (for perplexity)."""
    import torch

    ds = tokenize_dialogs(tokenizer, records, max_length, "perplexity")
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(ds), batch_size):
            batch = collate_fn(
                [ds[j] for j in range(i, min(i + batch_size, len(ds)))], tokenizer.pad_token_id
            )
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits.float()
            labels = batch["labels"][:, 1:]
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                labels.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
            total += nll.item()
            count += int((labels != IGNORE_INDEX).sum())
    return total / max(count, 1)


def evaluate(cfg) -> dict[str, float]:
    """Generate answers for held-out sets and score them per task; write eval_metrics.json + eval_report.md."""
    from tqdm.auto import tqdm

    seed_everything(cfg.train.seed)
    model, tokenizer = load_for_cfg(cfg, require_adapter=True)
    opts = gen_options(cfg.infer, greedy=True)
    out = Path(cfg.train.output_dir)
    sets = eval_sets(cfg.infer.eval_tasks, cfg.data)
    summary: dict[str, float] = {}
    rows, predictions = [], []
    for name, records in sets.items():
        records = records[: cfg.infer.max_eval_items] if cfg.infer.max_eval_items else records
        labels_by_task: dict[str, list[str]] = {}
        for r in records:
            if r.get("task", "").endswith("_cls"):
                labels_by_task.setdefault(r["task"], [])
                if r["messages"][-1]["content"] not in labels_by_task[r["task"]]:
                    labels_by_task[r["task"]].append(r["messages"][-1]["content"])
        per_task: dict[str, dict[str, list[float]]] = {}
        for r in tqdm(records, desc=f"eval {name}"):
            prompt, reference = prompt_and_reference(r)
            res = answer(model, tokenizer, prompt, **opts)
            scores = score_record(r, res["text"], labels_by_task)
            task = r.get("task", name)
            for k, v in scores.items():
                per_task.setdefault(task, {}).setdefault(k, []).append(v)
            predictions.append(
                {
                    "set": name,
                    "task": task,
                    "question": prompt[-1]["content"],
                    "reference": reference,
                    "prediction": res["text"],
                    **scores,
                }
            )
        for task, scores in per_task.items():
            row = {"set": name, "task": task, "n": len(next(iter(scores.values())))}
            for k, vals in scores.items():
                summary[f"eval_{task}_{k}"] = row[k] = round(M.mean(vals), 4)
            rows.append(row)
        try:
            loss = dialog_loss(model, tokenizer, records, cfg.train.max_length)
            summary[f"eval_{name}_perplexity"] = round(M.perplexity(loss), 4)
        except DataError as e:  # every dialog longer than max_length: no perplexity, the other scores stand
            logger.warning("no perplexity for %s: %s", name, e)
    cls = [v for k, v in summary.items() if k.endswith("_cls_accuracy")]
    if cls:
        summary["eval_classification_accuracy"] = round(M.mean(cls), 4)
    columns = ["set", "task", "n", "accuracy", "exact_match", "item_f1", "keyword_match", "rouge_l", "bleu"]
    columns = [c for c in columns if any(c in r for r in rows)]
    report = [
        "# llm-chat eval",
        "",
        f"adapter: `{cfg.model.adapter_dir}`",
        "",
        markdown_table(rows, columns),
        "",
    ]
    report += [
        "perplexity (held-out dialogs, assistant tokens): "
        + ", ".join(f"{k[5:-11]} {v:.3f}" for k, v in summary.items() if k.endswith("_perplexity")),
        "",
    ]
    atomic_write_text(out / "eval_report.md", "\n".join(report))
    atomic_write_text(
        out / "eval_predictions.jsonl", "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
    )
    write_metrics(out, summary, name="eval_metrics.json")
    print(markdown_table(rows, columns))
    print_metrics("llm-chat eval", summary, out)
    return summary


# ---------------------------------------------------------------------------------------------- compare
def compare_questions(path: str | None) -> list[dict]:
    """[{messages (prompt), question, keywords, reference}] from a JSONL file or the built-in banking test split."""
    if path is None:
        records, _ = read_dialogs(builtin_path("banking", "test"), "openai")
        out = []
        for r in records:
            prompt, reference = prompt_and_reference(r)
            out.append(
                {
                    "messages": prompt,
                    "question": prompt[-1]["content"],
                    "keywords": r.get("keywords", []),
                    "reference": reference,
                }
            )
        return out
    from .data import _iter_json_records

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"questions file not found: {p}")
    out = []
    for line, rec in _iter_json_records(p):
        if not (
            isinstance(rec, dict)
            and isinstance(rec.get("question"), str)
            and isinstance(rec.get("keywords"), list)
        ):
            raise UsageError(
                f'{p}:{line}: expected {{"question": str, "keywords": [str, ...], "reference"?: str}}'
            )
        msgs = ([{"role": "system", "content": rec["system"]}] if rec.get("system") else []) + [
            {"role": "user", "content": rec["question"]}
        ]
        out.append(
            {
                "messages": msgs,
                "question": rec["question"],
                "keywords": rec["keywords"],
                "reference": rec.get("reference"),
            }
        )
    return out


def _score(res: dict, q: dict) -> dict:
    tps = res["completion_tokens"] / res["seconds"] if res["seconds"] > 0 else 0.0
    return {
        "answer": res["text"],
        "keyword_match": M.keyword_match(res["text"], q["keywords"]),
        "completeness": M.completeness(
            res["text"], q["keywords"], q["reference"], res["finish_reason"] == "stop"
        ),
        "latency_s": res["seconds"],
        "tokens_per_s": tps,
    }


def compare(cfg) -> dict[str, float]:
    """Base model vs base + adapter on the same questions: keyword match, completeness, latency, tokens/s."""
    from tqdm.auto import tqdm

    seed_everything(cfg.train.seed)
    model, tokenizer = load_for_cfg(cfg, require_adapter=True)
    questions = compare_questions(cfg.infer.questions)
    if cfg.infer.max_eval_items:
        questions = questions[: cfg.infer.max_eval_items]
    opts = gen_options(cfg.infer, greedy=True)
    rows = []
    for q in tqdm(questions, desc="compare"):
        with model.disable_adapter():
            base = _score(answer(model, tokenizer, q["messages"], **opts), q)
        tuned = _score(answer(model, tokenizer, q["messages"], **opts), q)
        rows.append({"question": q["question"], "keywords": q["keywords"], "base": base, "tuned": tuned})
    summary = {}
    for side in ("base", "tuned"):
        for k in ("keyword_match", "completeness", "latency_s", "tokens_per_s"):
            summary[f"{side}_{k}"] = round(M.mean([r[side][k] for r in rows]), 4)
    summary["keyword_match_gain_points"] = round(
        100 * (summary["tuned_keyword_match"] - summary["base_keyword_match"]), 2
    )
    summary["questions"] = len(rows)
    out = Path(cfg.train.output_dir)
    table = [
        {"metric": k, "base": summary[f"base_{k}"], "tuned": summary[f"tuned_{k}"]}
        for k in ("keyword_match", "completeness", "latency_s", "tokens_per_s")
    ]
    side_by_side = [
        {
            "question": r["question"],
            "keywords": "、".join(r["keywords"]),
            "base answer": _cell(r["base"]["answer"]),
            "kw base": r["base"]["keyword_match"],
            "tuned answer": _cell(r["tuned"]["answer"]),
            "kw tuned": r["tuned"]["keyword_match"],
        }
        for r in rows
    ]
    md = [
        "# llm-chat compare: base vs adapter",
        "",
        f"adapter: `{cfg.model.adapter_dir}`; greedy decoding, max_new_tokens={opts['max_new_tokens']}",
        "",
    ]
    md += [
        markdown_table(table),
        "",
        f"keyword-match gain: {summary['keyword_match_gain_points']:+.1f} points",
        "",
        "## Answers",
        "",
        markdown_table(side_by_side),
        "",
    ]
    atomic_write_text(out / "compare.md", "\n".join(md))
    from lora_shared.io import atomic_write_json

    atomic_write_json(out / "compare.json", {"summary": summary, "rows": rows})
    print(markdown_table(table))
    print_metrics("llm-chat compare", summary, out)
    return summary


def _cell(text: str, limit: int = 80) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"
