"""A hand-edited adapter_config.json with a wrongly typed key is one UsageError naming the file, the key,
the bad value and a valid one, not a traceback deep inside peft (issue 14, item 8)."""

from __future__ import annotations

import json

import pytest
from lora_shared.config import LoraArgs
from lora_shared.errors import UsageError
from lora_shared.peft import apply_lora
from lora_shared.runs import check_adapter_dir, load_adapter, save_adapter
from lora_shared.testing import tiny_mlp as MLP


@pytest.fixture
def adapter(tmp_path):
    save_adapter(apply_lora(MLP(), LoraArgs(lora_target_modules=["fc1"])), tmp_path)
    return tmp_path


def _edit(path, **changes):
    f = path / "adapter_config.json"
    data = json.loads(f.read_text())
    data.update(changes)
    f.write_text(json.dumps(data))
    return f


@pytest.mark.parametrize(
    "key, value, want",
    [
        ("lora_alpha", "big", "a number > 0"),
        ("lora_alpha", 0, "a number > 0"),
        ("r", "8", "an integer >= 1"),
        ("r", 0, "an integer >= 1"),
        ("r", 2.5, "an integer >= 1"),
        ("r", True, "an integer >= 1"),
        ("lora_dropout", 1.5, "a number in [0, 1)"),
        ("target_modules", 7, "a list of module names"),
        ("target_modules", ["fc1", 3], "a list of module names"),
        ("modules_to_save", "head", "null or a list of module names"),
        ("bias", "some", "one of none, all, lora_only"),
        ("use_dora", "yes", "true or false"),
        ("rank_pattern", {"fc1": "x"}, "an object of name: rank"),
    ],
)
def test_wrongly_typed_key_is_named(adapter, key, value, want):
    f = _edit(adapter, **{key: value})
    with pytest.raises(UsageError) as e:
        check_adapter_dir(adapter)
    msg = str(e.value)
    assert msg.startswith(f"{f}: {key} is {json.dumps(value)}, expected {want} (e.g. ")
    assert "fix that key" in msg


def test_load_adapter_refuses_before_peft_sees_it(adapter):
    _edit(adapter, lora_alpha="big")
    with pytest.raises(UsageError, match=r"adapter_config.json: lora_alpha is \"big\""):
        load_adapter(MLP(), adapter)


def test_config_that_is_not_an_object(adapter):
    (adapter / "adapter_config.json").write_text("[1, 2]")
    with pytest.raises(UsageError, match="expected a JSON object"):
        check_adapter_dir(adapter)


def test_valid_configs_pass(adapter):
    check_adapter_dir(adapter)
    _edit(adapter, lora_alpha=16.0, target_modules="all-linear", modules_to_save=None, lora_dropout=0)
    check_adapter_dir(adapter)
