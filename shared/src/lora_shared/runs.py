"""Run-level helpers every app's train/eval/predict/export uses: base models, resume, saving, loading."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from .errors import UsageError
from .io import atomic_dir, atomic_write_json, replace_files_from
from .models import build_config, from_pretrained

logger = logging.getLogger(__name__)

BASE_MODEL_DIR = "base_model"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def load_base_model(auto_cls, model_args, **kwargs):
    """Load pretrained weights, or build a random model from `model_type` + `config_overrides`.

    Args:
        auto_cls: e.g. `AutoModelForImageClassification`.
        model_args: the app's ModelArgs (model_name_or_path / model_type / config_overrides / ...).
        **kwargs: config kwargs (num_labels, id2label, ...) for both paths.

    Returns:
        The model (random init when `model_type` is set; seed first for reproducibility).
    """
    if model_args.model_type:
        config = build_config(model_args.model_type, model_args.config_overrides, **kwargs)
        return auto_cls.from_config(config)
    if not model_args.model_name_or_path:
        raise UsageError("set model_name_or_path (hub id, local dir, offline model name) or model_type")
    return from_pretrained(
        auto_cls,
        model_args.model_name_or_path,
        revision=model_args.revision,
        trust_remote_code=model_args.trust_remote_code,
        **kwargs,
    )


def save_random_base(model, output_dir: str | os.PathLike, model_args) -> None:
    """A model built from config has no checkpoint to reload, so its random base goes next to the adapter.

    Call it before LoRA wraps the model. Afterwards `model_args` points at the saved base, so the
    resolved config (and predict/eval) reload the same weights. Only done for `model_type` runs (tiny).
    """
    if not model_args.model_type:
        return
    target = Path(output_dir) / BASE_MODEL_DIR
    # Multi-process runs (DDP): every rank builds the same seeded base; one writer avoids two ranks
    # swapping the same directory at once. Only rank 0 reloads it (eval/predict after training).
    if int(os.environ.get("RANK", "0")) == 0:
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
    model_args.model_name_or_path = str(target.resolve())
    model_args.model_type = None
    model_args.config_overrides = None


def is_complete_checkpoint(path: Path) -> bool:
    """Trainer writes trainer_state.json after the weights and optimizer, so its presence marks a full save.

    The JSON must parse and the weights' safetensors header must cover the file: a kill during either
    write leaves a checkpoint we must not resume from.
    """
    state = path / "trainer_state.json"
    weights = [path / n for n in ("adapter_model.safetensors", "model.safetensors") if (path / n).is_file()]
    if not state.is_file() or not weights:
        return False
    try:
        json.loads(state.read_text(encoding="utf-8"))
        check_safetensors(weights[0])
    except (ValueError, OSError, UsageError):
        return False
    return True


def last_complete_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """Newest `checkpoint-N` under output_dir that finished saving (half-written ones are skipped)."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    ckpts = sorted(
        ((int(m.group(1)), p) for p in root.iterdir() if (m := _CKPT.match(p.name)) and p.is_dir()),
        reverse=True,
    )
    for _step, path in ckpts:
        if is_complete_checkpoint(path):
            return path
        logger.warning("ignoring incomplete checkpoint %s (killed mid-save?)", path)
    return None


def remove_incomplete_checkpoints(output_dir: str | os.PathLike, after_step: int = -1) -> list[Path]:
    """Delete `checkpoint-N` dirs (N > after_step) that never finished saving; returns what was removed.

    A resumed run saves into `checkpoint-N` again when it reaches step N; stale files from the killed
    save must not end up mixed into that new checkpoint.
    """
    import shutil

    root = Path(output_dir)
    removed = []
    if not root.is_dir():
        return removed
    for p in root.iterdir():
        m = _CKPT.match(p.name)
        if m and p.is_dir() and int(m.group(1)) > after_step and not is_complete_checkpoint(p):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def resolve_resume(train_args) -> str | None:
    """The checkpoint to resume from: `--resume` / `--resume_from_checkpoint auto` -> newest complete one."""
    value = getattr(train_args, "resume_from_checkpoint", None)
    if getattr(train_args, "resume", False) or (isinstance(value, str) and value.lower() == "auto"):
        ckpt = last_complete_checkpoint(train_args.output_dir)
        if ckpt is None:
            logger.info("no complete checkpoint in %s; starting from scratch", train_args.output_dir)
            return None
        step = int(_CKPT.match(ckpt.name).group(1))
        for p in remove_incomplete_checkpoints(train_args.output_dir, after_step=step):
            logger.warning("removed incomplete checkpoint %s", p)
        logger.info("resuming from %s", ckpt)
        return str(ckpt)
    if value:
        if not Path(value).is_dir():
            raise UsageError(f"resume_from_checkpoint: {value} is not a directory")
        return value
    return None


def full_state_dict(trainer) -> dict | None:
    """Call on EVERY rank after training; pass the result to `save_adapter` on rank 0.

    Under FSDP and DeepSpeed ZeRO-3 each rank holds only a shard of every parameter, and gathering the full
    tensors is a collective (a rank-0-only save would hang or write shards). Returns the gathered state
    dict there, None where each rank already holds the whole model (one process, DDP, ZeRO-1/2).
    """
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    zero3 = getattr(trainer, "is_deepspeed_enabled", False) and getattr(plugin, "zero_stage", 0) == 3
    if getattr(trainer, "is_fsdp_enabled", False) or zero3:
        return trainer.accelerator.get_state_dict(trainer.model)
    return None


def save_adapter(
    model,
    output_dir: str | os.PathLike,
    extra_json: dict[str, Any] | None = None,
    state_dict: dict | None = None,
) -> Path:
    """Save the adapter (safetensors) + extra JSON files into output_dir; each file lands atomically.

    `state_dict`: the gathered weights from `full_state_dict` (sharded training); peft keeps the adapter's.
    """
    import shutil
    import tempfile

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".adapter.*.tmp"):  # left by a save that was killed (SIGKILL skips `finally`)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".adapter.", suffix=".tmp", dir=out))
    try:
        kw = {"state_dict": state_dict} if state_dict is not None else {}
        model.save_pretrained(tmp, safe_serialization=True, **kw)
        for name, obj in (extra_json or {}).items():
            atomic_write_json(tmp / name, obj)
        replace_files_from(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "adapter_model.safetensors"


def load_adapter(base_model, adapter_dir: str | os.PathLike, is_trainable: bool = False):
    """Load a saved adapter onto `base_model`, failing clearly if it was trained on another base.

    peft only warns about adapter keys the base lacks; we make that (and shape mismatches) an error,
    because predictions from a half-applied adapter are silently wrong.
    """
    from peft import PeftConfig, PeftModel

    from .cli import find_adapter_dir

    path = check_adapter_dir(find_adapter_dir(adapter_dir))
    config = PeftConfig.from_pretrained(str(path))
    try:
        model = PeftModel.from_pretrained(base_model, str(path), config=config, is_trainable=is_trainable)
    except (RuntimeError, ValueError, KeyError) as e:
        raise UsageError(
            f"{path}: adapter does not fit this base model ({str(e).splitlines()[0][:200]}); "
            "was it trained on another model?"
        ) from None
    _check_all_adapter_weights_loaded(model, path)
    if not is_trainable:
        model.eval()
    return model


def check_adapter_dir(path: str | os.PathLike) -> Path:
    """Fail with a UsageError naming the file if the adapter config or weights in `path` are unreadable.

    Call it before `PeftModel.from_pretrained`, whose errors for a cut-short file (a kill mid-copy, a
    half-synced disk) are a traceback or a misleading "wrong base model".
    """
    from peft import PeftConfig

    path = Path(path)
    try:
        PeftConfig.from_pretrained(str(path))
    except (ValueError, TypeError, KeyError, OSError) as e:  # JSONDecodeError is a ValueError
        raise UsageError(
            f"{path / 'adapter_config.json'}: not a readable adapter config ({str(e).splitlines()[0][:160]}); "
            "the save was interrupted or the file was edited: retrain or restore it"
        ) from None
    check_safetensors(path / "adapter_model.safetensors")
    return path


def check_safetensors(path: str | os.PathLike) -> None:
    """Fail with a UsageError naming `path` when it is not a complete safetensors file (e.g. cut by a kill)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        raise UsageError(
            f"{path}: not a complete safetensors file ({str(e).splitlines()[0][:160]}); "
            "it was cut short (killed mid-copy?): retrain or restore it"
        ) from None


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def load_pickle_state_dict(path: str | os.PathLike, allow_pickle: bool = False) -> dict:
    """Tensors of a PyTorch pickle file (`*.bin`/`*.pt`), only when the caller opted in.

    Pickle files can run code when loaded, so we refuse them unless `allow_pickle` is set, and even
    then load with `torch.load(weights_only=True)`, which unpickles tensors and plain containers only.
    """
    import pickle

    import torch

    path = Path(path)
    if not allow_pickle:
        raise UsageError(
            f"{path}: a pickle file (can run code when loaded); loraworks reads safetensors only. "
            "If you trust it, convert it once with --allow_pickle (loaded with weights_only=True)"
        )
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UsageError(
            f"{path}: refused: the pickle holds more than tensors ({str(e).splitlines()[0][:160]})"
        ) from None
    except (OSError, RuntimeError, EOFError) as e:
        raise UsageError(f"{path}: not a readable PyTorch file ({str(e).splitlines()[0][:160]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{path}: expected a dict of tensors (a state dict), got {type(state).__name__}")
    return state


def convert_pickle_weights(path: str | os.PathLike, allow_pickle: bool = False) -> Path:
    """Convert `adapter_model.bin` (or any state-dict pickle) to a safetensors file next to it, atomically."""
    from safetensors.torch import save

    path = Path(path)
    state = load_pickle_state_dict(path, allow_pickle=allow_pickle)
    target = path.with_suffix(".safetensors")
    # Tied / shared tensors must be separate buffers for safetensors.
    data = save({k: v.contiguous().clone() for k, v in state.items()}, metadata={"format": "pt"})
    from .io import atomic_write_bytes

    atomic_write_bytes(target, data)
    logger.info("converted %s -> %s", path, target)
    return target


def find_pickle_files(root: str | os.PathLike) -> list[Path]:
    """Every pickle-format weights file under `root` (for tests and audits: runs must write none)."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix in PICKLE_SUFFIXES)


def _check_all_adapter_weights_loaded(model, path: Path) -> None:
    """The saved tensor names must equal the names this model would save (same format, so a set compare)."""
    from peft import get_peft_model_state_dict
    from safetensors import safe_open

    with safe_open(str(path / "adapter_model.safetensors"), framework="pt") as f:
        saved = set(f.keys())
    expected = set(get_peft_model_state_dict(model).keys())
    unexpected, missing = sorted(saved - expected), sorted(expected - saved)
    if unexpected or missing:
        example = (unexpected or missing)[0]
        raise UsageError(
            f"{path}: adapter does not match this base model ({len(unexpected)} saved tensors have "
            f"no place in it, {len(missing)} expected are absent; e.g. {example}); "
            "was it trained on another model?"
        )


def export_merged(
    model, export_dir: str | os.PathLike, processor=None, extra_json: dict | None = None
) -> Path:
    """Merge the adapter into the base (`merge_and_unload`) and save a standalone safetensors model dir."""
    merged = model.merge_and_unload()
    with atomic_dir(export_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        if processor is not None:
            processor.save_pretrained(tmp)
        for name, obj in (extra_json or {}).items():
            atomic_write_json(tmp / name, obj)
    logger.info("merged model written to %s", export_dir)
    return Path(export_dir)


def write_metrics(output_dir: str | os.PathLike, metrics: dict[str, Any], name: str = "metrics.json") -> Path:
    """Merge `metrics` into `<output_dir>/<name>` (atomically) and return the path."""
    path = Path(output_dir) / name
    old = json.loads(path.read_text()) if path.is_file() else {}
    old.update(metrics)
    atomic_write_json(path, old)
    return path


def main(argv: list[str] | None = None) -> int:
    """`python -m lora_shared.runs convert-pickle FILE.bin --allow_pickle`: one-off pickle -> safetensors."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m lora_shared.runs")
    sub = parser.add_subparsers(dest="cmd", required=True)
    conv = sub.add_parser("convert-pickle", help="write FILE.safetensors next to a state-dict pickle")
    conv.add_argument("file")
    conv.add_argument(
        "--allow_pickle", action="store_true", help="I trust this file (it is still loaded weights_only)."
    )
    args = parser.parse_args(argv)
    try:
        print(convert_pickle_weights(args.file, allow_pickle=args.allow_pickle))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
