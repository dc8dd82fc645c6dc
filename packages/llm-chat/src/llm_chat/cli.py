"""llm-chat command line: chat | train | eval | predict | compare | export | serve | webui.

llm-chat train --config tiny --output_dir /tmp/t
llm-chat chat --adapter_dir /tmp/t            # or just `llm-chat`: the REPL is the default command
llm-chat compare --adapter_dir outputs/llm-chat-offline
"""

from __future__ import annotations

from lora_shared.cli import App, Command, run_app

APP = App(
    prog="llm-chat",
    description="LoRA SFT for chat LLMs (any AutoModelForCausalLM with a chat template), streaming chat.",
    config_package="llm_chat.configs",
    config_types="llm_chat.config:CONFIG_TYPES",
    default_command="chat",
    epilog="`llm-chat` alone opens the chat REPL (the one command that runs without a subcommand).",
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
            "llm_chat.train:evaluate",
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
            "llm_chat.train:compare",
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
            "llm_chat.serve:serve",
            extra_types="llm_chat.config:SERVE_TYPES",
            default_config="default",
        ),
        Command(
            "webui",
            "Gradio chat web UI on 127.0.0.1",
            "llm_chat.webui:webui",
            extra_types="llm_chat.config:SERVE_TYPES",
            default_config="default",
        ),
    ],
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `llm-chat` console script."""
    return run_app(APP, argv)


if __name__ == "__main__":
    raise SystemExit(main())
