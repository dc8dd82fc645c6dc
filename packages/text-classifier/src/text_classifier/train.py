"""Train (and evaluate) a LoRA text classifier.

uv run text-classifier train --config tiny --output_dir /tmp/t
uv run text-classifier eval --adapter_dir /tmp/t
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from lora_shared.callbacks import default_callbacks
from lora_shared.config import log_config
from lora_shared.hfload import stage_pretrained
from lora_shared.models import set_cpu_threads
from lora_shared.peft import trainable_report
from lora_shared.reports import print_metrics
from lora_shared.runs import (
    LABELS_FILE,
    full_state_dict,
    prepare_output_dir,
    resolve_resume,
    save_adapter,
    save_run_config,
    stage_dir,
    write_metrics,
)
from lora_shared.seed import seed_everything

from .card import CARD
from .data import build_collator, class_weights, load_splits, tokenize_dataset
from .metrics import compute_metrics, full_report, save_confusion_png
from .model import (
    TOKENIZER_DIR,
    build_model,
    build_tokenizer,
    for_plain_transformers,
    load_trained,
    weighted_cross_entropy,
)

logger = logging.getLogger(__name__)


def train(cfg) -> dict[str, float]:
    """Fine-tune `cfg.model` with LoRA on `cfg.data`; write adapter, metrics, curves and confusion matrix."""
    from transformers import Trainer

    # ---- 1. Setup: output dir (refuses a file, a read-only dir or a finished run: exit 2), seed, config
    args = cfg.train
    out = prepare_output_dir(args)
    seed_everything(args.seed)
    set_cpu_threads(args.cpu_threads)
    log_config(cfg.groups())

    # ---- 2. Data: splits, label names and loss weights (every record validated before any model is built)
    train_ds, eval_ds, labels = load_splits(cfg.data, seed=args.seed)
    weights = class_weights(train_ds["label"], len(labels), cfg.data.class_weighting)
    if weights:
        logger.info("class weights: %s", {n: round(w, 3) for n, w in zip(labels, weights)})

    # ---- 3. Model: tokenizer, base + LoRA; a random (tiny) base and its trained vocab are saved for predict
    resume = resolve_resume(args)
    # A trained WordPiece is staged with the base; a resumed run reuses the vocab its checkpoint was
    # trained with: the one staged by the killed run, else the published one (resuming a finished run).
    stage = stage_dir(out)
    vocab_home = out if resume and not (stage / TOKENIZER_DIR).is_dir() else stage
    tokenizer = build_tokenizer(
        cfg.model, train_ds["text"], output_dir=vocab_home, reuse_saved=resume is not None
    )
    model = build_model(cfg.model, cfg.lora, labels, tokenizer, output_dir=out)
    save_run_config(cfg.groups()[:4], out)  # staged: published with the adapter
    # Next to the adapter too: peft's AutoPeftModel and plain users look for the tokenizer there.
    stage_pretrained(for_plain_transformers(tokenizer, cfg.model), out)
    logger.info("%s", trainable_report(model))

    # ---- 4. Tokenise once up front; the collator pads each batch to its longest text
    train_tok = tokenize_dataset(train_ds, tokenizer, cfg.model)
    eval_tok = tokenize_dataset(eval_ds, tokenizer, cfg.model)

    # ---- 5. Trainer: shared callbacks (JSONL, throughput, curves, early stopping), weighted loss if skewed
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_tok,
        eval_dataset=eval_tok,
        data_collator=build_collator(tokenizer, cfg.model),
        compute_metrics=partial(compute_metrics, num_classes=len(labels)),
        compute_loss_func=partial(weighted_cross_entropy, weights=weights) if weights else None,
        callbacks=default_callbacks(args),
    )

    # ---- 6. Run: train (resuming if asked), score the held-out split, save adapter + reports
    result = trainer.train(resume_from_checkpoint=resume)
    state = full_state_dict(trainer)  # all ranks: a collective under FSDP / ZeRO-3
    pred = trainer.predict(eval_tok, metric_key_prefix="eval")
    if not trainer.is_world_process_zero():
        return {}
    sizes = {"train texts": len(train_ds), "eval texts": len(eval_ds)}
    save_adapter(
        model, out, {LABELS_FILE: {"labels": labels}}, state_dict=state, card={**CARD, "data_sizes": sizes}
    )
    preds = _logits(pred.predictions).argmax(-1)
    save_confusion_png(pred.label_ids, preds, labels, out / "confusion_matrix.png", "held-out split")
    per_class = {f"eval_{k}": v for k, v in full_report(pred.label_ids, preds, labels).items()}
    metrics = {**result.metrics, **pred.metrics, **per_class, **trainable_report(model, out).as_dict()}
    if weights:
        metrics["class_weights"] = dict(zip(labels, weights))
    write_metrics(out, metrics)
    print_metrics("text-classifier train", metrics, out)
    return metrics


def evaluate(cfg) -> dict[str, float]:
    """Score a trained adapter on a split: accuracy, macro-F1, per-class precision/recall, confusion PNG."""
    from transformers import Trainer

    seed_everything(cfg.train.seed)
    model, tokenizer, labels = load_trained(cfg)
    # The adapter's label list fixes the ids; a label it never saw is reported with its file:line.
    cfg.data.labels = labels
    train_ds, eval_ds, _ = load_splits(cfg.data, seed=cfg.train.seed)
    ds = train_ds if cfg.data.eval_split == "train" else eval_ds
    cfg.train.report_to, cfg.train.eval_strategy = [], "no"
    trainer = Trainer(
        model=model,
        args=cfg.train,
        data_collator=build_collator(tokenizer, cfg.model),
        compute_metrics=partial(compute_metrics, num_classes=len(labels)),
    )
    pred = trainer.predict(tokenize_dataset(ds, tokenizer, cfg.model), metric_key_prefix="eval")
    preds = _logits(pred.predictions).argmax(-1)
    out = Path(cfg.train.output_dir)
    save_confusion_png(
        pred.label_ids, preds, labels, out / "confusion_matrix_eval.png", f"{cfg.data.eval_split} split"
    )
    metrics = {
        **pred.metrics,
        **{f"eval_{k}": v for k, v in full_report(pred.label_ids, preds, labels).items()},
        "eval_samples": len(ds),
    }
    write_metrics(out, metrics, name="eval_metrics.json")
    print_metrics("text-classifier eval", metrics, out)
    return metrics


def _logits(predictions):
    """Some models return (logits, extras) from `predict`; the logits come first."""
    return predictions[0] if isinstance(predictions, tuple) else predictions
