"""Multi-process training (DDP on CPU, gloo): 2 processes of vision-cls `tiny` give the same losses and the
same adapter as one process with the same global batch, and the run directory gets ONE adapter.

Launched through the real engines (torchrun and `accelerate launch`), not a home-made process group.
Slow: each launch imports torch/transformers in 2-3 fresh processes (~1 min on a busy 2-core box).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# The random train augmentation (crop/flip/jitter) draws from each process's own RNG, and LoRA dropout
# too, so losses can only match bit-for-bit with both off. The entry patches the transform, nothing else.
ENTRY = """\
import sys

import vision_cls.train as train_module

_orig = train_module.build_transforms
train_module.build_transforms = lambda size, mean, std, train: _orig(size, mean, std, False)

from vision_cls.cli import main

sys.exit(main(sys.argv[1:]))
"""

PER_DEVICE = 8
COMMON = ["train", "--config", "tiny", "--lora_dropout", "0", "--max_steps", "4", "--seed", "3"]


def _launch(cmd: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("ACCELERATE_USE_CPU", None)  # the app must set it itself on a CPU-only machine
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{log.read_text()[-4000:]}"


def _losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    steps = [s for s, _ in losses]
    assert len(steps) == len(set(steps)), f"a step was logged twice (two writers?): {steps}"
    return dict(losses)


def _adapter(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> Path:
    """One process with the global batch of the 2-process runs (2 x PER_DEVICE)."""
    root = tmp_path_factory.mktemp("single")
    (root / "entry.py").write_text(ENTRY)
    out = root / "run"
    cmd = [sys.executable, str(root / "entry.py"), *COMMON, "--output_dir", str(out)]
    _launch([*cmd, "--per_device_train_batch_size", str(2 * PER_DEVICE)], root / "log.txt")
    return out


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_cpu_processes_match_single_process(tmp_path, single_run, launcher):
    (tmp_path / "entry.py").write_text(ENTRY)
    out = tmp_path / "run"
    script = [str(tmp_path / "entry.py"), *COMMON, "--output_dir", str(out)]
    script += ["--per_device_train_batch_size", str(PER_DEVICE)]
    bindir = Path(sys.executable).parent
    if launcher == "torchrun":
        cmd = [str(bindir / "torchrun"), "--nproc_per_node", "2", *script]
    else:  # --multi_gpu selects accelerate's torchrun-based launcher; on CPU the app switches it to gloo
        cmd = [str(bindir / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", *script]
    _launch(cmd, tmp_path / "log.txt")
    log = (tmp_path / "log.txt").read_text()

    # Two processes really trained together: the step count per epoch halves with the global batch of 16
    # (32 demo images), so step 2 ends epoch 1; two independent single processes would show epoch 0.5.
    assert log.count("trainable params:") == 2, "expected two ranks"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert next(r for r in rows if r.get("step") == 2 and "loss" in r)["epoch"] == pytest.approx(1.0)

    # Same losses as one process with the same global batch.
    ddp, single = _losses(out), _losses(single_run)
    assert ddp.keys() == single.keys() == {1, 2, 3, 4}
    for step in ddp:
        assert ddp[step] == pytest.approx(single[step], abs=1e-4), (
            f"step {step}: {ddp[step]} vs {single[step]}"
        )

    # One adapter, written once by rank 0, with the same tensor names (no DDP `module.` prefix) and values.
    assert sorted(p.name for p in out.rglob("adapter_model.safetensors")) == ["adapter_model.safetensors"]
    assert not list(out.glob(".*.tmp")), "a half-finished save was left behind"
    assert log.count("== vision-cls train ==") == 1, "the final report/save ran on more than one rank"
    a, b = _adapter(out), _adapter(single_run)
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max().item() < 1e-4, k

    # ... and it loads like a single-process adapter through the app's own predict path.
    from vision_cls.cli import main

    img = tmp_path / "img.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(img)
    assert main(["predict", "--adapter_dir", str(out), str(img)]) == 0
