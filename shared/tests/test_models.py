"""Base models load from safetensors only: a local dir with just pickle weights is refused with the command
that converts it, and that command produces files transformers loads (issue 14, item 9)."""

from __future__ import annotations

import json

import pytest
import torch
from lora_shared.errors import UsageError
from lora_shared.models import (
    from_pretrained,
    pickle_weight_files,
    refuse_pickle_only_dir,
    safetensors_target,
)
from lora_shared.runs import main as runs_main


def _tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, vocab_size=40
    )
    return BertModel(config)


def _pickle_only_model(path, model):
    """A model dir as older tools wrote it: config.json + pytorch_model.bin, no safetensors."""
    model.config.save_pretrained(path)
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    return path


def test_pickle_only_dir_is_refused_with_the_convert_command(tmp_path):
    from transformers import AutoConfig, AutoModel

    base = _pickle_only_model(tmp_path / "base", _tiny_bert())
    expected = f"python -m lora_shared.runs convert-pickle {base / 'pytorch_model.bin'} --allow_pickle"
    with pytest.raises(UsageError) as e:
        from_pretrained(AutoModel, str(base))
    assert str(base) in str(e.value) and "pickle" in str(e.value) and expected in str(e.value)
    # The tokenizer / config of such a dir is refused too: it would be loaded for a model we refuse.
    with pytest.raises(UsageError, match="convert-pickle"):
        from_pretrained(AutoConfig, str(base))


def test_convert_pickle_makes_a_base_model_that_loads(tmp_path, capsys):
    """`convert-pickle pytorch_model.bin` writes model.safetensors, the name transformers looks for."""
    from transformers import AutoModel

    model = _tiny_bert()
    base = _pickle_only_model(tmp_path / "base", model)
    assert runs_main(["convert-pickle", str(base / "pytorch_model.bin"), "--allow_pickle"]) == 0
    assert capsys.readouterr().out.strip() == str(base / "model.safetensors")
    loaded = from_pretrained(AutoModel, str(base))
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_sharded_pickle_model_converts_with_its_index(tmp_path):
    from transformers import AutoModel

    model = _tiny_bert()
    base = tmp_path / "base"
    model.config.save_pretrained(base)
    state = model.state_dict()
    names = sorted(state)
    halves = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
    weight_map = {}
    for shard, keys in halves.items():
        torch.save({k: state[k] for k in keys}, base / shard)
        weight_map.update(dict.fromkeys(keys, shard))
    (base / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    with pytest.raises(UsageError, match=r"other 1 files"):
        refuse_pickle_only_dir(base)
    for shard in halves:
        assert runs_main(["convert-pickle", str(base / shard), "--allow_pickle"]) == 0
    index = json.loads((base / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    }
    loaded = from_pretrained(AutoModel, str(base))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


def test_safetensors_target_names():
    assert safetensors_target("d/pytorch_model.bin").name == "model.safetensors"
    assert safetensors_target("d/pytorch_model-00002-of-00003.bin").name == "model-00002-of-00003.safetensors"
    assert safetensors_target("d/adapter_model.bin").name == "adapter_model.safetensors"
    assert safetensors_target("d/weights.pt").name == "weights.safetensors"


def test_trainer_state_pickles_are_not_taken_for_weights(tmp_path):
    """A checkpoint's optimizer/RNG state is not model weights: a dir with only those is not "pickle only"."""
    for name in ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt"):
        (tmp_path / name).write_bytes(b"x")
    assert pickle_weight_files(tmp_path) == []
    refuse_pickle_only_dir(tmp_path)


def test_dir_with_safetensors_and_pickle_loads_only_the_safetensors(tmp_path):
    """A dir with both is fine, and use_safetensors=True makes sure the pickle is never the one read."""
    from transformers import AutoModel

    model = _tiny_bert()
    model.save_pretrained(tmp_path)
    evil = {k: torch.full_like(v, 7.0) for k, v in model.state_dict().items()}
    torch.save(evil, tmp_path / "pytorch_model.bin")
    loaded = from_pretrained(AutoModel, str(tmp_path))
    assert torch.equal(loaded.embeddings.word_embeddings.weight, model.embeddings.word_embeddings.weight)


def test_model_loaders_get_use_safetensors_and_others_do_not(tmp_path):
    from transformers import AutoModel, AutoTokenizer, BertModel

    seen = {}

    def spy(cls):
        class Spy(cls):
            @classmethod
            def from_pretrained(klass, source, **kwargs):
                seen[cls.__name__] = kwargs
                return None

        Spy.__name__ = cls.__name__
        return Spy

    for cls in (AutoModel, BertModel, AutoTokenizer):
        from_pretrained(spy(cls), str(tmp_path))
    assert seen["AutoModel"]["use_safetensors"] is True
    assert seen["BertModel"]["use_safetensors"] is True
    assert "use_safetensors" not in seen["AutoTokenizer"]  # a tokenizer's from_pretrained would pass it on


def test_config_overrides_go_through_the_constructor():
    """Fields a config derives in its constructor follow the overrides (D-FINE's head_dim from d_model and
    heads): set afterwards, head_dim kept the default's 32 and d_model=32 with 2 heads was refused."""
    from lora_shared.models import build_config

    config = build_config("d_fine", "d_model=32,decoder_attention_heads=2", num_labels=3)
    assert (config.d_model, config.head_dim, config.num_labels) == (32, 16, 3)
    with pytest.raises(UsageError, match="config_overrides: .*divisible"):
        build_config("d_fine", "d_model=30,decoder_attention_heads=4")
    with pytest.raises(UsageError, match="no field 'not_a_field'"):
        build_config("d_fine", "not_a_field=1")
