"""Train (and evaluate) a LoRA image classifier.

uv run vision-cls train --config tiny --output_dir /tmp/t
uv run vision-cls eval --adapter_dir /tmp/t
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from lora_shared.callbacks import default_callbacks
from lora_shared.config import log_config
from lora_shared.errors import DataError
from lora_shared.hfload import stage_pretrained
from lora_shared.metrics import confusion_matrix
from lora_shared.models import set_cpu_threads
from lora_shared.peft import trainable_report
from lora_shared.plots import plot_confusion_matrix
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
from .data import build_transforms, collate_fn, load_splits, transform_batch
from .metrics import compute_metrics
from .model import build_image_processor, build_model, image_settings, load_trained

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

    # ---- 2. Data: splits and label names (validated before any model is built)
    train_ds, eval_ds, labels = load_splits(cfg.data, seed=args.seed)

    # ---- 3. Model: base + LoRA; a random (tiny) base and the image processor are saved with the run
    model = build_model(cfg.model, cfg.lora, labels, output_dir=out)
    save_run_config(cfg.groups()[:4], out)  # staged: published with the adapter
    logger.info("%s", trainable_report(model))
    size, mean, std = image_settings(cfg.model, model)
    stage_pretrained(build_image_processor(size, mean, std), out)  # what pipeline() / plain users resize with

    # ---- 4. Transforms: augment train (seeded per sample: exact --resume), deterministic eval, lazily per batch
    augment = SeededAugment(build_transforms(size, mean, std, True), args.seed)
    train_ds = train_ds.add_column("idx", list(range(len(train_ds))))
    train_ds = train_ds.with_transform(partial(transform_batch, transform=augment))
    eval_ds = eval_ds.with_transform(
        partial(transform_batch, transform=build_transforms(size, mean, std, False))
    )

    # ---- 5. Trainer: shared callbacks (JSONL, throughput, curves, early stopping)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collate_fn,
        compute_metrics=partial(compute_metrics, num_classes=len(labels)),
        callbacks=[*default_callbacks(args), epoch_callback(augment)],
    )

    # ---- 6. Run: train (resuming if asked), score held-out data, save adapter + reports
    result = trainer.train(resume_from_checkpoint=resolve_resume(args))
    state = full_state_dict(trainer)  # all ranks: a collective under FSDP / ZeRO-3
    pred = trainer.predict(eval_ds, metric_key_prefix="eval")
    if trainer.is_world_process_zero():
        sizes = {"train images": len(train_ds), "eval images": len(eval_ds)}
        save_adapter(
            model,
            out,
            {LABELS_FILE: {"labels": labels}},
            state_dict=state,
            card={**CARD, "data_sizes": sizes},
        )
        cm = confusion_matrix(pred.label_ids, pred.predictions.argmax(-1), len(labels))
        plot_confusion_matrix(cm, labels, out / "confusion_matrix.png", title="held-out split")
        metrics = {**result.metrics, **pred.metrics, **trainable_report(model, out).as_dict()}
        write_metrics(out, metrics)
        print_metrics("vision-cls train", metrics, out)
        return metrics
    return {}


def evaluate(cfg) -> dict[str, float]:
    """Score a trained adapter on a split; write eval_metrics.json and a confusion-matrix PNG."""
    from transformers import Trainer

    seed_everything(cfg.train.seed)
    model, labels, (size, mean, std) = load_trained(cfg)
    train_ds, eval_ds, data_labels = load_splits(cfg.data, seed=cfg.train.seed)
    ds = train_ds if cfg.data.eval_split == "train" else eval_ds
    ds = _align_labels(ds, data_labels, labels, cfg.data.dataset)
    ds = ds.with_transform(partial(transform_batch, transform=build_transforms(size, mean, std, False)))
    cfg.train.report_to, cfg.train.eval_strategy = [], "no"
    trainer = Trainer(
        model=model,
        args=cfg.train,
        data_collator=collate_fn,
        compute_metrics=partial(compute_metrics, num_classes=len(labels)),
    )
    pred = trainer.predict(ds, metric_key_prefix="eval")
    out = Path(cfg.train.output_dir)
    cm = confusion_matrix(pred.label_ids, pred.predictions.argmax(-1), len(labels))
    plot_confusion_matrix(cm, labels, out / "confusion_matrix_eval.png", title=f"{cfg.data.eval_split} split")
    write_metrics(out, pred.metrics, name="eval_metrics.json")
    print_metrics("vision-cls eval", pred.metrics, out)
    return pred.metrics


def _align_labels(ds, data_labels: list[str], trained: list[str], where: str):
    """Map the eval data's label ids onto the adapter's label ids by name; unknown names are an error."""
    if data_labels == trained:
        return ds
    index = {n: i for i, n in enumerate(trained)}
    unknown = [n for n in data_labels if n not in index]
    if unknown:
        raise DataError(f"{where}: label(s) {unknown} were not in training (trained: {', '.join(trained)})")
    remap = [index[n] for n in data_labels]
    return ds.map(lambda b: {"label": [remap[i] for i in b["label"]]}, batched=True)
