"""Safe loading across every app: safetensors only, no code from the hub unless asked, no pickle surprises.

Pickle files can run arbitrary code when loaded; `trust_remote_code` runs a repo's Python. Both stay off
unless the user opts in, and runs never write weights in a pickle format.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APPS = sorted(
    p.name
    for p in (ROOT / "packages").iterdir()
    if (p / "src" / p.name.replace("-", "_") / "cli.py").is_file()
)
SOURCES = sorted([*ROOT.glob("packages/*/src/**/*.py"), *ROOT.glob("shared/src/**/*.py")])
# What Trainer needs to resume exactly (optimizer moments, LR schedule, RNG): tensor data it reloads with
# torch.load(weights_only=True). Everything else in a run dir is safetensors, JSON, YAML or PNG.
TRAINER_RESUME_STATE = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt"}


def _mod(app: str) -> str:
    return app.replace("-", "_")


@pytest.mark.parametrize("app", APPS)
def test_trust_remote_code_is_off_by_default(app):
    from lora_shared.config import bundled_configs, find_config, load_yaml

    config = importlib.import_module(f"{_mod(app)}.config")
    model_args = config.CONFIG_TYPES[0]
    fields = {f.name: f for f in dataclasses.fields(model_args)}
    assert fields["trust_remote_code"].default is False
    assert model_args().trust_remote_code is False
    for name in bundled_configs(f"{_mod(app)}.configs"):
        layer = load_yaml(find_config(name, f"{_mod(app)}.configs"), config.CONFIG_TYPES)
        assert layer.get("trust_remote_code", False) is False, f"{app} config {name} turns on remote code"


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _name(func) -> str:
    if isinstance(func, ast.Attribute):
        return f"{_name(func.value)}.{func.attr}"
    return func.id if isinstance(func, ast.Name) else "?"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_source_never_unpickles_unsafely_or_trusts_remote_code(path):
    """Every torch.load passes weights_only=True; no pickle.load(s); no literal trust_remote_code=True;
    no torch.save of weights (safetensors only); servers bind 127.0.0.1 by default."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    where = path.relative_to(ROOT)
    for call in _calls(tree):
        name = _name(call.func)
        kw = {k.arg: k.value for k in call.keywords}
        if name.endswith("torch.load"):
            wo = kw.get("weights_only")
            assert isinstance(wo, ast.Constant) and wo.value is True, (
                f"{where}:{call.lineno}: {name} without weights_only=True"
            )
        assert name not in {"pickle.load", "pickle.loads", "dill.load", "joblib.load"}, (
            f"{where}:{call.lineno}: {name}"
        )
        assert name != "torch.save", f"{where}:{call.lineno}: torch.save writes a pickle; use safetensors"
        trc = kw.get("trust_remote_code")
        assert not (isinstance(trc, ast.Constant) and trc.value is True), (
            f"{where}:{call.lineno}: trust_remote_code=True"
        )
        if "safe_serialization" in kw:
            v = kw["safe_serialization"]
            assert not (isinstance(v, ast.Constant) and v.value is False), (
                f"{where}:{call.lineno}: pickle save"
            )
    for node in ast.walk(tree):  # host fields / arguments default to loopback
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "host":
            text = ast.unparse(node.value) if node.value is not None else ""
            assert "0.0.0.0" not in text, f"{where}:{node.lineno}: a server binds all interfaces by default"


def test_pickle_checkpoint_needs_the_flag_and_loads_weights_only(tmp_path):
    import pickle

    import torch
    from lora_shared.errors import UsageError
    from lora_shared.runs import load_pickle_state_dict

    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.arange(3.0)}, path)
    with pytest.raises(UsageError, match="--allow_pickle"):
        load_pickle_state_dict(path)
    assert torch.equal(load_pickle_state_dict(path, allow_pickle=True)["w"], torch.arange(3.0))

    class Payload:  # what a malicious checkpoint carries: a callable run at unpickling time
        def __reduce__(self):
            return (print, ("code ran while loading",))

    evil = tmp_path / "evil.bin"
    evil.write_bytes(pickle.dumps({"w": Payload()}))
    with pytest.raises(UsageError, match="refused"):
        load_pickle_state_dict(evil, allow_pickle=True)


def test_vision_cls_run_dir_holds_no_pickles(tmp_path):
    """A tiny run with checkpoints: weights are safetensors; checkpoints keep only Trainer's tensor-only
    resume state (each file loads with weights_only=True) and no training_args.bin (a full pickle)."""
    import torch
    from lora_shared.runs import find_pickle_files
    from transformers.trainer_pt_utils import safe_globals
    from vision_cls.cli import main

    out = tmp_path / "run"
    argv = ["train", "--config", "tiny", "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "1"]
    assert main([*argv, "--output_dir", str(out)]) == 0
    assert (out / "adapter_model.safetensors").is_file() and (
        out / "base_model" / "model.safetensors"
    ).is_file()
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert checkpoints
    for p in find_pickle_files(out):
        rel = p.relative_to(out)
        assert rel.parts[0].startswith("checkpoint-") and p.name in TRAINER_RESUME_STATE, f"pickle file {rel}"
        # Plain data, or this raises. safe_globals: the allowlist Trainer itself loads with (numpy's RNG
        # state is an ndarray), still no arbitrary callables.
        with safe_globals():
            torch.load(p, map_location="cpu", weights_only=True)
    for ckpt in checkpoints:
        assert not (ckpt / "training_args.bin").exists()
        assert (ckpt / "adapter_model.safetensors").is_file()


_MODEL_CLASS = re.compile(r"(^|\.)(Auto\w*Model\w*|\w+Model|\w+For[A-Z]\w*)$")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_model_weights_load_only_from_safetensors(path):
    """A direct `<ModelClass>.from_pretrained(...)` passes use_safetensors=True, or transformers would unpickle
    a pytorch_model.bin it finds. (lora_shared.models.from_pretrained adds it; peft adapters are checked by
    lora_shared.cli.find_adapter_dir.)"""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for call in _calls(tree):
        name = _name(call.func)
        if not name.endswith(".from_pretrained"):
            continue
        owner = name.rsplit(".", 1)[0]
        if not _MODEL_CLASS.search(owner) or owner.split(".")[-1].startswith("Peft"):
            continue
        kw = {k.arg: k.value for k in call.keywords}
        v = kw.get("use_safetensors")
        assert isinstance(v, ast.Constant) and v.value is True, (
            f"{path.relative_to(ROOT)}:{call.lineno}: {name} without use_safetensors=True "
            "(or load through lora_shared.models.from_pretrained)"
        )


@pytest.mark.parametrize("app", APPS)
def test_pickle_only_base_model_is_refused_with_the_convert_command(app, tmp_path, capsys):
    """--model_name_or_path DIR holding only pytorch_model.bin: exit 2 naming the dir and the exact
    convert-pickle command, before any data is read or model built (no run dir is created)."""
    import torch

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    torch.save({"w": torch.zeros(2)}, base / "pytorch_model.bin")
    cli = importlib.import_module(f"{_mod(app)}.cli")
    out = tmp_path / "out"
    argv = ["train", "--config", "tiny", "--model_type", "", "--model_name_or_path", str(base)]
    assert cli.main([*argv, "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"{app} train: error:")]
    assert len(lines) == 1 and "Traceback" not in err
    command = f"python -m lora_shared.runs convert-pickle {base / 'pytorch_model.bin'} --allow_pickle"
    assert lines[0].startswith(f"{app} train: error: {base}: has only pickle weights") and command in lines[0]
    assert not out.exists()
