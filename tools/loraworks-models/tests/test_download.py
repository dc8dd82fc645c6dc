"""Downloads: sha256 pins, a flipped byte in the cache, a registry serving wrong bytes, which pip runs.

The fake registry (conftest.py) builds small wheels and counts downloads.
"""

from __future__ import annotations

import pytest
from loraworks_models import download
from loraworks_models.registry import Source


def test_verify_source_detects_flipped_byte(tmp_path, fake_registry):
    registry = fake_registry
    src = registry.source("pkg-x", {"a.bin": bytes(range(256)) * 10})
    cache = tmp_path / "cache"
    path = download.fetch_source(src, cache, registry)
    assert download.verify_source(path, src) is None
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    assert "sha256" in download.verify_source(path, src)
    messages = []
    assert download.check_cached_source(src, cache, messages.append) is False
    assert not path.exists() and "corrupt" in messages[0]


def test_registry_serving_wrong_bytes_is_refused(tmp_path, fake_registry):
    registry = fake_registry
    src = registry.source("pkg-x", {"a.bin": b"good"})
    bad = Source(src.package, src.version, src.filename, "0" * 64, src.size)
    with pytest.raises(download.DownloadError, match="does not match the pin"):
        download.fetch_source(bad, tmp_path / "cache", registry)
    assert not (tmp_path / "cache" / src.filename).exists()


def test_pip_command_override(monkeypatch):
    monkeypatch.setenv("LORAWORKS_PIP", "uv tool run pip")
    assert download.find_pip_command() == ["uv", "tool", "run", "pip"]
