"""Kill-safety and safe loading in lora_shared.runs / callbacks: half-written files are never trusted."""

import pickle

import pytest
import torch
from lora_shared.config import LoraArgs
from lora_shared.errors import UsageError
from lora_shared.peft import apply_lora
from lora_shared.runs import (
    convert_pickle_weights,
    find_pickle_files,
    is_complete_checkpoint,
    last_complete_checkpoint,
    load_adapter,
    load_pickle_state_dict,
    remove_incomplete_checkpoints,
    resolve_resume,
    save_adapter,
)
from lora_shared.testing import tiny_mlp as MLP
from safetensors.torch import load_file, save_file


def _ckpt(root, step, state="{}", weights=True):
    d = root / f"checkpoint-{step}"
    d.mkdir()
    if weights:
        save_file({"w": torch.zeros(4)}, str(d / "adapter_model.safetensors"))
    if state is not None:
        (d / "trainer_state.json").write_text(state)
    return d


def test_half_written_checkpoints_are_not_complete(tmp_path):
    assert is_complete_checkpoint(_ckpt(tmp_path, 1))
    assert not is_complete_checkpoint(_ckpt(tmp_path, 2, state=None))  # killed before the state
    assert not is_complete_checkpoint(_ckpt(tmp_path, 3, state='{"global_step": 3, "log_hi'))  # mid-write
    cut = _ckpt(tmp_path, 4)
    data = (cut / "adapter_model.safetensors").read_bytes()
    (cut / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])  # weights cut short
    assert not is_complete_checkpoint(cut)
    assert not is_complete_checkpoint(_ckpt(tmp_path, 5, weights=False))
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-1"


def test_resume_removes_newer_incomplete_checkpoints(tmp_path):
    good = _ckpt(tmp_path, 10)
    old_partial = _ckpt(tmp_path, 5, state=None)  # older than the resume point: left alone
    _ckpt(tmp_path, 15, state=None)

    class Args:
        output_dir, resume, resume_from_checkpoint = str(tmp_path), True, None

    assert resolve_resume(Args) == str(good)
    assert not (tmp_path / "checkpoint-15").exists()
    assert old_partial.exists()
    assert remove_incomplete_checkpoints(tmp_path) == [old_partial]


def _saved_adapter(tmp_path):
    model = apply_lora(MLP(), LoraArgs(lora_target_modules=["fc1"], lora_init="gaussian"))
    save_adapter(model, tmp_path)
    return model


def test_truncated_adapter_weights_are_a_usage_error(tmp_path):
    _saved_adapter(tmp_path)
    p = tmp_path / "adapter_model.safetensors"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(UsageError, match="adapter_model.safetensors: not a complete safetensors"):
        load_adapter(MLP(), tmp_path)


def test_corrupt_adapter_config_is_a_usage_error(tmp_path):
    _saved_adapter(tmp_path)
    (tmp_path / "adapter_config.json").write_text('{"r": 8, "lora_al')
    with pytest.raises(UsageError, match="adapter_config.json: not a readable adapter config"):
        load_adapter(MLP(), tmp_path)


def test_failed_save_leaves_previous_adapter_intact(tmp_path, monkeypatch):
    model = _saved_adapter(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.add_(1.0)
    import peft.peft_model
    import safetensors.torch

    real = safetensors.torch.save_file

    def dies_mid_write(tensors, filename, metadata=None):
        real(tensors, filename, metadata)
        with open(filename, "r+b") as f:  # half the bytes are on disk when the "kill" comes
            f.truncate(len(open(filename, "rb").read()) // 2)
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr(peft.peft_model, "safe_save_file", dies_mid_write)  # what save_pretrained calls
    with pytest.raises(KeyboardInterrupt):
        save_adapter(model, tmp_path, {"labels.json": {"labels": ["b"]}})
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # same files, same bytes, and no temp dir left behind
    load_adapter(MLP(), tmp_path)  # and it still loads


def test_stale_temp_dirs_from_a_killed_save_are_cleaned(tmp_path):
    (tmp_path / ".adapter.abc.tmp").mkdir()
    (tmp_path / ".adapter.abc.tmp" / "adapter_model.safetensors").write_bytes(b"half")
    _saved_adapter(tmp_path)
    assert not list(tmp_path.glob(".adapter.*"))


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_needs_explicit_flag_and_loads_weights_only(tmp_path):
    good = tmp_path / "adapter_model.bin"
    torch.save({"base_model.fc1.lora_A.weight": torch.ones(2, 3)}, good)
    with pytest.raises(UsageError, match="pickle file.*--allow_pickle"):
        load_pickle_state_dict(good)
    out = convert_pickle_weights(good, allow_pickle=True)
    assert out.name == "adapter_model.safetensors"
    assert torch.equal(load_file(str(out))["base_model.fc1.lora_A.weight"], torch.ones(2, 3))

    evil = tmp_path / "evil.bin"
    with open(evil, "wb") as f:
        pickle.dump({"w": _Evil()}, f)
    with pytest.raises(UsageError, match="refused: the pickle holds more than tensors"):
        load_pickle_state_dict(evil, allow_pickle=True)
    assert find_pickle_files(tmp_path) == [good, evil]


def test_convert_pickle_cli(tmp_path, capsys):
    from lora_shared.runs import main

    f = tmp_path / "w.bin"
    torch.save({"w": torch.zeros(3)}, f)
    assert main(["convert-pickle", str(f)]) == 2
    assert "--allow_pickle" in capsys.readouterr().err
    assert main(["convert-pickle", str(f), "--allow_pickle"]) == 0
    assert (tmp_path / "w.safetensors").is_file()


def test_safe_checkpoint_callback_drops_the_args_pickle(tmp_path):
    from lora_shared.callbacks import SafeCheckpointCallback, default_callbacks

    ckpt = tmp_path / "checkpoint-3"
    ckpt.mkdir()
    (ckpt / "training_args.bin").write_bytes(b"pickle")
    (ckpt / "optimizer.pt").write_bytes(b"tensors")

    class Args:
        output_dir = str(tmp_path)

    class State:
        global_step, is_world_process_zero = 3, True

    SafeCheckpointCallback().on_save(Args, State, None)
    assert sorted(p.name for p in ckpt.iterdir()) == ["optimizer.pt"]
    names = [type(c).__name__ for c in default_callbacks(Args)]
    assert names.index("SafeCheckpointCallback") < names.index("InterruptCallback")
