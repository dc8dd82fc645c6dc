"""A disk that fills up (or turns read-only) during a real run: one exit-2 line naming the path and the
cause, and a run dir that does not look finished (issue 14, item 8). The write is made to fail with the
OSError the kernel gives (ENOSPC / EROFS), since a truly full disk cannot be made in a test."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

TINY = ["train", "--config", "tiny", "--max_steps", "1", "--demo_images_per_class", "5"]


def _fail_writes_of(monkeypatch, name: str, err: int):
    """Make lora_shared's atomic writes of `name` (every JSON, YAML and PNG it writes) fail with `err`."""
    import lora_shared.io as io

    real = io.atomic_write_bytes

    def write(path, data):
        if Path(path).name == name:
            raise OSError(err, errno.errorcode[err], str(path))
        real(path, data)

    monkeypatch.setattr(io, "atomic_write_bytes", write)


def _error_line(err: str, prefix: str) -> str:
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, err
    return lines[0]


def test_disk_full_after_the_adapter_landed(tmp_path, monkeypatch, capsys):
    """metrics.json cannot be written: exit 2 naming it; the adapter this run saved is set aside, so
    eval/predict do not take the run for a finished one."""
    from vision_cls.cli import main

    out = tmp_path / "run"
    _fail_writes_of(monkeypatch, "metrics.json", errno.ENOSPC)
    assert main([*TINY, "--output_dir", str(out)]) == 2
    line = _error_line(capsys.readouterr().err, "vision-cls train: error:")
    assert line == (
        f"vision-cls train: error: {out / 'metrics.json'}: no space left on device; "
        "free space there or pick another --output_dir"
    )
    assert not (out / "adapter_model.safetensors").exists() and not (out / "metrics.json").exists()
    assert (out / "adapter_model.safetensors.unfinished").is_file()  # kept: renaming needs no space
    assert main(["predict", "--adapter_dir", str(out), "x.png"]) == 2  # not a finished run
    assert "no adapter_model.safetensors" in capsys.readouterr().err


@pytest.mark.parametrize(
    "err, cause", [(errno.ENOSPC, "no space left on device"), (errno.EROFS, "read-only")]
)
def test_write_failure_before_training(tmp_path, monkeypatch, capsys, err, cause):
    """The first file written (the resolved config) fails: one line, nothing that looks finished."""
    from vision_cls.cli import main

    out = tmp_path / "run"
    _fail_writes_of(monkeypatch, "resolved_config.yaml", err)
    assert main([*TINY, "--output_dir", str(out)]) == 2
    line = _error_line(capsys.readouterr().err, "vision-cls train: error:")
    assert str(out) in line and f"resolved_config.yaml: {cause}" in line and "--output_dir" in line
    assert not any((out / n).exists() for n in ("adapter_model.safetensors", "metrics.json"))


def test_disk_full_in_safetensors_save_of_an_export(tmp_path, monkeypatch, capsys):
    """Any command: `export` whose safetensors write hits a full disk is one exit-2 line too."""
    import transformers.modeling_utils
    from vision_cls.cli import main

    run = tmp_path / "run"
    assert main([*TINY, "--output_dir", str(run)]) == 0
    capsys.readouterr()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)  # what save_pretrained calls
    export = tmp_path / "merged"
    assert main(["export", "--adapter_dir", str(run), "--export_dir", str(export)]) == 2
    line = _error_line(capsys.readouterr().err, "vision-cls export: error:")
    assert f"{export}: no space left on device" in line and "--export_dir" in line
    assert not export.exists()  # atomic_dir: the half-written temp dir is gone
