"""Train a chat adapter: LoRA SFT with the loss on assistant tokens only (eval/compare: llm_chat/evaluate.py).

uv run llm-chat train --config tiny --output_dir /tmp/t
"""

from __future__ import annotations

import logging
from functools import partial

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
    stage_dir,
    write_metrics,
)
from lora_shared.seed import seed_everything

from .card import CARD
from .data import collate_fn, load_splits, tokenize_dialogs
from .metrics import perplexity
from .model import build_model, build_tokenizer, keeps_logits_mask, packing_is_exact, save_tokenizer
from .varlen import use_varlen

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
    # varlen: attention per dialog (sdpa_varlen or flash kernels) over one unpadded row; else masked rows
    packing = bool(args.packing)
    varlen = packing and use_varlen(model)
    if packing and not packing_is_exact(model, len(tokenizer), varlen):
        logger.warning("packing: this model's attention mixes packed dialogs; training with padding instead")
        packing = varlen = False
    batching = (
        "padded" if not packing else "packed, attention per dialog" if varlen else "packed rows (masked)"
    )
    logger.info("batching: %s (attention: %s)", batching, model.config._attn_implementation)
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
            varlen=varlen,
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
        metrics["eval_perplexity"] = perplexity(ev["eval_loss"])
    if not trainer.is_world_process_zero():
        return {}
    save_tokenizer(tokenizer, stage_dir(out))  # staged: lands with the adapter, never beside an old one
    sizes = {"train dialogs": len(train_ds), "eval dialogs": len(eval_ds) if eval_ds else 0}
    save_adapter(model, out, state_dict=state, card={**CARD, "data_sizes": sizes})
    metrics.update(trainable_report(model, out).as_dict())
    metrics.update(
        train_dialogs=len(train_ds), eval_dialogs=len(eval_ds) if eval_ds else 0, packing=int(packing)
    )
    write_metrics(out, metrics)
    print_metrics("llm-chat train", metrics, out)
    return metrics
