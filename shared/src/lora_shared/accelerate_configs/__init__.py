"""Bundled `accelerate launch` config files (DDP, FSDP, DeepSpeed ZeRO-2/3); see README.md here."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def names() -> list[str]:
    """Names of the bundled configs (file stems)."""
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))


def config_path(name: str) -> Path:
    """Path of a bundled accelerate config, e.g. config_path("fsdp")."""
    path = resources.files(__name__) / f"{name}.yaml"
    if not path.is_file():
        from ..errors import UsageError

        raise UsageError(f"no bundled accelerate config {name!r}; choose from {', '.join(names())}")
    return Path(str(path))
