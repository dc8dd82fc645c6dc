"""Every bundled config parses; unknown keys fail; --help works for every command."""

from importlib import resources

import pytest
from llm_chat.cli import APP, main
from lora_shared.cli import build_config

CONFIGS = sorted(
    p.name[:-5] for p in resources.files("llm_chat.configs").iterdir() if p.name.endswith(".yaml")
)


@pytest.mark.parametrize("name", CONFIGS)
def test_bundled_config_parses(name):
    cmd = next(c for c in APP.commands if c.name == "train")
    cfg, _ = build_config(APP, cmd, ["--config", name])
    assert cfg.lora.lora_alpha >= cfg.lora.lora_r
    assert cfg.train.max_length and cfg.train.output_dir


def test_defaults_are_the_issue_s():
    cmd = next(c for c in APP.commands if c.name == "train")
    cfg, _ = build_config(APP, cmd, ["--config", "default"])
    assert cfg.model.model_name_or_path == "Qwen/Qwen2.5-0.5B-Instruct"
    assert (cfg.lora.lora_r, cfg.lora.lora_alpha, cfg.lora.lora_dropout) == (8, 32, 0.1)
    assert cfg.train.packing and not cfg.train.bf16
    # TRL's SFTConfig turns gradient checkpointing on; it costs a recomputed forward that small models don't need
    assert cfg.train.gradient_checkpointing is False
    on, _ = build_config(APP, cmd, ["--config", "default", "--gradient_checkpointing", "true"])
    assert on.train.gradient_checkpointing is True


def test_unknown_yaml_key_fails(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 1.0e-3\nlernin_rate: 2\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "lernin_rate" in capsys.readouterr().err


def test_serve_args_env_key(monkeypatch):
    from llm_chat.config import ServeArgs, get_group

    monkeypatch.setenv("LLM_CHAT_API_KEY", "k")
    assert ServeArgs().api_key == "k"
    cmd = next(c for c in APP.commands if c.name == "serve")
    cfg, _ = build_config(APP, cmd, ["--config", "tiny", "--port", "9001", "--adapters", "a", "b"])
    serve = get_group(cfg, ServeArgs)
    assert (serve.host, serve.port, serve.adapters) == ("127.0.0.1", 9001, ["a", "b"])


@pytest.mark.parametrize("command", [c.name for c in APP.commands])
def test_help(command, capsys):
    assert main([command, "--help"]) == 0
    assert "--config" in capsys.readouterr().out


def test_top_help_lists_configs(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "bundled configs: default, offline, tiny" in out and "chat" in out
