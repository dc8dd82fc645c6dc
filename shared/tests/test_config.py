from dataclasses import dataclass, field

import pytest
from lora_shared.config import (
    LoraArgs,
    TrainExtras,
    load_yaml,
    parse_config,
    save_resolved_config,
    split_positionals,
)
from lora_shared.errors import UsageError
from transformers import TrainingArguments


@dataclass
class DataArgs:
    dataset: str = field(default="demo", metadata={"help": "data"})
    size: int = field(default=8, metadata={"help": "size"})
    json: bool = field(default=False, metadata={"help": "json output"})


@dataclass
class MyTrainingArguments(TrainExtras, TrainingArguments):
    learning_rate: float = field(default=5e-4, metadata={"help": "lr"})


TYPES = (DataArgs, LoraArgs, MyTrainingArguments)


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_precedence_defaults_yaml_cli(tmp_path):
    cfg = load_yaml(write(tmp_path, "size: 16\nlora_r: 4\nlearning_rate: 1.0e-3\n"), TYPES)
    data, lora, train = parse_config(
        TYPES, ["--size", "32", "--output_dir", str(tmp_path)], yaml_layers=[cfg]
    )
    assert data.size == 32  # CLI beats YAML
    assert lora.lora_r == 4  # YAML beats default
    assert train.learning_rate == 1e-3
    assert data.dataset == "demo"  # default kept
    assert lora.lora_alpha == 32


def test_later_yaml_layer_wins(tmp_path):
    a = load_yaml(write(tmp_path, "size: 16\n", "a.yaml"), TYPES)
    b = load_yaml(write(tmp_path, "size: 24\n", "b.yaml"), TYPES)
    (data, *_) = parse_config(TYPES, [], yaml_layers=[a, b])
    assert data.size == 24


def test_unknown_yaml_key_is_named(tmp_path):
    with pytest.raises(UsageError, match="'lerning_rate'"):
        load_yaml(write(tmp_path, "lerning_rate: 1\n"), TYPES)


def test_unknown_cli_flag(tmp_path):
    with pytest.raises(UsageError, match="--nope"):
        parse_config(TYPES, ["--nope", "1"])


def test_wrong_type_is_usage_error(tmp_path, capsys):
    with pytest.raises(UsageError):
        parse_config(TYPES, ["--size", "big"])


def test_non_mapping_yaml(tmp_path):
    with pytest.raises(UsageError, match="mapping"):
        load_yaml(write(tmp_path, "- a\n- b\n"), TYPES)


def test_resolved_config_round_trips(tmp_path):
    groups = parse_config(
        TYPES,
        [
            "--size",
            "3",
            "--lora_target_modules",
            "a",
            "b",
            "--output_dir",
            str(tmp_path),
            "--learning_rate",
            "0.01",
            "--save_strategy",
            "no",
        ],
    )
    path = save_resolved_config(groups, tmp_path)
    again = parse_config(TYPES, [], yaml_layers=[load_yaml(path, TYPES)])
    assert again[0] == groups[0] and again[1] == groups[1]
    assert again[2].learning_rate == 0.01 and again[2].save_strategy == groups[2].save_strategy
    text = path.read_text()
    assert "learning_rate: 0.01" in text and "# LoraArgs" in text
    assert "adam_beta1" not in text  # untouched transformers defaults are left out


def test_split_positionals_respects_bool_and_list_flags():
    flags, pos = split_positionals(
        ["--json", "img.png", "--size", "3", "--lora_target_modules", "q", "v", "--json", "false", "b.png"],
        TYPES,
    )
    assert pos == ["img.png", "b.png"]
    assert flags == ["--json", "--size", "3", "--lora_target_modules", "q", "v", "--json", "false"]


def test_bf16_is_honoured_on_cpu(tmp_path):
    import torch
    from lora_shared.config import cpu_has_native_bf16

    (*_, train) = parse_config(TYPES, ["--bf16", "--output_dir", str(tmp_path)])
    if not torch.cuda.is_available():
        assert train.use_cpu  # instead of transformers' "doesn't support bf16/gpu" error
        # a CPU without native bf16 trains in fp32: bf16 there is a slow fallback (~50x, see BENCHMARKS.md)
        assert train.bf16 == cpu_has_native_bf16()
    else:
        assert train.bf16


def test_bf16_can_be_forced_on_cpus_without_native_bf16(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAWORKS_FORCE_BF16", "1")
    (*_, train) = parse_config(TYPES, ["--bf16", "--output_dir", str(tmp_path)])
    assert train.bf16


@pytest.mark.parametrize(
    "text, key",
    [
        ("lora_r: 4.5\n", "lora_r"),
        ("learning_rate: [1, 2]\n", "learning_rate"),
        ("max_steps: one\n", "max_steps"),
    ],
)
def test_yaml_value_of_wrong_type_names_file_and_key(tmp_path, text, key):
    with pytest.raises(UsageError, match=rf"c.yaml: {key}: expected"):
        load_yaml(write(tmp_path, text), TYPES)


def test_yaml_strings_argparse_converts_are_accepted(tmp_path):
    # PyYAML reads `1e-4` (no dot) as a string; argparse turns it into a float, so it must pass.
    data = load_yaml(write(tmp_path, "learning_rate: 1e-4\nlora_r: '8'\nbf16: 'true'\n"), TYPES)
    (*_, train) = parse_config(TYPES, [], yaml_layers=[data])
    assert train.learning_rate == 1e-4


def test_bad_cli_value_is_one_usage_line(capsys):
    with pytest.raises(UsageError, match="max_steps"):
        parse_config(TYPES, ["--max_steps", "many"])
    assert "usage:" not in capsys.readouterr().err
