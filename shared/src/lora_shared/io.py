"""Atomic file and directory writes: a kill mid-save never leaves a half-written file in place."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(path: Path) -> None:
    """mkstemp/mkdtemp create 0600/0700 entries; give published ones the usual umask-based mode."""
    mode = (0o777 if path.is_dir() else 0o666) & ~_umask()
    with contextlib.suppress(OSError):
        os.chmod(path, mode)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory's entries (renames into it) to disk; best effort (some filesystems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text to `path` via a temp file in the same folder and `os.replace`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """JSON version of `atomic_write_text` (UTF-8, indented, keys in insertion order)."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp directory next to `final`; on success it replaces `final` in one rename.

    If `final` exists it is moved aside first and removed only after the new one is in place, so a
    kill at any moment leaves either the old or the new directory (plus a stray temp dir).
    Whatever `final` held is deleted: callers must own it (a cache, a staged base) or check it first
    (`lora_shared.runs.check_export_dir` for a user-given export dir).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        for p in [tmp, *tmp.rglob("*")]:
            _publish_mode(p)
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_files_from(src_dir: Path, dest_dir: Path) -> list[str]:
    """Move every file of `src_dir` into `dest_dir`, each with an atomic `os.replace`.

    Used for the final adapter, which lives in the run directory itself (next to checkpoints and
    logs), so the whole directory cannot be swapped. Every file is whole at every moment; the
    weights move last, so the old weights stay in place until everything else has landed.
    """
    names = sorted(
        (p.name for p in src_dir.iterdir() if p.is_file()), key=lambda n: n.endswith(".safetensors")
    )
    for name in names:
        _publish_mode(src_dir / name)
        with open(src_dir / name, "rb") as f:
            os.fsync(f.fileno())
    for name in names:
        os.replace(src_dir / name, dest_dir / name)
    fsync_dir(dest_dir)
    return names


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Bytes version of `atomic_write_text`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _publish_mode(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
