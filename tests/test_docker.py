"""The Docker image (tools/docker): the build files agree with the workspace, and (-m slow) a real build from
a Debian base bootstrapped here (tools/docker/build-base.sh), a container serving a tiny chat model that
answers /health and one /v1/chat/completions, and an app's `train` run inside the image.

    uv run --frozen pytest tests/test_docker.py -m slow -s    # -s prints the timings
"""

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER_DIR = ROOT / "tools" / "docker"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
BASE_IMAGE = "loraworks/debian-base"
IMAGE = "loraworks:test"
APP_HOME = "/home/app"  # the image's non-root user's home
MODELS_IN_IMAGE = f"{APP_HOME}/.cache/loraworks/models"


def _dockerfile_copy_sources() -> list[str]:
    srcs = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            srcs += line.split()[1:-1]
    return srcs


def _workspace_members() -> list[Path]:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members = []
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        members += sorted(p for p in ROOT.glob(pattern) if (p / "pyproject.toml").is_file())
    return members


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule for our patterns: `X` matches from the context root, `**/X` any path component; a
    matched directory excludes everything under it."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        if pat.startswith("**/"):
            if any(fnmatch.fnmatch(part, pat[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatch(p, pat) for p in prefixes):
            return True
    return False


def test_dockerfile_installs_every_workspace_member_from_the_lock():
    # the deps layer copies each member's pyproject.toml: a new member missing here breaks `uv sync --frozen`
    copied = set(_dockerfile_copy_sources())
    for member in _workspace_members():
        assert str((member / "pyproject.toml").relative_to(ROOT)) in copied, (
            f"{member.name} not in Dockerfile"
        )
    text = DOCKERFILE.read_text()
    assert "ARG BASE=python:3.11-slim" in text  # a public default for real users; the slow test overrides it
    assert re.search(r"^USER app$", text, re.M)  # never root at run time
    assert re.search(r"^EXPOSE 8000$", text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n.*127\.0\.0\.1:8000/health", text, re.M)
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    assert cmd[:2] == ["llm-chat", "serve"] and cmd[cmd.index("--host") + 1] == "0.0.0.0"


def test_dockerignore_keeps_envs_outputs_and_weights_out_but_not_sources():
    patterns = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    for rel in [
        ".venv/bin/python",
        ".venv-llm-chat/x",
        "outputs/run/adapter_model.safetensors",
        "bench/r.json",
    ]:
        assert _ignored(rel, patterns), rel
    assert _ignored("packages/llm-chat/src/llm_chat/__pycache__/cli.cpython-311.pyc", patterns)
    # everything the Dockerfile copies by name, and the sources `COPY . .` brings, must stay in the context
    needed = [s for s in _dockerfile_copy_sources() if s != "."]
    needed += [
        "packages/llm-chat/src/llm_chat/cli.py",
        "shared/src/lora_shared/cli.py",
        "tools/docker/uv-sync.sh",
    ]
    for rel in needed:
        assert (ROOT / rel).exists(), rel
        assert not _ignored(rel, patterns), f"{rel} is excluded by .dockerignore"


def test_compose_builds_from_the_repo_root_and_publishes_on_loopback():
    compose = yaml.safe_load((DOCKER_DIR / "compose.yaml").read_text())
    services = compose["services"]
    assert {"serve", "webui"} <= set(services)
    for name in ("serve", "webui"):
        svc = services[name]
        build = svc["build"]
        assert (DOCKER_DIR / build["context"]).resolve() == ROOT
        assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE
        assert svc["command"][:2] == ["llm-chat", name]
        assert svc["command"][svc["command"].index("--host") + 1] == "0.0.0.0"
        assert all(p.startswith("127.0.0.1:") and p.endswith(":8000") for p in svc["ports"]), svc["ports"]
        targets = {v.split(":")[1] for v in svc["volumes"]}
        assert MODELS_IN_IMAGE in targets and f"{APP_HOME}/.cache/huggingface" in targets


def test_cpu_install_swaps_the_locked_cuda_torch_for_the_index_build(tmp_path):
    # run uv-sync.sh against the real lock with a stub `uv` that answers `export` for real and logs the rest
    real_uv = shutil.which("uv")
    if real_uv is None:
        pytest.skip("uv not on PATH")
    stub = tmp_path / "uv"
    stub.write_text(
        f'#!/bin/sh\nif [ "$1" = export ]; then exec {real_uv} "$@"; fi\necho "$@" >> {tmp_path}/calls\n'
    )
    stub.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "TORCH_INDEX": "https://example.invalid/cpu",
        "UV_PROJECT_ENVIRONMENT": "/app/.venv",
    }
    subprocess.run(
        ["sh", str(DOCKER_DIR / "uv-sync.sh"), "--no-install-workspace"], cwd=ROOT, env=env, check=True
    )
    sync, pip = (tmp_path / "calls").read_text().splitlines()
    skipped = set(re.findall(r"--no-install-package (\S+)", sync))
    assert {"torch", "torchvision", "triton", "nvidia-cublas", "nvidia-cudnn-cu13", "cuda-toolkit"} <= skipped
    assert all(re.match(r"(torch|torchvision|torchaudio|triton|nvidia-|cuda-)", s) for s in skipped), skipped
    assert "--frozen" in sync and "--no-dev" in sync and "--no-install-workspace" in sync
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    versions = {p["name"]: p["version"] for p in lock["package"]}
    assert pip.startswith(
        "pip install --python /app/.venv/bin/python --extra-index-url https://example.invalid/cpu"
    )
    assert (
        f"torch=={versions['torch']}" in pip.split()
        and f"torchvision=={versions['torchvision']}" in pip.split()
    )


# ---------------------------------------------------------------- the real image (slow, needs a docker daemon)


def _docker(*args, timeout=600, check=True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["nice", "-n", "15", "docker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        **kw,
    )


def _docker_unavailable() -> str | None:
    if shutil.which("docker") is None:
        return "no docker CLI (apt-get install docker.io)"
    try:
        r = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "docker info timed out"
    if r.returncode != 0:
        return "docker daemon not running (start dockerd): " + r.stderr.strip().splitlines()[-1][:200]
    have_base = (
        subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode == 0
    )
    if not have_base and (shutil.which("debootstrap") is None or os.geteuid() != 0):
        return f"no {BASE_IMAGE} image and no root debootstrap to make it (apt-get install debootstrap)"
    return None


@pytest.fixture(scope="module")
def image():
    reason = _docker_unavailable()
    if reason:
        pytest.skip(reason)
    t0 = time.monotonic()
    subprocess.run(
        ["nice", "-n", "15", str(DOCKER_DIR / "build-base.sh"), BASE_IMAGE], check=True, timeout=1800
    )
    t1 = time.monotonic()
    # the locked PyPI torch (TORCH_INDEX=): download.pytorch.org is not reachable from every CI box, PyPI is;
    # host network: the build needs PyPI, and the default bridge may have no route out
    build = _docker(
        "build", "--network", "host", "-f", str(DOCKERFILE), "-t", IMAGE,
        "--build-arg", f"BASE={BASE_IMAGE}", "--build-arg", "TORCH_INDEX=", str(ROOT),
        timeout=3600, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    t2 = time.monotonic()
    size = int(_docker("image", "inspect", "-f", "{{.Size}}", IMAGE).stdout.strip())
    print(f"\n[docker] base {t1 - t0:.0f} s, image build {t2 - t1:.0f} s, image size {size / 1e9:.2f} GB")
    return IMAGE


def _tiny_chat_model(dest: Path) -> Path:
    """A random 2-layer Qwen2 + the in-process tokenizer saved as a model dir (what the llm-chat tests use)."""
    sys.path.insert(0, str(ROOT / "packages" / "llm-chat" / "tests"))
    from llm_chat.model import build_tiny_tokenizer
    from llm_chat_testutils import make_tiny_model

    tok = build_tiny_tokenizer()
    make_tiny_model(tok).save_pretrained(dest)
    tok.save_pretrained(dest)
    # the container runs as uid 1000: the bind-mounted dir must be readable by others
    dest.chmod(0o755)
    for f in dest.iterdir():
        f.chmod(0o644)
    return dest


def _http(url: str, body: dict | None = None, key: str | None = None, timeout: float = 60):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.mark.slow
def test_container_serves_health_and_a_chat_completion(image, tmp_path):
    model_dir = _tiny_chat_model(tmp_path / "tinychat")
    sys.path.insert(0, str(ROOT / "packages" / "llm-chat" / "src"))
    from llm_chat.testing import free_port

    port, name, key = free_port(), f"loraworks-test-{os.getpid()}", "test-key"
    t0 = time.monotonic()
    # the offline-model volume's place: a bare --model_name_or_path resolves under ~/.cache/loraworks/models
    _docker(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", "-e", f"LLM_CHAT_API_KEY={key}",
        "-v", f"{model_dir}:{MODELS_IN_IMAGE}/tinychat:ro", image,
        "llm-chat", "serve", "--host", "0.0.0.0", "--port", "8000", "--model_name_or_path", "tinychat",
    )  # fmt: skip
    try:
        status, deadline = "starting", time.monotonic() + 600
        while status == "starting" and time.monotonic() < deadline:  # docker's HEALTHCHECK says healthy
            time.sleep(2)
            status = _docker("inspect", "-f", "{{.State.Health.Status}}", name, check=False).stdout.strip()
        logs = _docker("logs", name, check=False)
        assert status == "healthy", f"container {status}:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}"
        print(f"\n[docker] container start to healthy {time.monotonic() - t0:.1f} s")

        base = f"http://127.0.0.1:{port}"
        code, health = _http(f"{base}/health")
        assert code == 200 and health, health
        chat = {"model": "tinychat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
        code, err = _http(f"{base}/v1/chat/completions", chat)
        assert code == 401, err  # the key from the env var guards /v1 on the 0.0.0.0 bind
        code, out = _http(f"{base}/v1/chat/completions", chat, key=key)
        assert code == 200, out
        assert out["object"] == "chat.completion" and out["model"] == "tinychat"
        assert isinstance(out["choices"][0]["message"]["content"], str)
        assert 1 <= out["usage"]["completion_tokens"] <= 5
        user = _docker("exec", name, "id", "-u").stdout.strip()
        assert user != "0", "the server runs as root"
    finally:
        _docker("rm", "-f", name, check=False)


@pytest.mark.slow
def test_container_trains_an_app(image):
    # any app's train runs in the image: llm-chat's CPU smoke config, output inside the container
    r = _docker(
        "run", "--rm", "--no-healthcheck", image,
        "sh", "-c", "llm-chat train --config tiny --output_dir out && ls out",
        timeout=900, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert {"adapter_model.safetensors", "resolved_config.yaml", "metrics.json"} <= set(r.stdout.split())
