"""llm-chat command line: chat | train | eval | predict | compare | export | serve | webui.

llm-chat train --config tiny --output_dir /tmp/t
llm-chat chat --adapter_dir /tmp/t            # or just `llm-chat`: the REPL is the default command
llm-chat compare --adapter_dir outputs/llm-chat-offline

A bare `llm-chat` whose default model cannot load here (hub unreachable, not cached) chats with the newest
trained llm-chat run under outputs/, else with the best offline model `make models` built.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lora_shared.cli import App, Command, run_app

APP = App(
    prog="llm-chat",
    description="LoRA SFT for chat LLMs (any AutoModelForCausalLM with a chat template), streaming chat.",
    config_package="llm_chat.configs",
    config_types="llm_chat.config:CONFIG_TYPES",
    default_command="chat",
    epilog="`llm-chat` alone opens the chat REPL (the one command that runs without a subcommand). When its "
    "default model cannot load (no hub, not cached), it chats with the newest trained run under outputs/, "
    "else the best offline model from `make models`.",
    commands=[
        Command(
            "chat",
            "streaming chat REPL (/reset, /system TEXT, /exit) or one --prompt; the default command",
            "llm_chat.predict:chat",
            extra_types="llm_chat.config:PREDICT_TYPES",
            default_config="default",
        ),
        Command(
            "train",
            "supervised fine-tuning with LoRA (loss on assistant turns); writes adapter, tokenizer, metrics",
            "llm_chat.train:train",
            uses_adapter=False,
            default_config="default",
        ),
        Command(
            "eval",
            "score an adapter on held-out sets: accuracy / exact match, ROUGE-L, BLEU, keywords, perplexity",
            "llm_chat.evaluate:evaluate",
            extra_types="llm_chat.config:PREDICT_TYPES",
        ),
        Command(
            "predict",
            "answer prompts (arguments, or a .txt/.jsonl file of them); --json for JSON lines",
            "llm_chat.predict:predict",
            inputs="PROMPT|FILE",
            extra_types="llm_chat.config:PREDICT_TYPES",
        ),
        Command(
            "compare",
            "base vs adapter on held-out questions: keyword match, completeness, latency (table + JSON)",
            "llm_chat.evaluate:compare",
            extra_types="llm_chat.config:PREDICT_TYPES",
        ),
        Command(
            "export",
            "merge the adapter into the base model (standalone safetensors dir + tokenizer)",
            "llm_chat.predict:export",
            extra_types="llm_chat.config:PREDICT_TYPES",
        ),
        Command(
            "serve",
            "OpenAI-compatible HTTP API (/v1/chat/completions, streaming) on 127.0.0.1",
            "llm_chat.serving.server:serve",
            extra_types="llm_chat.config:SERVE_TYPES",
            default_config="default",
        ),
        Command(
            "webui",
            "Gradio chat web UI on 127.0.0.1",
            "llm_chat.serving.server:webui",
            extra_types="llm_chat.config:SERVE_TYPES",
            default_config="default",
        ),
    ],
)


# ------------------------------------------------------------------------------- bare `llm-chat` offline
# Best first: what a bare `llm-chat` falls back to when no trained run is usable (loraworks_models.registry).
FALLBACK_MODELS = ("qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct")
RUNS_DIR = Path("outputs")  # where `train` writes runs by default, relative to the working directory
_MODEL_FLAGS = ("--adapter_dir", "--model_name_or_path", "--model_type", "--config")
_RUN_MARK = "# ChatModelArgs"  # the model group's header in an llm-chat run's resolved_config.yaml


def names_no_model(argv: list[str]) -> bool:
    """`llm-chat` / `llm-chat chat` with no flag that picks a model (chat options such as --prompt are fine)."""
    if argv and argv[0] != "chat" and not argv[0].startswith("-"):
        return False
    if any(a in ("-h", "--help", "--help-all", "-V", "--version") for a in argv):
        return False
    return not any(a.split("=", 1)[0] in _MODEL_FLAGS for a in argv)


def model_available(name_or_path: str) -> bool:
    """Loadable here: a local dir, a built offline model, a hub id when the hub answers or in the HF cache."""
    from lora_shared.errors import UsageError
    from lora_shared.models import hub_reachable, resolve_model_path

    try:
        source = resolve_model_path(name_or_path)
    except UsageError:  # a missing local dir, an offline model not built
        return False
    if Path(source).is_dir() or hub_reachable():
        return True
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(source, "config.json"), str)


def trained_runs(root: Path = RUNS_DIR) -> list[tuple[Path, str | None]]:
    """(run dir, its base model) of every finished llm-chat run under `root`, newest adapter first."""
    import yaml

    found = []
    for config in root.rglob("resolved_config.yaml") if root.is_dir() else ():
        run = config.parent
        adapter = next(
            (
                d / "adapter_model.safetensors"
                for d in (run, run / "adapter")
                if (d / "adapter_model.safetensors").is_file()
            ),
            None,
        )
        try:
            text = config.read_text(encoding="utf-8")
            if adapter is None or _RUN_MARK not in text.splitlines():
                continue  # a checkpoint, an unfinished run, another app's run
            values = yaml.safe_load(text) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        base = values.get("model_name_or_path") if not values.get("model_type") else None
        found.append((adapter.stat().st_mtime, run, base))
    return [(run, base) for _, run, base in sorted(found, key=lambda t: t[0], reverse=True)]


def fallback_model(runs_root: Path = RUNS_DIR) -> tuple[list[str], str] | None:
    """(flags to add, which and why) for a bare `llm-chat` that cannot load its default model; None if nothing."""
    from lora_shared.models import models_dir

    for run, base in trained_runs(runs_root):
        if base and model_available(base):
            return ["--adapter_dir", str(run)], f"the newest trained llm-chat run {run} (base {base})"
    for name in FALLBACK_MODELS:
        if (models_dir() / name / "config.json").is_file():
            return (
                ["--model_name_or_path", name],
                f"the offline model {name} (the best one `make models` built; no usable trained llm-chat run "
                f"under {runs_root}/)",
            )
    return None


def with_fallback_model(argv: list[str]) -> list[str]:
    """argv, plus the model to chat with when a bare `llm-chat` cannot load the default config's model here."""
    import yaml
    from lora_shared.config import find_config
    from lora_shared.errors import UsageError

    chat = next(c for c in APP.commands if c.name == "chat")
    if not chat.default_config:
        return argv
    try:
        path = find_config(chat.default_config, APP.config_package)
        default = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("model_name_or_path")
    except (UsageError, OSError, yaml.YAMLError):
        return argv
    if not default or model_available(default):
        return argv
    choice = fallback_model()
    if choice is None:
        return argv  # nothing here to chat with: chat explains what to do
    flags, which = choice
    print(
        f"[llm-chat] {default} cannot be loaded here (hub unreachable, not in the local cache): chatting with {which}",
        file=sys.stderr,
    )
    return ["chat", *flags, *(argv[1:] if argv and argv[0] == "chat" else argv)]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `llm-chat` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if names_no_model(argv):
        argv = with_fallback_model(argv)
    return run_app(APP, argv)


if __name__ == "__main__":
    raise SystemExit(main())
