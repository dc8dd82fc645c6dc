"""Config dataclasses and parsing shared by every app: defaults < YAML (--config) < CLI flags.

The YAML/CLI namespace is flat (HfArgumentParser, TRL): a key is a field name of one of the app's
dataclasses. Unknown YAML keys are an error that names the key.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError

logger = logging.getLogger(__name__)

RESOLVED_CONFIG = "resolved_config.yaml"


@dataclass
class ModelArgs:
    """Where the base model comes from. Apps subclass this to add task fields."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Hub id, local directory, or a name under the offline models dir (`make models`)."},
    )
    model_type: str | None = field(
        default=None,
        metadata={
            "help": "Build a randomly initialised model of this type instead of loading weights (tiny/test runs)."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated config overrides for --model_type, e.g. 'hidden_size=32,num_hidden_layers=2'."
        },
    )
    adapter_dir: str | None = field(
        default=None,
        metadata={"help": "A trained run/adapter directory to load for eval, predict and export."},
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Allow model code from the hub to run. Off unless you trust the repo."},
    )
    revision: str = field(
        default="main", metadata={"help": "Hub revision (branch, tag or commit) of the base model."}
    )


def cpu_has_native_bf16() -> bool:
    """True when this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX), where bf16 autocast pays."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


@dataclass
class LoraArgs:
    """LoRA hyper-parameters; turned into a `peft.LoraConfig` by `lora_shared.peft.build_lora_config`."""

    lora_r: int = field(default=16, metadata={"help": "LoRA rank r (adapter width)."})
    lora_alpha: int = field(
        default=32, metadata={"help": "LoRA scaling alpha; the update is scaled by alpha/r."}
    )
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input, 0..1."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "v_proj"],
        metadata={"help": "Module names (or suffixes) to adapt, or 'all-linear'."},
    )
    lora_modules_to_save: list[str] = field(
        default_factory=list,
        metadata={"help": "Modules trained fully and saved with the adapter (e.g. a new classifier head)."},
    )
    lora_bias: str = field(default="none", metadata={"help": "Which biases train: none | all | lora_only."})
    use_dora: bool = field(default=False, metadata={"help": "Weight-decomposed LoRA (DoRA)."})
    use_rslora: bool = field(default=False, metadata={"help": "Rank-stabilised scaling alpha/sqrt(r)."})
    lora_init: str = field(
        default="true",
        metadata={"help": "Adapter init: true (B=0) | gaussian | pissa | olora | loftq | eva."},
    )
    lora_layers: str = field(
        default="",
        metadata={
            "help": "Only these layer indices get LoRA, e.g. '12-23' or '0,2,4' (empty: all). Gradients then "
            "stop at the lowest adapted layer, so upper-layer-only LoRA makes each step cheaper."
        },
    )


def _all_fields(config_types) -> dict[str, type]:
    names: dict[str, type] = {}
    for cls in config_types:
        for f in dataclasses.fields(cls):
            if f.init:
                names[f.name] = cls
    return names


def find_config(name_or_path: str, config_package: str | None) -> Path:
    """A bundled config NAME (in `<config_package>`) or a path to a YAML file."""
    path = Path(name_or_path).expanduser()
    if path.suffix in {".yaml", ".yml"} or os.sep in name_or_path:
        if not path.is_file():
            raise UsageError(f"config file not found: {path}")
        return path
    if config_package:
        bundled = resources.files(config_package) / f"{name_or_path}.yaml"
        if bundled.is_file():
            return Path(str(bundled))
    names = ", ".join(bundled_configs(config_package)) or "none"
    raise UsageError(
        f"no bundled config named {name_or_path!r} (bundled: {names}); or pass a path to a .yaml file"
    )


def bundled_configs(config_package: str | None) -> list[str]:
    """Names of the YAML configs shipped inside an app package."""
    if not config_package:
        return []
    try:
        root = resources.files(config_package)
    except ModuleNotFoundError:
        return []
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_yaml(path: Path, config_types) -> dict[str, Any]:
    """Read a flat YAML config and check every key belongs to one of `config_types`."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UsageError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of field: value, got {type(data).__name__}")
    known = _all_fields(config_types)
    if path.name == RESOLVED_CONFIG:
        # A run's own resolved_config.yaml may list fields a later version retired (a group's ClassVar
        # `retired_fields`): dropped, so older runs still load; in a hand-written config they stay an error.
        retired = {k for cls in config_types for k in getattr(cls, "retired_fields", ())}
        data = {k: v for k, v in data.items() if k not in retired}
    unknown = [k for k in data if k not in known]
    if unknown:
        import difflib

        named = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
            named.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
        raise UsageError(f"{path}: unknown config key(s) {', '.join(named)}; see `--help` for valid fields")
    check_types(path, data, config_types)
    return data


_BOOL_STRINGS = {"true", "false", "yes", "no", "1", "0", "t", "f", "y", "n"}


def _type_ok(value: Any, tp: Any) -> bool:
    """Would HfArgumentParser accept `value` (a YAML scalar/list) for a field annotated `tp`?"""
    if tp is Any:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple, set):
        return isinstance(value, (list, tuple)) and (not args or all(_type_ok(v, args[0]) for v in value))
    if origin is dict or tp is dict:
        return isinstance(value, (dict, str))  # transformers accepts JSON strings for dict fields
    if isinstance(value, str):  # YAML leaves `1e-4` or `"8"` as strings: argparse converts those
        converters = {int: int, float: float, bool: lambda v: v.lower() in _BOOL_STRINGS or int("x")}
        if tp in converters:
            try:
                converters[tp](value)
            except ValueError:
                return False
        return True
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, (str, int, float))  # argparse would stringify a number
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return isinstance(value, tp) or value in {m.value for m in tp}
    return True


def check_types(path: Path, data: dict[str, Any], config_types) -> None:
    """Fail on a YAML value of the wrong type with one line naming the file, the key and the expected type."""
    hints: dict[str, Any] = {}
    for cls in config_types:
        try:
            hints.update(typing.get_type_hints(cls))
        except Exception:  # an unresolvable annotation upstream: leave those fields to argparse
            continue
    for key, value in data.items():
        tp = hints.get(key)
        if tp is not None and not _type_ok(value, tp):
            want = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
            raise UsageError(f"{path}: {key}: expected {want}, got {value!r} ({type(value).__name__})")


def parse_config(
    config_types,
    argv: list[str],
    *,
    yaml_layers: list[dict[str, Any]] | None = None,
    return_remaining: bool = False,
):
    """Parse `argv` into instances of `config_types`: dataclass defaults < each of `yaml_layers` < CLI flags.

    Args:
        config_types: dataclass types; field names must be unique across them.
        argv: CLI tokens such as ["--learning_rate", "1e-4"] (no subcommand, no --config).
        yaml_layers: dicts of field -> value applied in order over the defaults (already key-checked).
        return_remaining: return tokens that are not flags (positional inputs) instead of failing on them.

    Returns:
        A tuple with one instance per config type (and the remaining tokens if asked).
    """
    from transformers import HfArgumentParser

    parser = HfArgumentParser(config_types)

    def _error(message: str):  # argparse would print its whole usage first; one line is enough
        raise UsageError(f"invalid argument: {message} (see `--help`)")

    parser.error = _error
    defaults: dict[str, Any] = {}
    for layer in yaml_layers or []:
        defaults.update(layer)
    if defaults:
        parser.set_defaults(**defaults)
        # A YAML value satisfies a required field.
        for action in parser._actions:
            if action.dest in defaults:
                action.required = False
    try:
        out = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except SystemExit as e:  # argparse already printed the reason
        raise UsageError("invalid arguments (see the message above and `--help`)") from e
    except (ValueError, TypeError) as e:
        raise UsageError(f"invalid config value: {e}") from None
    *objs, remaining = out
    bad_flags = [r for r in remaining if r.startswith("--")]
    if bad_flags:
        from .helptext import unknown_flag_message

        raise UsageError(unknown_flag_message(bad_flags, [*_all_fields(config_types), "config"]))
    if remaining and not return_remaining:
        raise UsageError(f"unexpected argument(s): {' '.join(remaining)}")
    return (tuple(objs), remaining) if return_remaining else tuple(objs)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_at_least(lo: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


# field -> (valid?, what a valid value is, an example). A field missing from an app's config is skipped.
_TRAIN_RULES: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "learning_rate": (lambda v: _finite(v) and v > 0, "a finite number > 0", "1e-4"),
    "per_device_train_batch_size": (_int_at_least(1), "an integer >= 1", "8"),
    "gradient_accumulation_steps": (_int_at_least(1), "an integer >= 1", "1"),
    "weight_decay": (lambda v: _finite(v) and v >= 0, "a finite number >= 0", "0.01"),
    "warmup_ratio": (lambda v: _finite(v) and 0 <= v <= 1, "a fraction of the steps in [0, 1]", "0.05"),
    # transformers 5: a value < 1 is a fraction of the total steps, >= 1 a step count.
    "warmup_steps": (lambda v: _finite(v) and v >= 0, "a finite number >= 0", "0"),
    "max_grad_norm": (lambda v: v is None or (_finite(v) and v >= 0), "a finite number >= 0", "1.0"),
    "num_train_epochs": (_finite, "a finite number", "3"),
    "lora_r": (_int_at_least(1), "an integer >= 1", "16"),
    "lora_alpha": (lambda v: _finite(v) and v > 0, "a number > 0", "32"),
    "lora_dropout": (lambda v: _finite(v) and 0 <= v < 1, "a probability in [0, 1)", "0.1"),
    "lora_bias": (lambda v: v in ("none", "all", "lora_only"), "one of none | all | lora_only", "none"),
}
# Checked for every command: eval and predict batch by it too.
_ANY_COMMAND_RULES: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "per_device_eval_batch_size": (_int_at_least(1), "an integer >= 1", "8"),
}


def _check_base_model_dir(values: dict[str, Any]) -> None:
    """A local base model dir with only pickle weights is refused here, before data is read (the loader
    refuses it too: `lora_shared.models.from_pretrained`)."""
    from .models import refuse_pickle_only_dir, resolve_model_path

    name = values.get("model_name_or_path")
    if not name or values.get("model_type"):  # model_type builds a random model: the path is unused
        return
    try:
        source = Path(resolve_model_path(str(name)))
    except UsageError:  # a missing dir: the command that needs it says so
        return
    if source.is_dir():
        refuse_pickle_only_dir(source)


# --report_to name -> (transformers' availability check in integrations.integration_utils, what to install).
_TRACKERS = {
    "tensorboard": ("is_tensorboard_available", "tensorboard"),
    "wandb": ("is_wandb_available", "wandb"),
    "mlflow": ("is_mlflow_available", "mlflow"),
    "comet_ml": ("is_comet_available", "comet_ml"),
    "neptune": ("is_neptune_available", "neptune"),
    "clearml": ("is_clearml_available", "clearml"),
    "dagshub": ("is_dagshub_available", "dagshub"),
    "dvclive": ("is_dvclive_available", "dvclive"),
    "codecarbon": ("is_codecarbon_available", "codecarbon"),
    "swanlab": ("is_swanlab_available", "swanlab"),
    "trackio": ("is_trackio_available", "trackio"),
    "azure_ml": ("is_azureml_available", "azureml-core"),
    "flyte": ("is_flytekit_available", "flytekit"),
    "kubeflow": ("is_kubeflow_available", "kubeflow"),
}


def _check_report_to(report_to: Any) -> None:
    """A tracker that is unknown or not installed fails here, not in Trainer() after the run dir was started."""
    if not report_to:
        return
    from transformers.integrations import integration_utils as iu

    for name in [report_to] if isinstance(report_to, str) else list(report_to):
        if name in ("none", "all"):  # TrainingArguments normally expands these already
            continue
        if name not in _TRACKERS:
            raise UsageError(
                f"--report_to {name}: not a tracker transformers knows; pass one of "
                f"{', '.join(_TRACKERS)} or none"
            )
        check, package = _TRACKERS[name]
        available = getattr(iu, check, None)
        if available is not None and not available():
            raise UsageError(
                f"--report_to {name}: {package} is not installed; install it (`uv pip install {package}`) "
                "or pass --report_to tensorboard (installed with loraworks) or none"
            )


def validate_args(configs, command: str = "train") -> None:
    """Refuse values no run can use, before any data or model work, with one line naming the flag.

    HfArgumentParser checks types only: `--learning_rate nan` or `--per_device_train_batch_size 0` would
    otherwise fail deep inside the Trainer after the model is built, or (`--max_steps 0`) "succeed" with an
    untrained adapter. Training knobs are checked for `train` only, so `eval`/`predict` of a finished run are
    never refused over a training value that does not concern them.

    Args:
        configs: the parsed config groups (dataclass instances; field names are unique across them).
        command: the subcommand they were parsed for.

    Raises:
        UsageError: naming the flag, the bad value, the rule and an example of a valid value.
    """
    values: dict[str, Any] = {}
    for obj in configs:
        for f in dataclasses.fields(obj):
            if f.init:
                values[f.name] = getattr(obj, f.name, None)
    for name, value in values.items():  # no knob means anything with NaN; argparse's float() accepts it
        if isinstance(value, float) and math.isnan(value):
            raise UsageError(f"--{name} nan: not a number; pass a finite value (see `--help`)")
    _check_base_model_dir(values)
    rules = dict(_ANY_COMMAND_RULES)
    if command == "train":
        rules.update(_TRAIN_RULES)
    for name, (ok, want, example) in rules.items():
        if name in values and not ok(values[name]):
            raise UsageError(f"--{name} {values[name]!r}: must be {want}; pass e.g. --{name} {example}")
    if command != "train":
        return
    _check_report_to(values.get("report_to"))
    # HF: max_steps > 0 overrides the epochs; any negative value (default -1) means "train for the epochs".
    max_steps, epochs = values.get("max_steps"), values.get("num_train_epochs")
    if max_steps == 0:
        raise UsageError(
            "--max_steps 0: would train nothing and save an untrained adapter; pass a step count > 0, "
            "or -1 (the default) to train for --num_train_epochs"
        )
    if isinstance(max_steps, int) and max_steps < 0 and epochs is not None and epochs <= 0:
        raise UsageError(
            f"--num_train_epochs {epochs!r}: would train nothing and save an untrained adapter; "
            "pass a number of epochs > 0 (e.g. --num_train_epochs 3) or a step count with --max_steps"
        )


def split_positionals(argv: list[str], config_types) -> tuple[list[str], list[str]]:
    """Separate `--flag value` pairs from positional inputs, using each field's arity.

    HfArgumentParser's booleans take an optional value, so `--json img.png` would try to read
    img.png as a bool; we only let a boolean flag swallow an explicit true/false token.
    """
    from transformers import HfArgumentParser

    actions = HfArgumentParser(config_types)._option_string_actions
    flags, positionals = [], []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("--") and "=" not in tok and tok in actions:
            act = actions[tok]
            flags.append(tok)
            i += 1
            if act.nargs == 0:
                continue
            if act.nargs == "?":
                if i < len(argv) and argv[i].lower() in {
                    "true",
                    "false",
                    "yes",
                    "no",
                    "1",
                    "0",
                    "t",
                    "f",
                    "y",
                    "n",
                }:
                    flags.append(argv[i])
                    i += 1
                continue
            if act.nargs in ("+", "*"):
                while i < len(argv) and not argv[i].startswith("--"):
                    flags.append(argv[i])
                    i += 1
                continue
            if i < len(argv):
                flags.append(argv[i])
                i += 1
        elif tok.startswith("--"):
            flags.append(tok)
            i += 1
        else:
            positionals.append(tok)
            i += 1
    return flags, positionals


def _plain(value: Any) -> Any:
    """Make a config value YAML-safe (enums -> their value, dataclasses -> dicts, tuples -> lists)."""
    import enum

    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def config_to_dict(configs) -> dict[str, dict[str, Any]]:
    """One dict per config group, keyed by class name.

    For `TrainingArguments` subclasses we keep only fields whose value differs from transformers'
    own default (the full list is ~150 fields that mostly say "default"); app-changed defaults
    therefore appear, which is what a reader wants to see.
    """
    out: dict[str, dict[str, Any]] = {}
    for obj in configs:
        base_defaults = _training_args_defaults(type(obj))
        group: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            value = _plain(getattr(obj, f.name))
            if base_defaults is not None:
                if f.name in base_defaults and value == base_defaults[f.name]:
                    continue
            group[f.name] = value
        out[type(obj).__name__] = group
    return out


def _training_args_defaults(cls) -> dict[str, Any] | None:
    """Field values of a default `TrainingArguments` (after its __post_init__ normalisation)."""
    try:
        from transformers import TrainingArguments
    except ImportError:  # pragma: no cover
        return None
    if not issubclass(cls, TrainingArguments):
        return None
    global _TA_DEFAULTS
    if _TA_DEFAULTS is None:
        ref = TrainingArguments()
        _TA_DEFAULTS = {
            f.name: _plain(getattr(ref, f.name)) for f in dataclasses.fields(TrainingArguments) if f.init
        }
    return _TA_DEFAULTS


_TA_DEFAULTS: dict[str, Any] | None = None


def save_resolved_config(configs, output_dir: str | os.PathLike, filename: str = RESOLVED_CONFIG) -> Path:
    """Write the resolved config (flat keys grouped by class, as comments) next to the adapter, atomically."""
    from .io import atomic_write_text

    groups = config_to_dict(configs)
    lines = ["# Resolved config of this run: defaults < YAML < CLI. Re-run with --config <this file>."]
    for name, group in groups.items():
        lines.append(f"\n# {name}")
        if group:
            lines.append(yaml.safe_dump(group, sort_keys=False, allow_unicode=True).rstrip())
    path = Path(output_dir) / filename
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def log_config(configs) -> None:
    """Log the resolved config, one group per line, so a run's log says what it ran with."""
    for name, group in config_to_dict(configs).items():
        logger.info("%s: %s", name, group)


@dataclass
class TrainDefaults:
    """TrainingArguments defaults every app changes the same way: evaluate and checkpoint once per epoch
    (so early stopping and --resume have something to use), keep 2 checkpoints, log every 10 steps.

    Mix in after TrainExtras and before TrainingArguments; an app re-defines a field only to change it again.
    """

    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate: no | steps | epoch."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to checkpoint: no | steps | epoch."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep at most N checkpoints."})


@dataclass
class TrainExtras:
    """Fields every app's TrainingArguments subclass mixes in (TrainingArguments has no equivalent)."""

    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop after this many evaluations without improvement of metric_for_best_model."},
    )
    resume: bool = field(
        default=False,
        metadata={
            "help": "Resume from the newest complete checkpoint in output_dir (same as --resume_from_checkpoint auto)."
        },
    )
    # transformers 5 dropped TrainingArguments.overwrite_output_dir; same name, enforced by prepare_output_dir.
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train into an output_dir holding a finished run; the old run stays until the new adapter is saved."
        },
    )
    cpu_threads: int = field(
        default=0,
        metadata={
            "help": "torch threads on CPU; 0 = auto (torch's default, 1 when the CPU is oversubscribed: "
            "load > 1.5x cores). 1 is ~10x faster on a CPU shared with other jobs."
        },
    )

    def __post_init__(self):
        # transformers refuses bf16 without a GPU unless use_cpu is set; CPU bf16 autocast is real and ~3x
        # faster on AVX512-BF16 machines, so honour --bf16 on CPU instead of failing.
        if getattr(self, "bf16", False) and not getattr(self, "use_cpu", False):
            import torch

            if not torch.cuda.is_available():
                self.use_cpu = True
        if getattr(self, "bf16", False) and getattr(self, "use_cpu", False) and not cpu_has_native_bf16():
            # Without AVX512-BF16/AMX, CPU bf16 matmuls take a slow fallback: measured by `make bench` on an
            # AVX2-only EPYC at ~0.3 GFLOP/s vs ~20 fp32, so autocast would make training ~50x slower.
            if os.environ.get("LORAWORKS_FORCE_BF16", "").lower() not in {"1", "true", "yes"}:
                logger.warning(
                    "bf16 requested, but this CPU has no native bf16 (AVX512-BF16/AMX): training in fp32, "
                    "which is much faster here (set LORAWORKS_FORCE_BF16=1 to insist)"
                )
                self.bf16 = False
        super().__post_init__()
