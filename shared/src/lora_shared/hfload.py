"""What a run dir needs next to the adapter for plain transformers/peft users: the processor or tokenizer
the run really used (its real input size, normalisation and max length), not the base's defaults."""

from __future__ import annotations

import os

from .runs import stage_dir


def stage_pretrained(obj, output_dir: str | os.PathLike) -> None:
    """Stage `obj.save_pretrained` files (image processor, tokenizer) in the run root, published with the adapter."""
    if int(os.environ.get("RANK", "0")) == 0:  # DDP ranks share the run dir: one writer
        stage = stage_dir(output_dir)
        stage.mkdir(parents=True, exist_ok=True)
        obj.save_pretrained(stage)
