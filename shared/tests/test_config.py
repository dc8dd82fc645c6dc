from dataclasses import dataclass, field

import pytest
from lora_shared.config import (
    LoraArgs,
    TrainDefaults,
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


# ---- validate_args: values no run can use fail before any data or model work (issue 14)
def _parsed(tmp_path, *flags):
    return parse_config(TYPES, ["--output_dir", str(tmp_path), *flags])


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--learning_rate", "-1"], "--learning_rate -1.0: must be a finite number > 0"),
        (["--learning_rate", "0"], "--learning_rate 0.0: must be a finite number > 0"),
        (["--learning_rate", "nan"], "--learning_rate nan: not a number"),
        (["--learning_rate", "inf"], "--learning_rate inf: must be a finite number"),
        (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size 0: must be an integer >= 1"),
        (["--per_device_train_batch_size", "-4"], "--per_device_train_batch_size -4"),
        (["--per_device_eval_batch_size", "0"], "--per_device_eval_batch_size 0: must be an integer >= 1"),
        (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps 0"),
        (["--weight_decay", "-0.1"], "--weight_decay -0.1: must be a finite number >= 0"),
        (["--weight_decay", "nan"], "--weight_decay nan"),
        (["--max_grad_norm", "-1"], "--max_grad_norm -1.0"),
        (["--lora_r", "0"], "--lora_r 0: must be an integer >= 1"),
        (["--lora_alpha", "0"], "--lora_alpha 0: must be a number > 0"),
        (["--lora_alpha", "-8"], "--lora_alpha -8"),
        (["--lora_dropout", "1"], "--lora_dropout 1.0: must be a probability in [0, 1)"),
        (["--lora_dropout", "-0.1"], "--lora_dropout -0.1"),
        (["--lora_bias", "some"], "--lora_bias 'some': must be one of none | all | lora_only"),
        (["--max_steps", "0"], "--max_steps 0: would train nothing"),
        (["--num_train_epochs", "0"], "--num_train_epochs 0.0: would train nothing"),
        (["--max_steps", "-7", "--num_train_epochs", "-1"], "--num_train_epochs -1.0: would train nothing"),
        (["--num_train_epochs", "inf"], "--num_train_epochs inf: must be a finite number"),
    ],
)
def test_train_values_no_run_can_use_are_named(tmp_path, flags, needle):
    from lora_shared.config import validate_args

    with pytest.raises(UsageError) as e:
        validate_args(_parsed(tmp_path, *flags), "train")
    assert needle in str(e.value)
    assert "pass " in str(e.value)  # every message says what to pass instead


@pytest.mark.parametrize(
    "flags",
    [
        [],  # the defaults
        ["--max_steps", "5", "--num_train_epochs", "0"],  # max_steps > 0 overrides the epochs (HF)
        ["--max_steps", "-1", "--num_train_epochs", "0.5"],
        ["--learning_rate", "1e-6", "--lora_dropout", "0", "--weight_decay", "0", "--lora_alpha", "1"],
    ],
)
def test_valid_training_values_pass(tmp_path, flags):
    from lora_shared.config import validate_args

    validate_args(_parsed(tmp_path, *flags), "train")


@pytest.mark.parametrize("command", ["eval", "predict", "export", "chat"])
def test_other_commands_ignore_training_only_values(tmp_path, command):
    """eval/predict never train: a training knob they do not use must not refuse them; the eval batch
    size (they batch by it) and NaN are still checked."""
    from lora_shared.config import validate_args

    flags = [
        "--max_steps",
        "0",
        "--learning_rate",
        "-1",
        "--per_device_train_batch_size",
        "0",
        "--lora_r",
        "0",
    ]
    validate_args(_parsed(tmp_path, *flags), command)
    with pytest.raises(UsageError, match="--per_device_eval_batch_size 0"):
        validate_args(_parsed(tmp_path, "--per_device_eval_batch_size", "0"), command)
    with pytest.raises(UsageError, match="--weight_decay nan: not a number"):
        validate_args(_parsed(tmp_path, "--weight_decay", "nan"), command)


def test_warmup_ratio_outside_0_1_is_refused(tmp_path):
    from lora_shared.config import validate_args

    @dataclass
    class WithWarmupRatio(TrainExtras, TrainingArguments):  # the apps add it: transformers 5 dropped it
        warmup_ratio: float = field(default=0.0, metadata={"help": "warm-up fraction"})

    types = (DataArgs, LoraArgs, WithWarmupRatio)
    for bad in ("1.5", "-0.1"):
        groups = parse_config(types, ["--output_dir", str(tmp_path), "--warmup_ratio", bad])
        with pytest.raises(UsageError, match=r"--warmup_ratio .*must be a fraction of the steps in \[0, 1\]"):
            validate_args(groups, "train")
    validate_args(parse_config(types, ["--output_dir", str(tmp_path), "--warmup_ratio", "1"]), "train")


def test_yaml_values_are_validated_like_flags(tmp_path):
    from lora_shared.config import validate_args

    layer = load_yaml(write(tmp_path, "max_steps: 0\n"), TYPES)
    groups = parse_config(TYPES, ["--output_dir", str(tmp_path)], yaml_layers=[layer])
    with pytest.raises(UsageError, match="--max_steps 0"):
        validate_args(groups, "train")


def test_pickle_only_base_model_dir_is_refused_at_config_time(tmp_path):
    import torch
    from lora_shared.config import ModelArgs, validate_args

    base = tmp_path / "base"
    base.mkdir()
    torch.save({"w": torch.zeros(2)}, base / "pytorch_model.bin")
    groups = (ModelArgs(model_name_or_path=str(base)), *_parsed(tmp_path))
    with pytest.raises(UsageError, match=r"convert-pickle .*pytorch_model.bin --allow_pickle"):
        validate_args(groups, "predict")
    # model_type builds a random model: model_name_or_path is not read, nothing to refuse.
    validate_args((ModelArgs(model_name_or_path=str(base), model_type="vit"), *_parsed(tmp_path)), "train")


def test_train_defaults_are_the_common_training_defaults_and_an_app_can_change_one(tmp_path):
    import dataclasses

    @dataclass
    class AppTrainingArguments(TrainExtras, TrainDefaults, TrainingArguments):
        logging_steps: float = field(default=5, metadata={"help": "Log every N steps."})

    (train,) = parse_config((AppTrainingArguments,), ["--output_dir", str(tmp_path)])
    assert (train.eval_strategy, train.save_strategy, train.save_total_limit) == ("epoch", "epoch", 2)
    assert train.logging_steps == 5  # the app's own default wins over the shared one
    (shared,) = parse_config((TrainDefaults,), [])
    assert shared.logging_steps == 10
    fields = {f.name: f for f in dataclasses.fields(AppTrainingArguments)}
    assert fields["save_total_limit"].metadata["help"] == "Keep at most N checkpoints."  # the one-line --help
    names = list(fields)
    assert names.index("eval_strategy") < names.index("resume")  # re-defaulted: TrainingArguments' place kept
