"""Every app's `--help`: its own flags first, under 200 lines, no torch import; `--help-all`; typo hints (issue 18)."""

import importlib
import os
import subprocess
import sys

import pytest
from lora_shared import helptext

APPS = ["vision-cls", "vision-det", "vision-pose", "text-classifier", "llm-chat"]


def _app(name: str):
    return importlib.import_module(f"{name.replace('-', '_')}.cli")


@pytest.mark.parametrize("name", APPS)
def test_train_help_is_short_own_flags_first_and_imports_no_torch(name):
    mod = name.replace("-", "_")
    code = (
        "import io, sys, contextlib;"
        f"from {mod}.cli import main;"
        "pages = []\n"
        "for flag in ('--help', '--help-all'):\n"
        "    buf = io.StringIO()\n"
        "    with contextlib.redirect_stdout(buf):\n"
        "        assert main(['train', flag]) == 0\n"
        "    pages.append(buf.getvalue())\n"
        "heavy = {'torch', 'transformers', 'peft'} & set(sys.modules); assert not heavy, heavy\n"
        "print(pages[0]); print('=====PAGE====='); print(pages[1])"
    )
    env = {**os.environ, "COLUMNS": "100"}  # what a pipe or file gets; an 80-column terminal: about 10% more
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr
    short, full = out.stdout.split("=====PAGE=====")
    lines = short.strip().splitlines()
    assert len(lines) < 200, len(lines)

    def at(flag):
        return next(i for i, ln in enumerate(lines) if ln.lstrip().startswith(flag + " "))

    assert max(at("--model_name_or_path"), at("--dataset"), at("--lora_r")) < at("--learning_rate")
    assert at("--learning_rate") < at("--report_to")
    if name != "vision-pose":  # it reads no hub data; the others' lora_shared.hubdata flags follow --dataset
        assert at("--dataset") < at("--dataset_config") < at("--dataset_test_split") < at("--lora_r")
    assert f"`{name} train --help-all` lists all" in lines[-1]
    assert "--ddp_timeout" not in short and "--ddp_timeout INT" in full


@pytest.mark.parametrize("name", APPS)
def test_source_reading_matches_the_classes(name):
    """The fast (no-import) reading of every config tuple the app's commands use equals the real classes'."""
    app = _app(name).APP
    refs = {app.config_types} | {c.extra_types for c in app.commands if c.extra_types}
    for ref in sorted(refs):
        mod, _, attr = ref.partition(":")
        fast = [helptext._group_from_source(m, n) for m, n in helptext._tuple_classes(mod, attr)]
        slow = helptext.groups_from_classes(getattr(importlib.import_module(mod), attr))
        assert [g.name for g in fast] == [g.name for g in slow], ref
        for a, b in zip(fast, slow, strict=True):
            assert a.doc == b.doc, a.name
            assert [f.name for f in a.fields] == [f.name for f in b.fields], a.name
            for fa, fb in zip(a.fields, b.fields, strict=True):
                assert (fa.help, fa.owner_module) == (fb.help, fb.owner_module), fa.name
                # transformers computes `optim`'s default from the torch version: the source cannot know it.
                computed = fa.name == "optim" and fa.default == helptext.COMPUTED
                assert fa.default == fb.default or computed, (fa.name, fa.default, fb.default)


@pytest.mark.parametrize("name", APPS)
def test_a_misspelt_flag_suggests_the_right_one(name, capsys):
    assert _app(name).main(["train", "--learnig_rate", "1e-4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"{name} train: error: unknown flag --learnig_rate; did you mean --learning_rate? (`--help` lists the flags)"
    ]


@pytest.mark.parametrize("command", ["serve", "webui"])
def test_serve_and_webui_show_their_own_flags_first(command, capsys):
    assert _app("llm-chat").main([command, "--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    port = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("--port "))
    assert port < 60 and port < next(i for i, ln in enumerate(lines) if "--model_name_or_path" in ln)


def test_llm_chat_help_all_picks_no_fallback_model():
    """`llm-chat chat --help-all` is a help page: no model look-up (and no "chatting with ..." line) first."""
    assert not _app("llm-chat").names_no_model(["chat", "--help-all"])
