"""Run-level helpers every app's train/eval/predict/export uses: base models, resume, saving, loading."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import UsageError
from .io import atomic_dir, atomic_write_json, fsync_dir, replace_files_from
from .models import build_config, from_pretrained

logger = logging.getLogger(__name__)

BASE_MODEL_DIR = "base_model"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_CKPT = re.compile(r"^checkpoint-(\d+)$")

# What a run writes before its adapter (random base, tokenizer, resolved config) waits here, hidden in the
# run dir, and `save_adapter` publishes it together with the adapter: a run killed at any moment never
# leaves the previous run's adapter next to a new base or config.
STAGE_DIR = ".staged"
_REPLACED = "replaced"  # in the stage: the old run's files moved aside, deleted once the new run is published
_REPLACING = "replacing"  # in the stage: this run replaces an earlier one (its logs start in the stage)
FINISHED_RUN_FILES = (ADAPTER_WEIGHTS, "metrics.json")  # written only by a train() that got to the end
_MERGED_METRICS = ("metrics.json", "eval_metrics.json")  # write_metrics merges into these: old keys must go
EXPORT_MANIFEST = "loraworks_export.json"  # marks a dir written by export: the only kind export replaces
LABELS_FILE = "labels.json"  # {"labels": [class names in id order]}, next to a classifier/detector adapter


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


def save_random_base(model, output_dir: str | os.PathLike, model_args, processor=None) -> None:
    """A model built from config has no checkpoint to reload, so its random base goes next to the adapter.

    Call it before LoRA wraps the model. It is staged (`stage_dir`) and published with the adapter, so a
    killed run never puts a new random base under an old adapter. Afterwards `model_args` points at the
    staged base, which the resolved config records as `<output_dir>/base_model` (`save_run_config`).
    `processor` (e.g. the tokenizer) is saved into the same dir. Only done for `model_type` runs (tiny).
    """
    if not model_args.model_type:
        return
    target = stage_dir(output_dir) / BASE_MODEL_DIR
    # Multi-process runs (DDP): every rank builds the same seeded base; one writer avoids two ranks
    # swapping the same directory at once. Only rank 0 reloads it (eval/predict after training).
    if _rank() == 0:
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            if processor is not None:
                processor.save_pretrained(tmp)
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


# ---------------------------------------------------------------------------------------------- output dirs
def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def stage_dir(output_dir: str | os.PathLike) -> Path:
    """Where a run stages what it writes before its adapter; `save_adapter` publishes it (see STAGE_DIR)."""
    return Path(output_dir) / STAGE_DIR


def run_file(output_dir: str | os.PathLike, name: str) -> Path:
    """Where a file a run writes while training (metrics.jsonl, curves.png) goes now.

    A run that replaces an earlier one (--overwrite_output_dir, or a fresh start after a killed run) logs
    into the stage: the old run keeps its own logs until the new adapter is published, and the new log
    starts empty. Any other run (the first, or --resume) writes into output_dir as always.
    """
    stage = stage_dir(output_dir)
    return stage / name if (stage / _REPLACING).is_file() else Path(output_dir) / name


def finished_run_file(output_dir: str | os.PathLike) -> str | None:
    """The name of the file that shows `output_dir` holds a finished run of ours, or None."""
    out = Path(output_dir)
    return next((n for n in FINISHED_RUN_FILES if (out / n).is_file()), None)


def _checkpoints(output_dir: Path) -> list[Path]:
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := _CKPT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def _check_writable(out: Path) -> None:
    """Create (if needed) and write-probe `out`: a real write, since permission bits lie for root and ACLs."""
    import tempfile

    if out.exists() and not out.is_dir():
        raise UsageError(f"--output_dir {out}: is a file, not a directory; pass a directory path")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        what = "cannot create it" if not out.is_dir() else "not writable"
        raise UsageError(
            f"--output_dir {out}: {what} ({e.strerror or e}); pass a directory you can write to"
        ) from None


def prepare_output_dir(args) -> Path:
    """Check `args.output_dir` and get it ready for a training run; call it first in every app's train().

    Refuses with a UsageError (exit 2, before any model is built): a path that is a file or cannot be
    written, and a dir holding a finished run (adapter weights / metrics.json) or the checkpoints of an
    unfinished one, unless `--overwrite_output_dir` (start over) or `--resume` (continue) is given.
    Even then the old run stays whole until the new adapter is saved: its base, tokenizer and resolved
    config are staged (`stage_dir`) and published by `save_adapter`; when replacing a run, the logs
    start fresh in the stage and the old checkpoints move into it (neither Trainer's checkpoint rotation
    nor a later `--resume` may pick them up as the new run's).

    Returns:
        The output dir (created if needed).
    """
    out = Path(args.output_dir).expanduser()
    resume = bool(getattr(args, "resume", False) or getattr(args, "resume_from_checkpoint", None))
    overwrite = bool(getattr(args, "overwrite_output_dir", False))
    finished = finished_run_file(out) if out.is_dir() else None
    ckpts = _checkpoints(out)
    if not (resume or overwrite):
        if finished:
            raise UsageError(
                f"--output_dir {out}: holds a finished run ({finished}); pass --overwrite_output_dir to "
                "replace it (kept until the new adapter is saved), --resume to continue it, or a new --output_dir"
            )
        if ckpts:
            raise UsageError(
                f"--output_dir {out}: holds checkpoints of an unfinished run ({ckpts[-1].name}); pass --resume "
                "to continue it, --overwrite_output_dir to start over, or a new --output_dir"
            )
    _check_writable(out)
    if _rank() != 0:  # one process owns the run dir's files (DDP ranks share it)
        return out
    stage = stage_dir(out)
    if not resume:  # what a killed earlier run staged is not this run's
        shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(exist_ok=True)
    # Anything of an earlier run here (a killed one too): this run replaces it when its adapter is saved.
    if not resume and (finished or ckpts or (out / "metrics.jsonl").is_file()):
        replaced = stage / _REPLACED
        replaced.mkdir(exist_ok=True)
        for ckpt in ckpts:
            os.replace(ckpt, replaced / ckpt.name)
        (stage / _REPLACING).touch()
        logger.warning("replacing the earlier run in %s once the new adapter is saved", out)
    return out


def save_run_config(configs, output_dir: str | os.PathLike) -> Path:
    """Stage resolved_config.yaml (published with the adapter); paths into the stage are written as published.

    `save_random_base` and the apps point model args at staged files while training; the saved config
    must name where those files will be after the run (e.g. `<output_dir>/base_model`).
    """
    from .config import RESOLVED_CONFIG, save_resolved_config

    stage = stage_dir(output_dir)
    if _rank() != 0:
        return stage / RESOLVED_CONFIG
    staged, final = str(stage.resolve()), str(Path(output_dir).resolve())
    swapped = []
    for obj in configs:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name, None)
            if isinstance(value, str) and (value == staged or value.startswith(staged + os.sep)):
                swapped.append((obj, f.name, value))
                setattr(obj, f.name, final + value[len(staged) :])
            elif f.name == "overwrite_output_dir" and value:  # a re-run with this file must not replace runs
                swapped.append((obj, f.name, value))
                setattr(obj, f.name, False)
    try:
        return save_resolved_config(configs, stage)
    finally:
        for obj, name, value in swapped:
            setattr(obj, name, value)


def _publish_staged(out: Path) -> None:
    """Move the staged files into the run dir; the caller then moves in the adapter, weights last.

    The old adapter weights go first, so until the new ones land the dir reads as an interrupted save
    (predict refuses it) and never as the old adapter on a new base or config.
    """
    stage = stage_dir(out)
    if not stage.is_dir():
        return
    replaced = stage / _REPLACED
    replaced.mkdir(exist_ok=True)
    if (out / ADAPTER_WEIGHTS).is_file():
        os.replace(out / ADAPTER_WEIGHTS, replaced / ADAPTER_WEIGHTS)
    if (stage / _REPLACING).is_file():
        for name in _MERGED_METRICS:
            if (out / name).is_file():
                os.replace(out / name, replaced / name)
    for entry in sorted(stage.iterdir()):
        if entry.name in (_REPLACED, _REPLACING) or entry.name.startswith("."):  # temp dirs of killed saves
            continue
        dest = out / entry.name
        if dest.is_dir() or (entry.is_dir() and dest.exists()):  # os.replace cannot swap onto a dir
            shutil.rmtree(replaced / entry.name, ignore_errors=True)
            os.replace(dest, replaced / entry.name)
        os.replace(entry, dest)
    fsync_dir(out)


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
    card: dict | None = None,
) -> Path:
    """Save the adapter (safetensors) + extra JSON files into output_dir; each file lands atomically.

    What the run staged (`prepare_output_dir`: base, tokenizer, resolved config, logs) is published
    first, the adapter weights last. `state_dict`: the gathered weights from `full_state_dict`
    (sharded training); peft keeps the adapter's. `card`: the app's task bits (`lora_shared.cards.TaskCard`)
    for the model card that replaces peft's template README.md (`write_metrics` adds the metrics later).
    """
    import tempfile

    from .cards import TASK_FILE, write_card

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
        if card is not None:
            atomic_write_json(tmp / TASK_FILE, card)
        _publish_staged(out)
        # After peft's save (its template README.md names the base by local path) and once the staged
        # resolved config is in place; the card moves in with the adapter. Metrics come with write_metrics.
        write_card(out, tmp, task=card, adapter_dir=tmp, with_metrics=False)
        replace_files_from(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(stage_dir(out), ignore_errors=True)  # the old run's replaced files go with it
    return out / ADAPTER_WEIGHTS


def load_adapter(base_model, adapter_dir: str | os.PathLike, is_trainable: bool = False):
    """Load a saved adapter onto `base_model`, failing clearly if it was trained on another base.

    peft only warns about adapter keys the base lacks; we make that (and shape mismatches) an error,
    because predictions from a half-applied adapter are silently wrong.
    """
    from peft import PeftConfig, PeftModel

    from .peft import declare_no_input_embeddings

    path = check_adapter_dir(find_adapter_dir(adapter_dir))
    config = PeftConfig.from_pretrained(str(path))
    declare_no_input_embeddings(base_model)
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


def find_adapter_dir(path: str | os.PathLike) -> Path:
    """The directory holding adapter_config.json: the given run dir itself, or its `adapter/` child."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"adapter directory not found: {p}")
    for cand in (p, p / "adapter"):
        if (cand / "adapter_config.json").is_file():
            if not (cand / "adapter_model.safetensors").is_file():
                raise UsageError(
                    f"{cand}: adapter_config.json but no adapter_model.safetensors "
                    "(incomplete or interrupted save); retrain or pick a complete checkpoint"
                )
            return cand
    raise UsageError(f"{p}: no adapter_config.json here; pass the output_dir of a finished `train` run")


def read_labels(adapter_dir: str | os.PathLike, app: str) -> list[str]:
    """The class names (in id order) that `train` saved next to the adapter as LABELS_FILE.

    Args:
        adapter_dir: a run directory or its adapter directory.
        app: the app whose runs hold the file, named in the error for a directory without it.
    """
    path = find_adapter_dir(adapter_dir) / LABELS_FILE
    if not path.is_file():
        raise UsageError(f"{path} missing: not a {app} run directory")
    return json.loads(path.read_text(encoding="utf-8"))["labels"]


def check_adapter_dir(path: str | os.PathLike) -> Path:
    """Fail with a UsageError naming the file if the adapter config or weights in `path` are unreadable.

    Call it before `PeftModel.from_pretrained`, whose errors for a cut-short file (a kill mid-copy, a
    half-synced disk) are a traceback or a misleading "wrong base model". A hand-edited config with a
    wrongly typed key (`"lora_alpha": "big"`) would fail deep inside peft, so the keys peft computes with
    are checked first, naming the key, the bad value and a valid one.
    """
    import math

    from peft import PeftConfig

    path = Path(path)
    config_file = path / "adapter_config.json"
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        raw = None  # unreadable or not JSON: PeftConfig below reports it
    if raw is not None and not isinstance(raw, dict):
        raise UsageError(
            f"{config_file}: expected a JSON object of LoRA settings, got {type(raw).__name__}; "
            "restore it from the run that trained the adapter"
        )

    def num(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def names(v) -> bool:
        return isinstance(v, list) and all(isinstance(x, str) for x in v)

    # key -> (valid?, what is valid, a valid example); keys absent from the file take peft's defaults.
    rules = {
        "r": (lambda v: num(v) and isinstance(v, int) and v >= 1, "an integer >= 1", 16),
        "lora_alpha": (lambda v: num(v) and v > 0, "a number > 0", 32),
        "lora_dropout": (lambda v: num(v) and 0 <= v < 1, "a number in [0, 1)", 0.1),
        "target_modules": (
            lambda v: v is None or isinstance(v, str) or names(v),
            "a list of module names",
            ["q_proj", "v_proj"],
        ),
        "modules_to_save": (
            lambda v: v is None or names(v),
            "null or a list of module names",
            ["classifier"],
        ),
        "bias": (lambda v: v in ("none", "all", "lora_only"), "one of none, all, lora_only", "none"),
        "rank_pattern": (
            lambda v: isinstance(v, dict) and all(num(x) for x in v.values()),
            "an object of name: rank",
            {},
        ),
        "alpha_pattern": (
            lambda v: isinstance(v, dict) and all(num(x) for x in v.values()),
            "an object of name: alpha",
            {},
        ),
        "use_dora": (lambda v: isinstance(v, bool), "true or false", False),
        "use_rslora": (lambda v: isinstance(v, bool), "true or false", False),
        "fan_in_fan_out": (lambda v: isinstance(v, bool), "true or false", False),
        "peft_type": (lambda v: isinstance(v, str), "a string", "LORA"),
        "task_type": (lambda v: v is None or isinstance(v, str), "null or a task name", None),
        "base_model_name_or_path": (lambda v: v is None or isinstance(v, str), "null or a path", None),
    }
    for key, (ok, want, example) in rules.items():
        if isinstance(raw, dict) and key in raw and not ok(raw[key]):
            raise UsageError(
                f"{config_file}: {key} is {json.dumps(raw[key])}, expected {want} (e.g. {json.dumps(example)}); "
                "fix that key, or restore the file from the run that trained the adapter"
            )
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
    from .models import convert_shard_index, safetensors_target

    target = safetensors_target(path)  # pytorch_model.bin -> model.safetensors, the name transformers loads
    # Tied / shared tensors must be separate buffers for safetensors.
    data = save({k: v.contiguous().clone() for k, v in state.items()}, metadata={"format": "pt"})
    from .io import atomic_write_bytes

    atomic_write_bytes(target, data)
    convert_shard_index(path)
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


def _foreign_files(target: Path) -> list[str]:
    """Entries of `target` that a previous export of ours did not write (all of them if it is not one)."""
    entries = sorted(p.name for p in target.iterdir())
    try:
        manifest = json.loads((target / EXPORT_MANIFEST).read_text(encoding="utf-8"))
        ours = set(manifest["files"]) | {EXPORT_MANIFEST}
    except (OSError, ValueError, KeyError, TypeError):
        return entries
    return sorted(
        p.relative_to(target).as_posix()
        for p in target.rglob("*")
        if not p.is_dir() and p.relative_to(target).as_posix() not in ours
    )


def check_export_dir(export_dir: str | os.PathLike, run_dir: str | os.PathLike | None = None) -> Path:
    """Refuse (UsageError) an export target whose files export would delete; call it before loading the model.

    Fine: a missing or empty dir, or a previous export of ours (its manifest lists every file in it).
    Refused: a file, any other non-empty dir, and the run dir `run_dir` itself or one of its parents.
    """
    target = Path(export_dir).expanduser()
    if run_dir is not None:
        run, where = Path(run_dir).expanduser().resolve(), target.resolve()
        if where == run or where in run.parents:
            what = "the run directory" if where == run else f"a parent of the run directory {run}"
            raise UsageError(
                f"--export_dir {target}: is {what}; exporting there would delete the run's files: "
                f"pass a new or empty directory (default: {run / 'merged'})"
            )
    if not target.exists():
        return target
    if not target.is_dir():
        raise UsageError(f"--export_dir {target}: is a file, not a directory; pass a new or empty directory")
    foreign = _foreign_files(target)
    if foreign:
        raise UsageError(
            f"--export_dir {target}: holds files that are not a previous export ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}) and export replaces the whole dir: pass a new or empty "
            "directory, or move those files away yourself"
        )
    return target


def export_target(export_dir: str | None, adapter_dir: str | None) -> Path:
    """The dir `export` writes (--export_dir, default `<adapter_dir>/merged`), checked before any model loads."""
    if not adapter_dir:
        raise UsageError("pass --adapter_dir (the output_dir of a finished `train` run)")
    return check_export_dir(export_dir or Path(adapter_dir).expanduser() / "merged", adapter_dir)


@contextlib.contextmanager
def export_writer(export_dir: str | os.PathLike, run_dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield a temp dir that replaces `export_dir` in one rename once the block ends, marked as an export.

    The target is checked (`check_export_dir`) before and again just before the swap: a merge can take
    minutes, and a file written there meanwhile must not be deleted. The manifest lists every file, so a
    later export knows this dir holds nothing else.
    """
    target = check_export_dir(export_dir, run_dir)
    with atomic_dir(target) as tmp:
        yield tmp
        if run_dir is not None and (Path(run_dir) / "adapter_config.json").is_file():
            from .cards import write_card

            write_card(run_dir, tmp, merged=True)  # replaces any template README the save wrote
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        atomic_write_json(tmp / EXPORT_MANIFEST, {"written_by": "loraworks export", "files": files})
        check_export_dir(target, run_dir)


def export_merged(
    model,
    export_dir: str | os.PathLike,
    processor=None,
    extra_json: dict | None = None,
    run_dir: str | os.PathLike | None = None,
) -> Path:
    """Merge the adapter into the base (`merge_and_unload`) and save a standalone safetensors model dir.

    Replaces `export_dir` only when it is missing, empty or a previous export (`check_export_dir`; with
    `run_dir`, the adapter's run dir, never that dir or a parent of it).
    """
    check_export_dir(export_dir, run_dir)
    merged = model.merge_and_unload()
    with export_writer(export_dir, run_dir) as tmp:
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
    if name == "metrics.json" and (path.parent / "adapter_config.json").is_file():
        from .cards import write_card

        write_card(path.parent)  # the run's card gets its final metrics
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
