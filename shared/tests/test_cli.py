import errno
import os
import sys
import types
from pathlib import Path

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


# ---- bad values and failed writes: one exit-2 line from run_app, whatever the command (issue 14)
def test_values_no_run_can_use_stop_train_before_it_starts(tmp_path, capsys):
    assert run_app(APP, ["train", "--max_steps", "0", "--output_dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "lr=" not in captured.out  # the command never ran
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("fake train: error:")]
    assert len(lines) == 1 and "--max_steps 0" in lines[0]


def test_eval_commands_are_not_refused_by_training_only_values(tmp_path, capsys):
    argv = ["predict", "a.png", "--learning_rate", "-1", "--output_dir", str(tmp_path)]
    assert run_app(APP, argv) == 0
    assert run_app(APP, ["predict", "a.png", "--per_device_eval_batch_size", "0"]) == 2


def _raiser(exc):
    def command(cfg):
        raise exc

    return command


def _fills_disk_after_saving(cfg):
    """A train that lands its adapter, then hits a full disk writing metrics.json."""
    out = Path(cfg.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter_model.safetensors").write_bytes(b"new weights")
    raise OSError(errno.ENOSPC, "No space left on device", str(out / "metrics.json"))


def _storage_app(target: str) -> App:
    return App(
        "fake",
        "a fake app",
        config_package="fake_pkg_configs",
        config_types="fake_app_config:CONFIG_TYPES",
        commands=[Command("train", "train it", target, uses_adapter=False)],
    )


@pytest.mark.parametrize(
    "exc, needles",
    [
        # f.write() on a full disk: no filename, so the output dir is named.
        (OSError(errno.ENOSPC, "No space left on device"), ["{out}: no space left on device", "free space"]),
        (
            OSError(errno.EDQUOT, "Disk quota exceeded"),
            ["{out}: disk quota exceeded", "--output_dir"],
        ),
        (
            OSError(errno.EROFS, "Read-only file system", "{out}/x.json"),
            ["{out}/x.json: read-only file system", "pick another --output_dir"],
        ),
        (
            PermissionError(errno.EACCES, "Permission denied", "{out}/x.json"),
            ["{out}/x.json: permission denied", "pick another --output_dir"],
        ),
        # An input outside the output dir: the fix is its permissions, not another output dir.
        (
            PermissionError(errno.EACCES, "Permission denied", "/srv/data/train.csv"),
            ["/srv/data/train.csv: permission denied; fix its permissions"],
        ),
        # safetensors' Rust writer does not raise OSError; its message carries the OS error.
        (
            RuntimeError(
                'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space'
            ),
            ["{out}: no space left on device"],
        ),
    ],
)
def test_failed_writes_are_one_line_exit_2(tmp_path, capsys, exc, needles):
    out = str(tmp_path / "run")
    if isinstance(exc, OSError) and exc.filename:
        exc.filename = exc.filename.format(out=out)
    mod.raiser = _raiser(exc)
    assert run_app(_storage_app("fake_app_cmds:raiser"), ["train", "--output_dir", out]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("fake train: error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle.format(out=out) in lines[0]


def test_disk_full_wrapped_by_a_library_is_recognised():
    from lora_shared.errors import storage_error

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/x/model.safetensors")
        except OSError as inner:
            raise RuntimeError("could not save the model") from inner
    except RuntimeError as outer:
        assert storage_error(outer) == ("no space left on device", "/x/model.safetensors")
    assert storage_error(RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"))
    assert storage_error(ValueError("shape mismatch")) is None
    assert storage_error(FileNotFoundError(errno.ENOENT, "No such file")) is None


def test_other_errors_are_not_disguised_as_storage_errors(tmp_path):
    mod.raiser = _raiser(ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        run_app(_storage_app("fake_app_cmds:raiser"), ["train", "--output_dir", str(tmp_path)])


def test_a_run_that_fails_writing_does_not_look_finished(tmp_path, capsys):
    """The adapter this run wrote is set aside (renamed, no space needed); an older file is left alone."""
    mod.fills_disk = _fills_disk_after_saving
    app = _storage_app("fake_app_cmds:fills_disk")
    out = tmp_path / "run"
    assert run_app(app, ["train", "--output_dir", str(out)]) == 2
    assert "metrics.json: no space left on device" in capsys.readouterr().err
    assert not (out / "adapter_model.safetensors").exists()
    assert (out / "adapter_model.safetensors.unfinished").read_bytes() == b"new weights"

    # A finished run's metrics.json that this run did not touch stays where it is.
    (out / "metrics.json").write_text("{}")
    mod.fills_disk = _raiser(OSError(errno.ENOSPC, "No space left on device"))
    assert run_app(app, ["train", "--output_dir", str(out)]) == 2
    assert (out / "metrics.json").read_text() == "{}"


@pytest.mark.parametrize("engine", ["FSDP", "DEEPSPEED", None])
def test_multi_process_run_without_cuda_is_cpu_ddp_and_says_so_for_fsdp(monkeypatch, caplog, engine):
    """torchrun/accelerate ranks without CUDA train as CPU DDP; an FSDP/DeepSpeed config there would silently be
    DDP too (accelerate engages them only on accelerators), so the run says so."""
    import torch
    from lora_shared.cli import cpu_distributed_env

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    for name in ("FSDP", "DEEPSPEED"):
        monkeypatch.delenv(f"ACCELERATE_USE_{name}", raising=False)
    if engine:
        monkeypatch.setenv(f"ACCELERATE_USE_{engine}", "true")
    with caplog.at_level("WARNING", logger="lora_shared"):
        cpu_distributed_env()
    assert os.environ["ACCELERATE_USE_CPU"] == "true"
    warned = [r.getMessage() for r in caplog.records if "plain DDP" in r.getMessage()]
    assert len(warned) == (1 if engine else 0) and (not engine or warned[0].startswith(engine))
