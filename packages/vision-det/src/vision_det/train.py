"""Train (and evaluate) a LoRA object detector; COCO mAP on the held-out split.

uv run vision-det train --config tiny --output_dir /tmp/t
uv run vision-det eval --adapter_dir /tmp/t
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from lora_shared.callbacks import default_callbacks
from lora_shared.config import log_config
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
    write_metrics,
)
from lora_shared.seed import SeededAugment, epoch_callback, seed_everything

from .card import CARD
from .data import align_categories, build_transforms, collate_fn, load_splits, transform_batch
from .metrics import CocoMetrics, format_table, preprocess_logits_for_metrics
from .model import build_model, build_processor, load_trained

logger = logging.getLogger(__name__)


def train(cfg) -> dict[str, float]:
    """Fine-tune `cfg.model` with LoRA on `cfg.data`; write adapter, COCO metrics and curves."""
    from transformers import Trainer

    # ---- 1. Setup: output dir (refuses a file, a read-only dir or a finished run: exit 2), seed, config
    args = cfg.train
    out = prepare_output_dir(args)
    seed_everything(args.seed)
    set_cpu_threads(args.cpu_threads)
    log_config(cfg.groups())

    # ---- 2. Data: splits and categories (every box validated before any model is built)
    train_ds, eval_ds, categories = load_splits(cfg.data, seed=args.seed)
    labels = [c["name"] for c in categories]

    # ---- 3. Model: detector + LoRA; a random-init (tiny/offline) base is saved so predict can rebuild it
    model = build_model(cfg.model, cfg.lora, labels, output_dir=out)
    processor = build_processor(cfg.model)
    save_run_config(cfg.groups()[:4], out)  # staged: published with the adapter
    logger.info("%s", trainable_report(model))

    # ---- 4. Transforms: box-moving augmentation on train (seeded per image: exact --resume), none on eval;
    # the processor resizes + encodes
    augment = SeededAugment(build_transforms(cfg.data, True), args.seed)
    train_ds = train_ds.with_transform(partial(transform_batch, transform=augment, processor=processor))
    eval_ds = eval_ds.with_transform(
        partial(transform_batch, transform=build_transforms(cfg.data, False), processor=processor)
    )

    # ---- 5. Trainer: shared callbacks (JSONL, throughput, curves, early stopping), COCO mAP per eval
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collate_fn,
        compute_metrics=CocoMetrics(labels),
        preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        callbacks=[*default_callbacks(args), epoch_callback(augment)],
    )

    # ---- 6. Run: train (resuming if asked), score held-out data, save adapter + reports
    result = trainer.train(resume_from_checkpoint=resolve_resume(args))
    state = full_state_dict(trainer)  # all ranks: a collective under FSDP / ZeRO-3
    pred = trainer.predict(eval_ds, metric_key_prefix="eval")
    if trainer.is_world_process_zero():
        save_adapter(
            model,
            out,
            {LABELS_FILE: {"labels": labels, "categories": categories}},
            state_dict=state,
            card={**CARD, "data_sizes": {"train images": len(train_ds), "eval images": len(eval_ds)}},
        )
        metrics = {**result.metrics, **pred.metrics, **trainable_report(model, out).as_dict()}
        write_metrics(out, metrics)
        print_metrics("vision-det train", metrics, out)
        print(f"\n== COCO box metrics (held-out split, {len(eval_ds)} images) ==")
        print(format_table(pred.metrics, labels, prefix="eval_"))
        return metrics
    return {}


def evaluate(cfg) -> dict[str, float]:
    """Score a trained adapter on a split with COCOeval; write eval_metrics.json and print the table."""
    from transformers import Trainer

    seed_everything(cfg.train.seed)
    set_cpu_threads(cfg.train.cpu_threads)
    model, labels, processor = load_trained(cfg)
    train_ds, eval_ds, categories = load_splits(cfg.data, seed=cfg.train.seed)
    ds = train_ds if cfg.data.eval_split == "train" else eval_ds
    ds = align_categories(ds, categories, [{"name": n} for n in labels], cfg.data.dataset)
    ds = ds.with_transform(
        partial(transform_batch, transform=build_transforms(cfg.data, False), processor=processor)
    )
    cfg.train.report_to, cfg.train.eval_strategy = [], "no"
    trainer = Trainer(
        model=model,
        args=cfg.train,
        data_collator=collate_fn,
        compute_metrics=CocoMetrics(labels),
        preprocess_logits_for_metrics=preprocess_logits_for_metrics,
    )
    pred = trainer.predict(ds, metric_key_prefix="eval")
    out = Path(cfg.train.output_dir)
    write_metrics(out, pred.metrics, name="eval_metrics.json")
    print_metrics("vision-det eval", pred.metrics, out)
    print(f"\n== COCO box metrics ({cfg.data.eval_split} split, {len(ds)} images) ==")
    print(format_table(pred.metrics, labels, prefix="eval_"))
    return pred.metrics
