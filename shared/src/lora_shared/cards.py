"""Model cards (README.md) for run dirs and exports, in the form the Hugging Face hub accepts.

peft's `save_pretrained` writes an empty template whose `base_model` is the local path the base was loaded
from. We replace it with a card built from what the run left on disk (resolved_config.yaml, adapter_config.json,
metrics.json) plus the app's task bits: a small dict (`TaskCard` keys below) each app declares once.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, TypedDict

import yaml

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
TASK_FILE = "loraworks_card.json"  # the app's task bits, kept in the run so `export` can write its card too


class TaskCard(TypedDict, total=False):
    """What an app tells the card; `{RUN}` / `{BASE}` in the snippets become the run dir and the base model
    (upper case, so a snippet's own f-strings such as f"{run}/labels.json" are left alone)."""

    app: str  # the app's command name, e.g. "vision-cls" (a tag)
    pipeline_tag: str  # the hub's task id, e.g. "image-classification"
    task: str  # one line: what the model does
    usage: str  # Python with plain transformers/peft loading the adapter run dir
    usage_merged: str  # Python with plain transformers loading the `export` dir
    data_sizes: dict[str, int]  # e.g. {"train": 120, "eval": 30}, known only to the app's train()


# Offline models (`make models`) -> (hub id they were built from, licence id). The hub rejects a card whose
# `base_model` is not a hub id, so a known origin is named there; the offline name stays in the text.
OFFLINE_ORIGINS: dict[str, tuple[str | None, str | None]] = {
    "smollm2-135m-instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
    "gemma-3-270m": ("google/gemma-3-270m", "gemma"),
    "all-minilm-l6-v2": ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0"),
    "qwen2.5-coder-0.5b-instruct": ("Qwen/Qwen2.5-Coder-0.5B-Instruct", "apache-2.0"),
    "qwen2.5-coder-1.5b-instruct": ("Qwen/Qwen2.5-Coder-1.5B-Instruct", "apache-2.0"),
    "mobilenet_v2-imagenet": (None, None),  # torchvision weights: no hub repo, research-only terms
}

_DATA_KEYS = (
    "dataset",
    "dataset_config",
    "data_dir",
    "data_files",
    "eval_dataset",
    "val_fraction",
    "max_train_samples",
    "max_eval_samples",
)
_TRAIN_KEYS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_ratio",
    "warmup_steps",
    "weight_decay",
    "optim",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "seed",
)


def _public(value: Any, run_dir: Path) -> Any:
    """A value fit for a card: paths inside the run become relative, other local paths their basename."""
    if isinstance(value, list):
        return [_public(v, run_dir) for v in value]
    if not isinstance(value, str) or not value.startswith(("/", "~", "./", "../")):
        return value
    path = Path(value).expanduser()
    try:
        return path.resolve().relative_to(run_dir.resolve()).as_posix() + "/"
    except ValueError:
        return path.name


def _read(path: Path, loader) -> dict:
    try:
        data = loader(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _training_defaults() -> dict[str, Any]:
    """transformers' TrainingArguments defaults: resolved_config.yaml leaves out values equal to them."""
    import dataclasses

    try:
        from transformers import TrainingArguments
    except ImportError:  # pragma: no cover
        return {}
    return {
        f.name: f.default
        for f in dataclasses.fields(TrainingArguments)
        if f.default is not dataclasses.MISSING
    }


def describe_base(config: dict, run_dir: Path) -> tuple[str | None, str, str | None]:
    """(hub id for `base_model` or None, how the text names the base, licence id or None)."""
    name = config.get("model_name_or_path")
    if not isinstance(name, str) or not name:
        return None, "unknown", None
    path = Path(name).expanduser()
    if path.is_absolute() or name.startswith(("~", ".")):
        public = _public(name, run_dir)
        model_type = _read(path / "config.json", json.loads).get("model_type", "")
        if isinstance(public, str) and public.endswith("/"):  # inside the run: a base built from a config
            backbone = config.get("backbone")
            if isinstance(backbone, str) and backbone not in ("", "resnet", "mobilenet_v2"):
                # offline det/pose: a new head (and transformer) on a pretrained backbone
                return (
                    None,
                    f"a new `{model_type or 'model'}` on the pretrained `{backbone}` backbone, saved in `{public}`",
                    None,
                )
            return (
                None,
                f"a randomly initialised `{model_type or 'model'}` saved in `{public}` (a smoke test)",
                None,
            )
        return None, f"a local model dir `{public}`" + (f" (`{model_type}`)" if model_type else ""), None
    if name in OFFLINE_ORIGINS:
        hub_id, licence = OFFLINE_ORIGINS[name]
        origin = f", built offline from `{hub_id}`" if hub_id else ""
        return hub_id or name, f"`{name}` (loraworks offline model{origin}; see `make models`)", licence
    return name, f"[`{name}`](https://huggingface.co/{name})", None


def _base_ref(hub_id: str | None, config: dict, run: Path, where: str) -> str:
    """What a snippet passes to from_pretrained for the base: its hub id, else where it lies."""
    if hub_id and hub_id not in OFFLINE_ORIGINS:
        return hub_id
    public = _public(config.get("model_name_or_path") or "", run)
    if isinstance(public, str) and public.endswith("/"):  # saved inside the run
        return f"{where}/{public.rstrip('/')}"
    return f"path/to/{public or 'base_model'}"


def _precision(config: dict) -> str:
    if config.get("bf16"):
        return "bf16 mixed precision"
    if config.get("fp16"):
        return "fp16 mixed precision"
    return "fp32"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = sorted(value)  # peft saves target_modules from a set: keep the card stable across runs
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _table(rows: list[tuple[str, Any]], head: str = "setting") -> list[str]:
    lines = [f"| {head} | value |", "|---|---|"]
    return lines + [f"| {k} | {_fmt(v).replace('|', '/')} |" for k, v in rows]


def _metric_rows(metrics: dict) -> list[tuple[str, Any]]:
    """Held-out scores first, then the training summary; throughput and timing noise left out."""
    skip = ("runtime", "per_second", "samples_per_s", "steps_per_second", "flos")
    evals = [(k, v) for k, v in metrics.items() if k.startswith("eval_") and not k.endswith(skip)]
    train = [
        (k, metrics[k])
        for k in ("train_loss", "epoch", "train_runtime", "trainable_params", "trainable_percent")
        if k in metrics
    ]
    return [(k, v) for k, v in evals + train if isinstance(v, (int, float, str)) and not isinstance(v, bool)]


def build_card(
    run_dir: str | os.PathLike,
    task: TaskCard | None = None,
    *,
    merged: bool = False,
    adapter_dir=None,
    with_metrics: bool = True,
) -> str:
    """The README.md text for the run in `run_dir` (or, with `merged`, for its `export`).

    Args:
        run_dir: the run dir (resolved_config.yaml, metrics.json; adapter_config.json unless `adapter_dir`).
        task: the app's task bits; None gives a generic card.
        merged: describe a merged `export` (library transformers) rather than the adapter (library peft).
        adapter_dir: where adapter_config.json is when not yet in `run_dir` (the save's temp dir).
        with_metrics: False while saving the adapter: a metrics.json there is an earlier run's.
    """
    run = Path(run_dir)
    task = task or {}
    config = {**_training_defaults(), **_read(run / "resolved_config.yaml", yaml.safe_load)}
    adapter = _read(Path(adapter_dir or run) / "adapter_config.json", json.loads)
    metrics = _read(run / "metrics.json", json.loads) if with_metrics else {}
    hub_id, base_text, licence = describe_base(config, run)
    app = task.get("app")

    front: dict[str, Any] = {}
    if hub_id:
        front["base_model"] = hub_id
    front["library_name"] = "transformers" if merged else "peft"
    if task.get("pipeline_tag"):
        front["pipeline_tag"] = task["pipeline_tag"]
    front["tags"] = ["lora", "loraworks", *([app] if app else []), *(["merged"] if merged else [])]
    if licence:
        front["license"] = licence
    dataset = config.get("dataset")
    if isinstance(dataset, str) and dataset.count("/") == 1 and not Path(dataset).expanduser().exists():
        front["datasets"] = [dataset]  # a hub dataset id (a local path is named in the text only)

    what = "merged model (LoRA folded into the base)" if merged else "LoRA adapter"
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    lines += [f"# {app or 'loraworks'} {what}", ""]
    lines += [f"{task.get('task', 'A LoRA fine-tune')}. Base model: {base_text}.", ""]
    lines += [
        f"Trained with loraworks (`{app or '<app>'} train`); every setting of the run is in `resolved_config.yaml`"
    ]
    lines += ["(re-run with `--config resolved_config.yaml`).", ""]

    data = [(k, _public(config[k], run)) for k in _DATA_KEYS if config.get(k) not in (None, "", [])]
    data += list((task.get("data_sizes") or {}).items())
    lines += ["## Data", "", *_table(data), ""]

    lora = [
        (k, adapter[k])
        for k in (
            "r",
            "lora_alpha",
            "lora_dropout",
            "target_modules",
            "modules_to_save",
            "bias",
            "use_dora",
            "use_rslora",
        )
        if adapter.get(k) is not None
    ]
    lines += ["## LoRA", "", *_table(lora), ""]

    # max_steps > 0 overrides the epochs (transformers), so only the one that set the length is shown.
    steps = config.get("max_steps")
    skip = "num_train_epochs" if isinstance(steps, int) and steps > 0 else "max_steps"
    train = [(k, config[k]) for k in _TRAIN_KEYS if k in config and k != skip]
    train.append(("precision", _precision(config)))
    lines += ["## Training", "", *_table(train), ""]

    rows = _metric_rows(metrics)
    lines += ["## Results", ""]
    lines += (
        _table(rows, "metric") if rows else ["Not written yet: `metrics.json` lands when training finishes."]
    )
    lines += [""]

    snippet = task.get("usage_merged" if merged else "usage")
    if snippet:
        where = "path/to/this/export" if merged else "path/to/this/run"
        code = snippet.replace("{RUN}", where).replace("{BASE}", _base_ref(hub_id, config, run, where))
        lines += [
            "## Usage (plain transformers / peft, no loraworks needed)",
            "",
            "```python",
            code.strip(),
            "```",
            "",
        ]
    return "\n".join(lines)


def write_card(
    run_dir: str | os.PathLike,
    target_dir: str | os.PathLike | None = None,
    *,
    task: TaskCard | None = None,
    merged: bool = False,
    adapter_dir=None,
    with_metrics: bool = True,
) -> Path | None:
    """Write README.md for the run in `run_dir` into `target_dir` (default: the run dir), atomically.

    `task` defaults to the task bits saved in the run (TASK_FILE). Never fails a run: a card that cannot be
    built is logged and skipped (the adapter matters more than its description).
    """
    from .io import atomic_write_text

    run = Path(run_dir)
    if task is None:
        task = _read(run / TASK_FILE, json.loads) or None
    target = Path(target_dir or run) / CARD_FILE
    try:
        text = build_card(run, task, merged=merged, adapter_dir=adapter_dir, with_metrics=with_metrics)
    except Exception as e:  # a card bug must never fail the run that trained the adapter
        logger.warning("model card not written (%s: %s)", type(e).__name__, e)
        return None
    atomic_write_text(target, text)
    return target


def parse_card(text: str) -> tuple[dict, str]:
    """(front matter, body) of a card; for tests and tools."""
    if not text.startswith("---\n"):
        return {}, text
    head, _, body = text[4:].partition("\n---\n")
    return yaml.safe_load(head) or {}, body
