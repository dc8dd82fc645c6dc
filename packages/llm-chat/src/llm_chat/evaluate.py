"""Generation-based scoring of chat adapters: `eval` (held-out sets per task) and `compare` (base vs adapter).

uv run llm-chat eval --adapter_dir /tmp/t [--with_base true | --base_only true]
uv run llm-chat compare --adapter_dir /tmp/t
"""

from __future__ import annotations

import json
from pathlib import Path

from lora_shared.io import atomic_write_json, atomic_write_text
from lora_shared.reports import markdown_table, print_metrics
from lora_shared.seed import seed_everything

from . import metrics as M
from . import predict as P
from .model import load_for_cfg


# ---------------------------------------------------------------------------------------------- eval
def evaluate(cfg) -> dict[str, float]:
    """Score held-out sets per task (--eval_mode accuracy; --with_base: base and tuned side by side,
    --base_only: the base model alone), show a few answers per task (tasks), or test by hand (interactive)."""
    infer = cfg.infer
    steps, sides = P.score_plan(cfg, "eval")
    sets = P.eval_sets(infer.eval_tasks, cfg.data) if steps != ("interactive",) else {}
    seed_everything(cfg.train.seed)
    model, tokenizer = load_for_cfg(cfg)
    opts = P.gen_options(infer, greedy=True)
    summary: dict[str, float] = {}
    for step in steps:
        if step == "tasks":
            P.show_task_examples(model, tokenizer, sets, sides, opts, infer.examples_per_task)
        elif step == "accuracy":
            summary = score_and_report(cfg, model, tokenizer, sets, sides, opts)
        else:
            P.interactive_tasks(model, tokenizer, sides, opts, system=infer.system or cfg.data.system_prompt)
    return summary


def score_and_report(cfg, model, tokenizer, sets, sides, opts) -> dict[str, float]:
    """Every held-out item scored by each side: <stem>_metrics.json, _report.md, _predictions.jsonl, where the
    stem is `eval`, or `base_eval` when only the base model was scored (a run's own eval stays)."""
    summary, counts, predictions = P.score_sets(
        model,
        tokenizer,
        sets,
        sides,
        opts,
        cap=cfg.infer.max_eval_items,
        max_length=cfg.train.max_length,
        batch_size=cfg.infer.eval_batch_size,
    )
    out = Path(cfg.train.output_dir)
    stem = "base_eval" if sides == ("base",) else "eval"
    table, report = eval_report(cfg, summary, counts, sides)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{stem}_report.md", report)
    rows = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
    atomic_write_text(out / f"{stem}_predictions.jsonl", rows)
    merge_scores(out / f"{stem}_metrics.json", summary, sides)
    print(table)
    print_metrics("llm-chat eval", summary, out)
    return summary


def eval_report(cfg, summary: dict, counts: dict, sides) -> tuple[str, str]:
    """(the per-task table, the whole eval_report.md text)."""
    columns = ["task", "set", "n", "metric", *sides] + (["change"] if len(sides) == 2 else [])
    table = markdown_table(M.eval_table(summary, counts, sides), columns)
    ppl = ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if k.endswith("_perplexity"))
    report = ["# llm-chat eval", "", scored_models(cfg, sides), "", table, ""]
    report += [f"perplexity (held-out dialogs, assistant tokens): {ppl or 'none'}", ""]
    return table, "\n".join(report)


def merge_scores(path: Path, summary: dict, sides) -> None:
    """Merge `summary` into the JSON at `path`. Without a base side, the base value of every key written now
    is dropped, so a base and a tuned number side by side always come from the same run."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    if "base" not in sides:
        for k in summary:
            old.pop(f"base_{k}", None)
    atomic_write_json(path, {**old, **summary})


def scored_models(cfg, sides) -> str:
    """The report line naming the base model, the adapter and which sides were scored."""
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
    opts = P.gen_options(cfg.infer, greedy=True)
    rows = P.compare_answers(model, tokenizer, questions, sides, opts)
    summary = M.compare_summary(rows, sides)
    metrics_md, report = compare_report(cfg, summary, rows, sides)
    out = Path(cfg.train.output_dir)
    stem = "base_compare" if sides == ("base",) else "compare"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{stem}.md", report)
    atomic_write_json(out / f"{stem}.json", {"summary": summary, "rows": rows})
    print(metrics_md)
    print_metrics("llm-chat compare", summary, out)
    return summary


def compare_report(cfg, summary: dict, rows: list[dict], sides) -> tuple[str, str]:
    """(the metrics table, the whole compare.md text: metrics, gains and tally, every answer)."""
    metrics_md, answers_md = M.compare_tables(summary, rows, sides)
    md = ["# llm-chat compare: base vs adapter", "", f"{scored_models(cfg, sides)}", ""]
    md += [metrics_md, "", "overall = (keyword match + completeness) / 2 for each answer.", ""]
    if len(sides) == 2:
        md += [
            f"keyword-match gain: {summary['keyword_match_gain_points']:+.1f} points; overall gain: "
            f"{summary['overall_gain_points']:+.1f} points; tuned vs base per question (overall): "
            f"{summary['wins']} wins, {summary['ties']} ties, {summary['losses']} losses",
            "",
        ]
    md += ["## Answers", "", answers_md, ""]
    return metrics_md, "\n".join(md)
