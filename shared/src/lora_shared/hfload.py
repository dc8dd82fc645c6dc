"""What a run dir needs next to the adapter for plain transformers/peft users: the processor or tokenizer
the run really used (its real input size, normalisation and max length), not the base's defaults."""

from __future__ import annotations

import os
from pathlib import Path

from .runs import stage_dir


def stage_pretrained(obj, output_dir: str | os.PathLike) -> None:
    """Stage `obj.save_pretrained` files (image processor, tokenizer) in the run root, published with the adapter."""
    if int(os.environ.get("RANK", "0")) == 0:  # DDP ranks share the run dir: one writer
        stage = stage_dir(output_dir)
        stage.mkdir(parents=True, exist_ok=True)
        obj.save_pretrained(stage)


def name_published_base(model, model_args, output_dir: str | os.PathLike) -> None:
    """Point `model.name_or_path` at where a tiny run's random base lies once the run is published.

    peft copies it into adapter_config.json (`base_model_name_or_path`), which
    `AutoPeftModel*.from_pretrained(run)` loads. `save_random_base` saved the base into the stage, which is
    renamed away at publish, so the path names `<run>/base_model` instead; absolute, because a relative
    path would be read against the caller's cwd, not the run dir. Pretrained bases keep their own name.
    """
    name = str(model_args.model_name_or_path or "")
    staged = str(stage_dir(output_dir).resolve())
    if name == staged or name.startswith(staged + os.sep):
        model.name_or_path = str(Path(output_dir).resolve()) + name[len(staged) :]
