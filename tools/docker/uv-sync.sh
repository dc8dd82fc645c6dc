#!/bin/sh
# `uv sync` of the locked workspace for the image (run twice by the Dockerfile: deps, then the members).
# TORCH_INDEX empty: exactly uv.lock, whose Linux torch is PyPI's CUDA build (+ ~3 GB of nvidia-* wheels).
# TORCH_INDEX set (the CPU default): the lock minus torch/torchvision/triton/nvidia-*/cuda-*, then torch and
# torchvision at the locked versions from that index (download.pytorch.org/whl/cpu: ~1 GB instead of ~5 GB).
set -eu
if [ -z "${TORCH_INDEX:-}" ]; then
  exec uv sync --frozen --no-dev --no-editable "$@"
fi
gpu_pins=$(uv export --frozen --no-dev --no-hashes --no-header --no-annotate --no-emit-workspace \
  | grep -oE '^(torch|torchvision|torchaudio|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)==[^ ;]+')
skip=$(printf '%s\n' "$gpu_pins" | sed 's/==.*//; s/^/--no-install-package /')
# --inexact: keep the index's torch that an earlier run installed (exact sync would remove it as unlocked)
# shellcheck disable=SC2086
uv sync --frozen --no-dev --no-editable --inexact $skip "$@"
# shellcheck disable=SC2046
uv pip install --python "$UV_PROJECT_ENVIRONMENT/bin/python" --extra-index-url "$TORCH_INDEX" \
  $(printf '%s\n' "$gpu_pins" | grep -E '^torch(vision|audio)?==')
