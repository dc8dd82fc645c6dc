"""A bare `llm-chat` without the hub: newest trained run, else the best offline model; fp32 on CPUs without bf16."""

import os
import time

import pytest
from llm_chat import cli
from llm_chat import model as M
from llm_chat.cli import main
from llm_chat_testutils import make_tiny_model


@pytest.fixture()
def no_hub(tmp_path, monkeypatch):
    """A working dir with nothing in it, an empty models dir and HF cache, and a hub that does not answer."""
    import huggingface_hub.constants as hf_constants
    from lora_shared import models as shared_models

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("LORAWORKS_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(shared_models, "hub_reachable", lambda timeout=3.0: False)
    return tmp_path


def save_tiny_model(path, tokenizer, dtype=None):
    """A tiny random Qwen2 + the in-process ChatML tokenizer as a model dir (what `make models` would leave)."""
    model = make_tiny_model(tokenizer)
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_run(run, base, tokenizer, app_group="ChatModelArgs"):
    """A finished llm-chat run dir: adapter_model.safetensors + resolved_config.yaml naming its base."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(make_tiny_model(tokenizer), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(run)
    (run / "resolved_config.yaml").write_text(
        f"# Resolved config of this run.\n\n# {app_group}\nmodel_name_or_path: {base}\n", encoding="utf-8"
    )
    return run


def test_names_no_model():
    assert cli.names_no_model([])
    assert cli.names_no_model(["chat"])
    assert cli.names_no_model(["--prompt", "hi", "--max_new_tokens", "3"])
    assert cli.names_no_model(["chat", "--temperature=0"])
    for argv in (
        ["--adapter_dir", "x"],
        ["chat", "--model_name_or_path=x"],
        ["--config", "tiny"],
        ["chat", "--model_type", "qwen2"],
        ["train"],
        ["serve"],
        ["--help"],
    ):
        assert not cli.names_no_model(argv), argv


def test_bare_chat_without_anything_keeps_todays_error(no_hub, capsys):
    assert main(["--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert "llm-chat chat: error: no model available" in err and "--config tiny" in err
    assert "chatting with" not in err and "Traceback" not in err


def test_bare_chat_picks_the_best_offline_model(no_hub, tokenizer, capsys):
    models = no_hub / "models"
    save_tiny_model(models / "smollm2-135m-instruct", tokenizer)
    save_tiny_model(models / "qwen2.5-coder-0.5b-instruct", tokenizer)
    assert main(["--prompt", "hi", "--max_new_tokens", "3", "--temperature", "0"]) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "chatting with" in x)
    assert line == (
        "[llm-chat] Qwen/Qwen2.5-0.5B-Instruct cannot be loaded here (hub unreachable, not in the local cache): "
        "chatting with the offline model qwen2.5-coder-0.5b-instruct (the best one `make models` built; "
        "no usable trained llm-chat run under outputs/)"
    )
    assert "base model qwen2.5-coder-0.5b-instruct" in err  # chat's own line: what it loaded
    save_tiny_model(models / "qwen2.5-coder-1.5b-instruct", tokenizer)
    assert cli.fallback_model()[0] == ["--model_name_or_path", "qwen2.5-coder-1.5b-instruct"]


def test_bare_chat_prefers_the_newest_trained_llm_chat_run(no_hub, tokenizer, capsys):
    base = save_tiny_model(no_hub / "base", tokenizer)
    save_tiny_model(no_hub / "models" / "smollm2-135m-instruct", tokenizer)
    runs = no_hub / "work" / "outputs"
    old = save_tiny_run(runs / "old", base, tokenizer)
    new = save_tiny_run(runs / "nested" / "new", base, tokenizer)
    save_tiny_run(runs / "other-app", base, tokenizer, app_group="ClsModelArgs")  # not llm-chat
    save_tiny_run(runs / "lost-base", no_hub / "gone", tokenizer)  # its base is not here
    (runs / "half").mkdir()
    (runs / "half" / "resolved_config.yaml").write_text(
        "# ChatModelArgs\nmodel_name_or_path: x\n"
    )  # no adapter
    now = time.time()
    for i, run in enumerate((old, new, runs / "other-app", runs / "lost-base")):
        os.utime(run / "adapter_model.safetensors", (now + i, now + i))

    assert [r.name for r, _ in cli.trained_runs(cli.RUNS_DIR)] == ["lost-base", "new", "old"]
    assert cli.fallback_model()[0] == ["--adapter_dir", "outputs/nested/new"]
    assert main(["chat", "--prompt", "hi", "--max_new_tokens", "3", "--temperature", "0"]) == 0
    err = capsys.readouterr().err
    assert f"chatting with the newest trained llm-chat run outputs/nested/new (base {base})" in err
    assert "adapter outputs/nested/new on" in err


def test_explicit_model_is_never_replaced(no_hub, tokenizer, capsys):
    save_tiny_model(no_hub / "models" / "qwen2.5-coder-0.5b-instruct", tokenizer)
    assert main(["--model_name_or_path", "qwen2.5-coder-1.5b-instruct", "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert "chatting with" not in err and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if "error" in x]
    assert line == (
        f"llm-chat chat: error: offline model 'qwen2.5-coder-1.5b-instruct' is not built in {no_hub / 'models'}: "
        "run `loraworks-models --with qwen2.5-coder-1.5b-instruct` "
        '(or `make models ARGS="--with qwen2.5-coder-1.5b-instruct"`)'
    )


def test_hub_or_cached_default_means_no_fallback(no_hub, tokenizer, monkeypatch):
    from lora_shared import models as shared_models

    save_tiny_model(no_hub / "models" / "qwen2.5-coder-0.5b-instruct", tokenizer)
    monkeypatch.setattr(shared_models, "hub_reachable", lambda timeout=3.0: True)
    assert cli.with_fallback_model(["--prompt", "x"]) == ["--prompt", "x"]
    monkeypatch.setattr(shared_models, "hub_reachable", lambda timeout=3.0: False)
    snapshot = no_hub / "hf-cache" / "models--Qwen--Qwen2.5-0.5B-Instruct"
    (snapshot / "refs").mkdir(parents=True)
    (snapshot / "refs" / "main").write_text("abc")
    (snapshot / "snapshots" / "abc").mkdir(parents=True)
    (snapshot / "snapshots" / "abc" / "config.json").write_text("{}")
    assert cli.with_fallback_model(["chat"]) == ["chat"]  # cached: today's path loads it offline
    (snapshot / "snapshots" / "abc" / "config.json").unlink()
    assert cli.with_fallback_model(["chat"])[:3] == [
        "chat",
        "--model_name_or_path",
        "qwen2.5-coder-0.5b-instruct",
    ]


# ---------------------------------------------------------------------------------------------- dtype
def test_inference_dtype_follows_the_cpu_bf16_probe(monkeypatch, caplog):
    import torch
    from lora_shared import config as shared_config

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(shared_config, "cpu_has_native_bf16", lambda: False)
    assert M.inference_dtype("auto", cpu) == "float32"
    assert M.inference_dtype("float32", cpu) == "float32"
    assert M.inference_dtype("auto", cuda) == "auto"
    with caplog.at_level("WARNING"):
        assert (
            M.inference_dtype("bfloat16", cpu) == "bfloat16"
        )  # explicit: kept (half the memory), but warned
    assert "~5x slower" in caplog.text
    monkeypatch.setattr(shared_config, "cpu_has_native_bf16", lambda: True)
    assert M.inference_dtype("auto", cpu) == "auto"


@pytest.mark.parametrize(("native_bf16", "expected"), [(False, "float32"), (True, "bfloat16")])
def test_bf16_saved_model_is_upcast_on_cpus_without_bf16(
    tmp_path, tokenizer, monkeypatch, native_bf16, expected
):
    import torch
    from lora_shared import config as shared_config

    path = save_tiny_model(tmp_path / "bf16-model", tokenizer, dtype=torch.bfloat16)
    monkeypatch.setattr(shared_config, "cpu_has_native_bf16", lambda: native_bf16)
    model, _ = M.load_for_inference(str(path), device=torch.device("cpu"))
    assert {p.dtype for p in model.parameters()} == {getattr(torch, expected)}
