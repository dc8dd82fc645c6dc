import os

import pytest
from lora_shared.io import atomic_dir, atomic_write_json, atomic_write_text, replace_files_from


def test_atomic_dir_replaces_and_keeps_old_on_failure(tmp_path):
    final = tmp_path / "adapter"
    with atomic_dir(final) as d:
        (d / "w.bin").write_text("v1")
    assert (final / "w.bin").read_text() == "v1"
    with pytest.raises(RuntimeError), atomic_dir(final) as d:
        (d / "w.bin").write_text("half")
        raise RuntimeError("killed mid-save")
    assert (final / "w.bin").read_text() == "v1"  # the previous save is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temp left behind
    with atomic_dir(final) as d:
        (d / "w.bin").write_text("v2")
    assert (final / "w.bin").read_text() == "v2"
    assert oct(final.stat().st_mode & 0o777) != oct(0o700)


def test_atomic_write_no_temp_and_readable(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "hi")
    atomic_write_json(tmp_path / "b.json", {"x": "数据"})
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.json"]
    assert "数据" in (tmp_path / "b.json").read_text(encoding="utf-8")
    assert (tmp_path / "a.txt").stat().st_mode & 0o044  # not private 0600


def test_replace_files_moves_weights_last(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    for n in ("adapter_model.safetensors", "adapter_config.json", "labels.json"):
        (src / n).write_text(n)
    assert replace_files_from(src, dst)[-1] == "adapter_model.safetensors"
    assert sorted(os.listdir(dst)) == ["adapter_config.json", "adapter_model.safetensors", "labels.json"]
