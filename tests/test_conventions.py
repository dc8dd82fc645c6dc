"""Cross-package conventions: every app has the same shape, CLI verbs, configs and dependency range."""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APPS = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
MODULES = ["config", "data", "model", "metrics", "train", "predict", "cli"]


def _implemented(app: Path) -> bool:
    mod = app.name.replace("-", "_")
    return (app / "src" / mod / "cli.py").is_file()


def test_top_level_layout():
    names = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")}
    expected = {"packages", "shared", "tools", "tests", "Makefile", "uv.lock", "pyproject.toml", "README.md"}
    assert expected <= names
    extra = names - expected - {"BENCHMARKS.md", "bench", "outputs", "dist"}
    assert not extra, f"unexpected top-level entries: {extra}"


def test_all_five_apps_are_members():
    assert [a.name for a in APPS] == [
        "llm-chat",
        "text-classifier",
        "vision-cls",
        "vision-det",
        "vision-pose",
    ]
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert set(root["project"]["dependencies"]) >= {a.name for a in APPS} | {"lora-shared"}


@pytest.mark.parametrize("app", APPS, ids=lambda p: p.name)
def test_package_metadata(app):
    meta = tomllib.loads((app / "pyproject.toml").read_text())
    mod = app.name.replace("-", "_")
    assert meta["project"]["scripts"] == {app.name: f"{mod}.cli:main"}
    shared = [d for d in meta["project"]["dependencies"] if d.startswith("lora-shared")]
    assert shared == ["lora-shared>=0.1,<0.2"]
    assert (
        meta["project"]["requires-python"]
        == tomllib.loads((ROOT / "shared/pyproject.toml").read_text())["project"]["requires-python"]
    )


@pytest.mark.parametrize("app", [a for a in APPS if _implemented(a)], ids=lambda p: p.name)
def test_same_modules_configs_and_verbs(app):
    mod = app.name.replace("-", "_")
    src = app / "src" / mod
    for m in MODULES:
        assert (src / f"{m}.py").is_file(), f"{app.name} lacks {m}.py"
    assert (src / "configs" / "default.yaml").is_file() and (src / "configs" / "tiny.yaml").is_file()
    tree = ast.parse((src / "cli.py").read_text())
    verbs = {
        n.args[0].value
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and getattr(n.func, "id", None) == "Command"
        and n.args
        and isinstance(n.args[0], ast.Constant)
    }
    assert {"train", "eval", "predict", "export"} <= verbs, verbs
    assert list(app.glob("tests/test_*.py")), f"{app.name} has no tests"


def test_shared_imports_no_app():
    apps = {a.name.replace("-", "_") for a in APPS}
    for py in (ROOT / "shared" / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.split(".")[0] in apps for n in names), f"{py} imports an app"


@pytest.mark.parametrize("app", [a for a in APPS if _implemented(a)], ids=lambda p: p.name)
def test_bare_cli_prints_help_without_heavy_imports(app):
    mod = app.name.replace("-", "_")
    code = (
        f"import sys; from {mod}.cli import APP; from lora_shared.cli import run_app; run_app(APP, ['--help']);"
        "heavy = {'torch', 'transformers'} & set(sys.modules); assert not heavy, heavy"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "bundled configs:" in out.stdout and "tiny" in out.stdout


@pytest.mark.parametrize("app", APPS)
def test_train_gathers_weights_on_every_rank_before_the_rank0_save(app):
    """Under FSDP / ZeRO-3 the gather is a collective: it must run on all ranks, before `save_adapter`."""
    src = next((app / "src").glob("*/train.py")).read_text()
    body = src[src.index("def train(") :]
    assert "state = full_state_dict(trainer)" in body and "state_dict=state" in body
    assert body.index("full_state_dict(trainer)") < body.index("is_world_process_zero")
