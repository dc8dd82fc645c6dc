import sys
import types

import pytest
from lora_shared.cli import App, Command, run_app
from lora_shared.errors import DataError

# A fake app module: its "train" echoes the resolved config; "boom" raises a DataError.
mod = types.ModuleType("fake_app_cmds")


def _train(cfg):
    print(f"lr={cfg.train.learning_rate} r={cfg.lora.lora_r} ds={cfg.data.dataset}")
    return 0


def _predict(cfg, inputs):
    print("inputs=" + ",".join(inputs))
    return 0


def _boom(cfg):
    raise DataError("data.csv:7: empty text; fill it in or drop the line")


mod.train, mod.predict, mod.boom = _train, _predict, _boom
sys.modules["fake_app_cmds"] = mod
cfg_mod = types.ModuleType("fake_app_config")
sys.modules["fake_app_config"] = cfg_mod


def _types():
    from dataclasses import dataclass, field

    from lora_shared.config import LoraArgs, ModelArgs
    from transformers import TrainingArguments

    @dataclass
    class DataArgs:
        dataset: str = field(default="demo", metadata={"help": "data"})

    return (ModelArgs, DataArgs, LoraArgs, TrainingArguments)


cfg_mod.CONFIG_TYPES = _types()

APP = App(
    "fake",
    "a fake app",
    config_package="fake_pkg_configs",
    config_types="fake_app_config:CONFIG_TYPES",
    commands=[
        Command("train", "train it", "fake_app_cmds:train", uses_adapter=False),
        Command("predict", "predict", "fake_app_cmds:predict", inputs="X"),
        Command("boom", "fails", "fake_app_cmds:boom"),
    ],
)


def test_bare_prints_help(capsys):
    assert run_app(APP, []) == 0
    out = capsys.readouterr().out
    assert "commands:" in out and "train" in out and "bundled configs" in out


def test_unknown_command_exit_2(capsys):
    assert run_app(APP, ["fly"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_flags_and_yaml(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lora_r: 4\ndataset: x\n")
    assert (
        run_app(APP, ["train", "--config", str(cfg), "--learning_rate", "0.5", "--output_dir", str(tmp_path)])
        == 0
    )
    assert "lr=0.5 r=4 ds=x" in capsys.readouterr().out


def test_positionals(tmp_path, capsys):
    assert run_app(APP, ["predict", "a.png", "--output_dir", str(tmp_path), "b.png"]) == 0
    assert "inputs=a.png,b.png" in capsys.readouterr().out


def test_data_error_is_one_line_exit_2(tmp_path, capsys):
    assert run_app(APP, ["boom", "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "data.csv:7: empty text" in err and "Traceback" not in err


def test_missing_config_file(tmp_path, capsys):
    assert run_app(APP, ["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", ["train", "predict", "boom"])
def test_command_help(cmd, capsys):
    assert run_app(APP, [cmd, "--help"]) == 0
    assert "--learning_rate" in capsys.readouterr().out


def test_cli_module_imports_nothing_heavy():
    """`<app> --help` must be instant: the CLI module may not import torch or transformers."""
    import subprocess

    code = (
        "import sys, lora_shared.cli; heavy = {'torch', 'transformers'} & set(sys.modules);"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
