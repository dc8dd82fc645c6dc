"""Helpers for the apps' tests (imported from tests only; no pytest import at module top)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def snapshot_params(model) -> dict:
    """A detached CPU copy of every parameter, keyed by name."""
    return {n: p.detach().to("cpu").clone() for n, p in model.named_parameters()}


@contextlib.contextmanager
def capture_built_model(train_module, builder: str = "build_model") -> Iterator[dict]:
    """Patch `train_module.<builder>` so a real CLI run records the model it trains.

    Yields a dict that gets "model" (the PeftModel) and "before" (its parameters before training), so a
    smoke test can check the LoRA invariant on the very model `train` used.
    """
    captured: dict = {}
    original = getattr(train_module, builder)

    def spy(*args, **kwargs):
        model = original(*args, **kwargs)
        captured["model"], captured["before"] = model, snapshot_params(model)
        return model

    setattr(train_module, builder, spy)
    try:
        yield captured
    finally:
        setattr(train_module, builder, original)


def is_adapter_param(name: str) -> bool:
    """LoRA weights and fully-trained `modules_to_save` copies."""
    return "lora_" in name or "modules_to_save" in name


def assert_only_lora_changed(before: dict, model) -> dict[str, int]:
    """The LoRA invariant: frozen base weights bit-identical, adapter weights moved, only adapters trainable.

    Returns counts of {"base": n_unchanged, "adapter_changed": n_changed} for the test to log.
    """
    import torch

    after = snapshot_params(model)
    assert before.keys() == after.keys(), "parameter names changed during training"
    base_same = adapter_changed = 0
    for name, p in model.named_parameters():
        if is_adapter_param(name):
            assert p.requires_grad or "original_module" in name, f"adapter param {name} is frozen"
            if not torch.equal(before[name], after[name]):
                adapter_changed += 1
        else:
            assert not p.requires_grad, f"base param {name} is trainable"
            assert torch.equal(before[name], after[name]), f"base param {name} changed"
            base_same += 1
    assert adapter_changed > 0, "no adapter weight changed: training did nothing"
    return {"base": base_same, "adapter_changed": adapter_changed}


def tiny_mlp(d: int = 8, classes: int = 3, seed: int = 0):
    """Two Linear layers and a head (PEFT's test trick): exercises target matching and modules_to_save."""
    import torch
    from torch import nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(d, 16)
            self.fc2 = nn.Linear(16, 16)
            self.head = nn.Linear(16, classes)

        def forward(self, x):
            return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    torch.manual_seed(seed)
    return MLP()


# Prepended to a plain-loading subprocess script (tests of issue 18): loraworks packages cannot be imported
# there, as for a user with only torch/transformers/peft, and the script proves the block is real first.
BLOCK_LORAWORKS = """
import importlib.abc, sys
BLOCKED = ("lora_shared", "vision_cls", "vision_det", "vision_pose", "text_classifier", "llm_chat")
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked for this test: " + name)
        return None
sys.meta_path.insert(0, _Block())
try:
    import lora_shared
except ImportError:
    pass
else:
    raise SystemExit("the loraworks import block did not work")
"""

# Defined for every plain-loading script: the ```python``` usage snippet of a run's or an export's README.md
# (its model card), with the card's placeholder path replaced by the real one.
CARD_SNIPPET = """
import re as _re
from pathlib import Path as _Path
def card_snippet(where, placeholder):
    text = (_Path(where) / "README.md").read_text(encoding="utf-8")
    return _re.search(r"```python\\n(.*?)```", text, _re.S).group(1).replace(placeholder, where)
"""


def run_without_loraworks(script: str, cwd, *args, timeout: int = 900) -> dict:
    """Run `script` in `python -I` (no cwd or user site on sys.path) behind BLOCK_LORAWORKS, with
    `card_snippet` defined, offline; returns the JSON of its last stdout line.

    Remote code (trust_remote_code) is cached under `cwd`, so no run reuses another run's modeling files.
    """
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(Path(cwd) / "hf_modules")}
    proc = subprocess.run(
        [sys.executable, "-I", "-c", BLOCK_LORAWORKS + CARD_SNIPPET + script, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def import_roots(path) -> set[str]:
    """Top-level packages a shipped modeling file imports (remote code must need only torch/transformers);
    fails on a relative import, which would need a second shipped file."""
    import ast
    from pathlib import Path

    roots: set[str] = set()
    for node in ast.walk(ast.parse(Path(path).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import would need a second shipped file"
            roots.add(node.module.split(".")[0])
    return roots
