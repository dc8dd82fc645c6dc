"""Train (and evaluate) a LoRA keypoint estimator (top-down heatmaps).

uv run vision-pose train --config tiny --output_dir /tmp/p
uv run vision-pose eval --adapter_dir /tmp/p
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
    full_state_dict,
    prepare_output_dir,
    resolve_resume,
    save_adapter,
    save_run_config,
    write_metrics,
)
from lora_shared.seed import epoch_callback, seed_everything

from .card import CARD
from .data import PoseDataset, collate_fn, default_sigmas, load_splits
from .metrics import compute_metrics, decode_for_metrics
from .model import KEYPOINTS_FILE, build_model, crop_settings, load_trained
from .predict import draw_skeleton, save_png, score_split

logger = logging.getLogger(__name__)


def resolve_sigmas(data_args, names: list[str]) -> list[float]:
    """--oks_sigmas when given (one per keypoint), else defaults by keypoint name."""
    from lora_shared.errors import UsageError

    if data_args.oks_sigmas:
        if len(data_args.oks_sigmas) != len(names):
            raise UsageError(
                f"oks_sigmas has {len(data_args.oks_sigmas)} values for {len(names)} keypoints ({names})"
            )
        return [float(s) for s in data_args.oks_sigmas]
    return default_sigmas(names)


def write_eval_outputs(out: Path, split, metrics, results, preds, schema, max_drawn: int, tag: str) -> None:
    """predictions_<tag>.json (COCO results) and a few skeleton PNGs (prediction, gt as white rings)."""
    import numpy as np
    from lora_shared.io import atomic_write_json

    atomic_write_json(out / f"predictions_{tag}.json", results)
    people = split.people
    for n, image_id in enumerate(sorted({a["image_id"] for a in people})[:max_drawn]):
        idx = [i for i, a in enumerate(people[: len(preds)]) if a["image_id"] == image_id]
        if not idx:
            continue
        gt = np.stack([np.asarray(people[i]["keypoints"], float).reshape(-1, 3) for i in idx])
        img = draw_skeleton(split.image(image_id), preds[idx], schema, gt=gt)
        save_png(img, out / f"skeletons_{tag}" / f"{n:03d}_image{image_id}.png")


def train(cfg) -> dict[str, float]:
    """Fine-tune `cfg.model` with LoRA on `cfg.data`; write adapter, metrics, curves and skeleton PNGs."""
    from transformers import Trainer

    # ---- 1. Setup: output dir (refuses a file, a read-only dir or a finished run: exit 2), seed, config
    args = cfg.train
    out = prepare_output_dir(args)
    seed_everything(args.seed)
    set_cpu_threads(args.cpu_threads)
    log_config(cfg.groups())

    # ---- 2. Data: COCO keypoints (or built-in figures), validated before any model is built
    train_split, eval_split = load_splits(cfg.data, seed=args.seed)
    schema = train_split.schema
    sigmas = resolve_sigmas(cfg.data, schema.names)

    # ---- 3. Model: base + LoRA on the backbone; a random (tiny) base is saved so predict can rebuild it
    model = build_model(cfg.model, cfg.lora, schema.num_keypoints, output_dir=out)
    save_run_config(cfg.groups()[:4], out)  # staged: published with the adapter
    logger.info("%s", trainable_report(model))
    base = model.get_base_model()
    train_st = crop_settings(cfg.model, cfg.data, base, schema.names, train=True)
    eval_st = crop_settings(cfg.model, cfg.data, base, schema.names, train=False)
    logger.info(
        "crops %dx%d -> heatmaps %dx%d, flip pairs: %s",
        train_st.height,
        train_st.width,
        train_st.heatmap_height,
        train_st.heatmap_width,
        [(schema.names[i], schema.names[j]) for i, j in enumerate(train_st.flip_perm) if i < j],
    )

    # ---- 4. Datasets: augmented person crops for training (seeded per person: exact --resume), plain for eval
    train_ds = PoseDataset(train_split, train_st, True, cfg.data.max_train_samples, seed=args.seed)
    eval_ds = PoseDataset(eval_split, eval_st, False, cfg.data.max_eval_samples)

    # ---- 5. Trainer: shared callbacks; heatmaps are decoded per batch so eval holds only coordinates
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collate_fn,
        compute_metrics=compute_metrics,
        preprocess_logits_for_metrics=partial(
            decode_for_metrics, method=cfg.model.decode, sigma=cfg.model.heatmap_sigma
        ),
        callbacks=[*default_callbacks(args), epoch_callback(train_ds.seeds)],
    )

    # ---- 6. Run: train (resuming if asked), score held-out people in image space, save adapter + reports
    result = trainer.train(resume_from_checkpoint=resolve_resume(args))
    state = full_state_dict(trainer)  # all ranks: a collective under FSDP / ZeRO-3
    if not trainer.is_world_process_zero():
        return {}
    info = {
        **schema.as_json(sigmas),
        "image_height": eval_st.height,
        "image_width": eval_st.width,
        "heatmap_height": eval_st.heatmap_height,
        "heatmap_width": eval_st.heatmap_width,
    }
    sizes = {"train people": len(train_ds), "eval people": len(eval_ds)}
    save_adapter(model, out, {KEYPOINTS_FILE: info}, state_dict=state, card={**CARD, "data_sizes": sizes})
    ev, results, preds = score_split(
        model,
        eval_split,
        eval_st,
        sigmas,
        cfg.model.decode,
        cfg.model.heatmap_sigma,
        cfg.data.max_eval_samples,
    )
    write_eval_outputs(out, eval_split, ev, results, preds, schema, 16, "val")
    metrics = {
        **result.metrics,
        **{f"eval_{k}": v for k, v in ev.items()},
        **trainable_report(model, out).as_dict(),
    }
    write_metrics(out, metrics)
    print_metrics("vision-pose train", metrics, out)
    return metrics


def evaluate(cfg) -> dict[str, float]:
    """Score a trained adapter on a split: PCK, pixel errors, OKS AP; eval_metrics.json + skeleton PNGs."""
    from lora_shared.errors import DataError
    from lora_shared.models import pick_device

    seed_everything(cfg.train.seed)
    set_cpu_threads(cfg.train.cpu_threads)
    model, schema, sigmas, settings = load_trained(cfg)
    model.to(pick_device())
    train_split, eval_split = load_splits(cfg.data, seed=cfg.train.seed)
    split = train_split if cfg.data.eval_split == "train" else eval_split
    if split.schema.names != schema.names:
        raise DataError(
            f"{split.where}: keypoints {split.schema.names} differ from the model's {schema.names}"
        )
    metrics, results, preds = score_split(
        model, split, settings, sigmas, cfg.model.decode, cfg.model.heatmap_sigma, cfg.data.max_eval_samples
    )
    out = Path(cfg.train.output_dir)
    tag = "train" if cfg.data.eval_split == "train" else "eval"
    write_eval_outputs(out, split, metrics, results, preds, schema, cfg.infer.max_drawn, tag)
    metrics = {f"eval_{k}": v for k, v in metrics.items()}
    write_metrics(out, metrics, name="eval_metrics.json")
    print_metrics("vision-pose eval", metrics, out)
    return metrics
