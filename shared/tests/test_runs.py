import json

import pytest
import torch
from lora_shared.config import LoraArgs
from lora_shared.errors import UsageError
from lora_shared.models import from_pretrained, parse_overrides, resolve_model_path
from lora_shared.peft import apply_lora
from lora_shared.runs import (
    full_state_dict,
    last_complete_checkpoint,
    load_adapter,
    read_labels,
    resolve_resume,
    save_adapter,
)
from lora_shared.testing import tiny_mlp as MLP
from safetensors.torch import save_file


def _ckpt(root, step, complete=True):
    d = root / f"checkpoint-{step}"
    d.mkdir()
    save_file({"w": torch.zeros(2)}, str(d / "adapter_model.safetensors"))
    if complete:
        (d / "trainer_state.json").write_text("{}")
    return d


def test_resume_picks_newest_complete_checkpoint(tmp_path):
    _ckpt(tmp_path, 5)
    good = _ckpt(tmp_path, 10)
    _ckpt(tmp_path, 15, complete=False)  # killed while saving
    assert last_complete_checkpoint(tmp_path) == good

    class Args:
        output_dir, resume, resume_from_checkpoint = str(tmp_path), False, "auto"

    assert resolve_resume(Args) == str(good)
    Args.resume_from_checkpoint = None
    assert resolve_resume(Args) is None


def test_adapter_round_trip_and_wrong_base(tmp_path):
    torch.manual_seed(0)
    args = LoraArgs(lora_target_modules=["fc1", "fc2"], lora_modules_to_save=["head"], lora_init="gaussian")
    model = apply_lora(MLP(), args)
    save_adapter(model, tmp_path)
    x = torch.randn(4, 8)
    torch.manual_seed(0)
    reloaded = load_adapter(MLP(), tmp_path)
    model.eval()
    assert torch.equal(model(x), reloaded(x))
    with pytest.raises(UsageError, match="another model|does not"):
        load_adapter(MLP(d=12), tmp_path)  # same names, other shapes
    with pytest.raises(UsageError, match="adapter directory not found"):
        load_adapter(MLP(), tmp_path / "nope")


def test_sharded_training_saves_the_gathered_weights(tmp_path):
    """FSDP / ZeRO-3: the adapter written is the one gathered by the collective, not rank 0's local tensors."""
    from types import SimpleNamespace

    model = apply_lora(MLP(), LoraArgs(lora_target_modules=["fc1"], lora_modules_to_save=["head"]))
    gathered = {k: torch.full_like(v, 0.5) for k, v in model.state_dict().items()}
    calls = []

    def get_state_dict(m):
        calls.append(m)
        return gathered

    def trainer(fsdp=False, ds=False, stage=0):
        acc = SimpleNamespace(
            get_state_dict=get_state_dict,
            state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=stage)),
        )
        return SimpleNamespace(accelerator=acc, model=model, is_fsdp_enabled=fsdp, is_deepspeed_enabled=ds)

    assert full_state_dict(trainer()) is None and full_state_dict(trainer(ds=True, stage=2)) is None
    assert not calls  # one process, DDP and ZeRO-2 hold whole tensors: nothing to gather
    assert full_state_dict(trainer(ds=True, stage=3)) is gathered
    state = full_state_dict(trainer(fsdp=True))
    assert state is gathered and len(calls) == 2
    save_adapter(model, tmp_path, state_dict=state)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert any("lora_A" in k for k in saved) and any("head" in k for k in saved)
    assert all(torch.all(v == 0.5) for v in saved.values())


def test_adapter_with_missing_weights_file(tmp_path):
    model = apply_lora(MLP(), LoraArgs(lora_target_modules=["fc1"]))
    save_adapter(model, tmp_path)
    (tmp_path / "adapter_model.safetensors").unlink()
    with pytest.raises(UsageError, match="incomplete"):
        load_adapter(MLP(), tmp_path)


def test_model_path_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAWORKS_MODELS", str(tmp_path))
    (tmp_path / "mobilenet_v2-imagenet").mkdir()
    assert resolve_model_path("mobilenet_v2-imagenet") == str(tmp_path / "mobilenet_v2-imagenet")
    assert resolve_model_path("google/vit-base-patch16-224") == "google/vit-base-patch16-224"
    with pytest.raises(UsageError, match="not found"):
        resolve_model_path("./missing-dir")


def test_unreachable_hub_gives_offline_hint(monkeypatch):
    class Loader:
        @staticmethod
        def from_pretrained(name, **kw):
            assert kw["trust_remote_code"] is False  # safe default
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    with pytest.raises(UsageError, match="make models"):
        from_pretrained(Loader, "org/some-model")


def test_parse_overrides():
    assert parse_overrides("a=1,b=[64,48],c=x") == {"a": 1, "b": [64, 48], "c": "x"}
    with pytest.raises(UsageError):
        parse_overrides("novalue")


def test_unreachable_hub_is_detected_fast(monkeypatch):
    from lora_shared.models import hub_reachable

    monkeypatch.setenv("HF_ENDPOINT", "https://nonexistent.invalid")
    hub_reachable.cache_clear()
    try:
        assert hub_reachable(timeout=1.0) is False
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        hub_reachable.cache_clear()
        assert hub_reachable() is False
    finally:
        hub_reachable.cache_clear()


def test_read_labels_reads_the_run_or_its_adapter_dir_and_names_the_app_when_missing(tmp_path):
    adapter = tmp_path / "run" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    save_file({"w": torch.zeros(2)}, str(adapter / "adapter_model.safetensors"))
    with pytest.raises(UsageError, match=r"adapter/labels\.json missing: not a vision-det run directory$"):
        read_labels(tmp_path / "run", "vision-det")
    (adapter / "labels.json").write_text(
        json.dumps({"labels": ["猫", "dog"]}, ensure_ascii=False), encoding="utf-8"
    )
    assert read_labels(tmp_path / "run", "vision-det") == ["猫", "dog"]  # UTF-8 whatever the locale
    assert read_labels(adapter, "text-classifier") == ["猫", "dog"]
