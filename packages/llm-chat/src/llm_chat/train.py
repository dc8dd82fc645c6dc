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
from lora_shared.config import log_config
from lora_shared.io import atomic_write_json, atomic_write_text, replace_files_from
from lora_shared.models import set_cpu_threads
from lora_shared.peft import trainable_report
from lora_shared.reports import markdown_table, print_metrics
from lora_shared.runs import (
    full_state_dict,
    prepare_output_dir,
    resolve_resume,
    save_adapter,
    save_run_config,
    stage_dir,
    write_metrics,
)
from lora_shared.seed import seed_everything

from . import metrics as M
from . import predict as P
from .data import collate_fn, load_splits, tokenize_dialogs
from .model import build_model, build_tokenizer, keeps_logits_mask, load_for_cfg, packing_is_exact
from .predict import gen_options

logger = logging.getLogger(__name__)


def train(cfg) -> dict[str, float]:
    """Fine-tune `cfg.model` with LoRA on `cfg.data` (loss on assistant tokens); write adapter, tokenizer, metrics."""
    from transformers import Trainer

    # ---- 1. Setup: output dir (refuses a file, a read-only dir or a finished run: exit 2), seed, config
    args = cfg.train
    out = prepare_output_dir(args)
    seed_everything(args.seed)
    set_cpu_threads(args.cpu_threads)
    log_config(cfg.groups())

    # ---- 2. Data: dialogs validated and normalised before any model is loaded
    train_records, eval_records, _ = load_splits(cfg.data, seed=args.seed)

    # ---- 3. Model: tokenizer with a chat template, base + LoRA; a random (tiny) base is saved with the run
    tokenizer = build_tokenizer(cfg.model, args.chat_template_path)
    model = build_model(cfg.model, cfg.lora, tokenizer, output_dir=out)
    save_run_config(cfg.groups()[:4], out)  # staged: published with the adapter
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
        save_tokenizer(tokenizer, stage_dir(out))  # staged: lands with the adapter, never beside an old one
        save_adapter(model, out, state_dict=state)
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
def evaluate(cfg) -> dict[str, float]:
    """Score held-out sets per task (--eval_mode accuracy; --with_base: base and tuned side by side,
    --base_only: the base model alone), show a few answers per task (tasks), or test by hand (interactive)."""
    infer = cfg.infer
    steps, sides = P.score_plan(cfg, "eval")
    sets = P.eval_sets(infer.eval_tasks, cfg.data) if steps != ("interactive",) else {}
    seed_everything(cfg.train.seed)
    model, tokenizer = load_for_cfg(cfg)
    opts = gen_options(infer, greedy=True)
    summary: dict[str, float] = {}
    for step in steps:
        if step == "tasks":
            P.show_task_examples(model, tokenizer, sets, sides, opts, infer.examples_per_task)
        elif step == "accuracy":
            summary = _score_and_report(cfg, model, tokenizer, sets, sides, opts)
        else:
            P.interactive_tasks(model, tokenizer, sides, opts, system=infer.system or cfg.data.system_prompt)
    return summary


def _score_and_report(cfg, model, tokenizer, sets, sides, opts) -> dict[str, float]:
    """Every held-out item scored by each side: <stem>_metrics.json, _report.md, _predictions.jsonl, where the
    stem is `eval`, or `base_eval` when only the base model was scored (a run's own eval stays)."""
    summary, counts, predictions = P.score_sets(
        model, tokenizer, sets, sides, opts, cap=cfg.infer.max_eval_items, max_length=cfg.train.max_length
    )
    out = Path(cfg.train.output_dir)
    stem = "base_eval" if sides == ("base",) else "eval"
    columns = ["task", "set", "n", "metric", *sides] + (["change"] if len(sides) == 2 else [])
    table = markdown_table(M.eval_table(summary, counts, sides), columns)
    ppl = ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if k.endswith("_perplexity"))
    report = ["# llm-chat eval", "", _scored_models(cfg, sides), "", table, ""]
    report += [f"perplexity (held-out dialogs, assistant tokens): {ppl or 'none'}", ""]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{stem}_report.md", "\n".join(report))
    rows = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
    atomic_write_text(out / f"{stem}_predictions.jsonl", rows)
    merge_scores(out / f"{stem}_metrics.json", summary, sides)
    print(table)
    print_metrics("llm-chat eval", summary, out)
    return summary


def merge_scores(path: Path, summary: dict, sides) -> None:
    """Merge `summary` into the JSON at `path`. Without a base side, the base value of every key written now
    is dropped, so a base and a tuned number side by side always come from the same run."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    if "base" not in sides:
        for k in summary:
            old.pop(f"base_{k}", None)
    atomic_write_json(path, {**old, **summary})


def _scored_models(cfg, sides) -> str:
    base = f"random tiny {cfg.model.model_type}" if cfg.model.model_type else cfg.model.model_name_or_path
    tuned = f"; tuned = base + adapter `{cfg.model.adapter_dir}`" if "tuned" in sides else ""
    return f"base = `{base}`{tuned}; scored: {' and '.join(sides)} (greedy, max_new_tokens={cfg.infer.max_new_tokens})"


# ---------------------------------------------------------------------------------------------- compare
def compare(cfg) -> dict[str, float]:
    """Base model vs base + adapter on the same questions: keyword match, completeness, overall score,
    latency, tokens/s and a per-question win / tie / loss tally (--base_only true: the base model alone)."""
    _, sides = P.score_plan(cfg, "compare")
    questions = P.compare_questions(cfg.infer.questions)
    if cfg.infer.max_eval_items:
        questions = questions[: cfg.infer.max_eval_items]
    seed_everything(cfg.train.seed)
    model, tokenizer = load_for_cfg(cfg)
    opts = gen_options(cfg.infer, greedy=True)
    rows = P.compare_answers(model, tokenizer, questions, sides, opts)
    summary = M.compare_summary(rows, sides)
    metrics_md, answers_md = M.compare_tables(summary, rows, sides)
    md = ["# llm-chat compare: base vs adapter", "", f"{_scored_models(cfg, sides)}", ""]
    md += [metrics_md, "", "overall = (keyword match + completeness) / 2 for each answer.", ""]
    if len(sides) == 2:
        md += [
            f"keyword-match gain: {summary['keyword_match_gain_points']:+.1f} points; overall gain: "
            f"{summary['overall_gain_points']:+.1f} points; tuned vs base per question (overall): "
            f"{summary['wins']} wins, {summary['ties']} ties, {summary['losses']} losses",
            "",
        ]
    md += ["## Answers", "", answers_md, ""]
    out = Path(cfg.train.output_dir)
    stem = "base_compare" if sides == ("base",) else "compare"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{stem}.md", "\n".join(md))
    atomic_write_json(out / f"{stem}.json", {"summary": summary, "rows": rows})
    print(metrics_md)
    print_metrics("llm-chat compare", summary, out)
    return summary
