"""llm-chat config: four dataclass groups (model, data, LoRA, training) + chat/serve options, flat namespace."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from lora_shared.config import LoraArgs, ModelArgs, TrainDefaults, TrainExtras
from lora_shared.hubdata import HubDataArgs
from transformers import TrainingArguments

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# trl.SFTConfig fields that ChatTrainingArguments inherited (trl 1.16, the only version ever locked) and
# nothing here read.
RETIRED_SFT_FIELDS = (
    "model_init_kwargs",
    "router_aux_loss_coef",
    "dataset_text_field",
    "dataset_kwargs",
    "dataset_num_proc",
    "eos_token",
    "pad_token",
    "truncation_mode",
    "shuffle_dataset",
    "packing_strategy",
    "padding_free",
    "pad_to_multiple_of",
    "eval_packing",
    "completion_only_loss",
    "assistant_only_loss",
    "loss_type",
    "activation_offloading",
)


@dataclass
class ChatModelArgs(ModelArgs):
    """Base causal LM (any AutoModelForCausalLM with a chat template, or one supplied by --chat_template_path)."""

    model_name_or_path: str | None = field(
        default="Qwen/Qwen2.5-0.5B-Instruct",
        metadata={"help": "Hub id, local directory, or a name under the offline models dir (`make models`)."},
    )
    torch_dtype: str = field(
        default="auto",
        metadata={"help": "Weights dtype for inference: auto | float32 | bfloat16 | float16."},
    )
    attn_implementation: str = field(
        default="sdpa",
        metadata={
            "help": "Attention kernel: sdpa | eager | flash_attention_2 (packing is checked for each)."
        },
    )
    load_in_4bit: bool = field(
        default=False, metadata={"help": "QLoRA: load the base in 4-bit NF4 (bitsandbytes, CUDA only)."}
    )


@dataclass
class ChatDataArgs(HubDataArgs):
    """Where dialogs come from."""

    dataset: str = field(
        default="customer_service",
        metadata={
            "help": "Comma list of built-in sets (customer_service, banking, multitask), .jsonl/.json files "
            "(OpenAI messages, ShareGPT, Alpaca), hub dataset ids (user/name) and json|parquet (load_dataset "
            "builders, with --data_files)."
        },
    )
    # The other load_dataset flags come from HubDataArgs; this one names the builders this app reads.
    data_files: list[str] | None = field(
        default=None,
        metadata={
            "help": "Files of --dataset json|parquet: PATH or SPLIT=PATH, several allowed "
            "(train=a.jsonl validation=b.jsonl)."
        },
    )
    messages_column: str | None = field(
        default=None,
        metadata={
            "help": "Column holding each dialog's turns in a hub / load_dataset --dataset; default: found by "
            "name (messages, conversations, ...) or Alpaca's instruction/output columns."
        },
    )
    eval_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Held-out data (same forms); default: the built-in sets' test splits + a split of files."
        },
    )
    data_format: str = field(
        default="auto", metadata={"help": "Record format of files: auto | openai | sharegpt | alpaca."}
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message added to records that have none (train and chat)."}
    )
    val_fraction: float = field(
        default=0.1, metadata={"help": "Held-out fraction of files without a separate eval set, 0..1."}
    )
    skip_bad_records: bool = field(
        default=False,
        metadata={"help": "Skip invalid records (and count them) instead of exiting with file:line."},
    )
    max_dialog_chars: int = field(
        default=1_000_000,  # = data.MAX_DIALOG_CHARS: far past any context length a run trains on
        metadata={
            "help": "Max message text per dialog; a longer one exits 2 with file:line. Characters, 0 = no cap."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on training dialogs."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on held-out dialogs."})


@dataclass
class ChatLoraArgs(LoraArgs):
    """LoraArgs with this app's defaults: r=8, alpha=32, dropout 0.1 on every attention + MLP projection."""

    lora_r: int = field(default=8, metadata={"help": "LoRA rank r (adapter width)."})
    lora_alpha: int = field(
        default=32, metadata={"help": "LoRA scaling alpha; the update is scaled by alpha/r."}
    )
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(ALL_PROJECTIONS),
        metadata={"help": "Module names (or suffixes) to adapt, or 'all-linear'."},
    )


@dataclass
class ChatTrainingArguments(TrainExtras, TrainDefaults, TrainingArguments):
    """transformers.TrainingArguments plus the three SFT fields our code reads (max_length, packing,
    chat_template_path), with these changed defaults: output_dir=outputs/llm-chat, learning_rate=2e-4,
    num_train_epochs=3, per_device_train/eval_batch_size=8, eval/save per epoch, logging_steps=5,
    save_total_limit=2, remove_unused_columns=False, warmup_ratio=0.05 (our field: transformers 5 has only
    warmup_steps, which this sets to the fraction). bf16 and gradient_checkpointing keep
    transformers' defaults (off); their help says when to turn them on.
    The loss is always on assistant tokens only (data.tokenize_dialog masks the rest, for any chat template),
    so there is no assistant_only_loss flag. Not trl.SFTConfig: training runs the plain Trainer with our own
    masking and packing, and SFTTrainer could not replace them (it refuses a custom collator with padding-free
    packing, and its assistant-only masking raises on templates without `{% generation %}` markers it cannot
    patch, such as SmolLM2's), so its other flags would do nothing here."""

    # Retired SFTConfig fields that runs trained before this class existed still list in their
    # resolved_config.yaml; dropped when such a run is reloaded (eval, chat, ...), an error anywhere else.
    retired_fields: ClassVar[frozenset[str]] = frozenset(RETIRED_SFT_FIELDS)

    output_dir: str | None = field(
        default="outputs/llm-chat", metadata={"help": "Run directory (adapter, tokenizer, metrics, plots)."}
    )
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate (AdamW)."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs over the training dialogs."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Dialogs per step per device."})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Eval dialogs per device."})
    max_length: int | None = field(
        default=1024,
        metadata={
            "help": "Max tokens per dialog (longer ones are cut; all-prompt ones dropped); also eval's "
            "perplexity dialogs, and the row length when packing must mask (eager attention). Tokens."
        },
    )
    packing: bool = field(
        default=True,
        metadata={
            "help": "Padding-free packing: the batch's dialogs in one row, attention per dialog (sdpa runs "
            "as sdpa_varlen, one call per dialog); falls back to padding if the model's attention mixes them."
        },
    )
    chat_template_path: str | None = field(
        default=None,
        metadata={
            "help": "Chat template for a tokenizer that has none (or to replace its own): chatml | a Jinja file."
        },
    )
    logging_steps: float = field(default=5, metadata={"help": "Log every N steps."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep False: the collator reads our tokenised columns."}
    )
    warmup_ratio: float = field(default=0.05, metadata={"help": "Fraction of steps for LR warm-up."})
    bf16: bool = field(
        default=False,
        metadata={
            "help": "bf16 autocast (CUDA, or CPUs with AVX512-BF16: ~3x faster matmuls); master weights fp32."
        },
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute activations in backward: less memory, ~1.3x step time (big models)."},
    )

    def __post_init__(self):
        # transformers 5 dropped TrainingArguments.warmup_ratio (the field above was read by nothing); its
        # warmup_steps takes a fraction below 1 instead. An explicit --warmup_steps wins, as it used to.
        if self.warmup_ratio > 0 and not self.warmup_steps:  # a bad value is left to validate_args
            self.warmup_steps = min(self.warmup_ratio, math.nextafter(1.0, 0.0))  # 1.0 would mean 1 step
        super().__post_init__()


@dataclass
class ChatPredictArgs:
    """Options of `chat`, `predict`, `eval`, `compare` and `export` (generation and reports)."""

    prompt: str | None = field(
        default=None,
        metadata={"help": "chat: answer this one prompt (streamed) and exit instead of the REPL."},
    )
    system: str | None = field(default=None, metadata={"help": "System message for chat/predict."})
    max_new_tokens: int = field(default=256, metadata={"help": "Max tokens generated per answer."})
    temperature: float = field(
        default=0.7, metadata={"help": "Sampling temperature; 0 = greedy (eval/compare always use greedy)."}
    )
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling mass, 0..1."})
    top_k: int = field(default=50, metadata={"help": "Sample from the k most likely tokens (0 = off)."})
    repetition_penalty: float = field(default=1.1, metadata={"help": "Penalty > 1 discourages repeats."})
    score_repetition_penalty: float = field(
        default=1.0,
        metadata={
            "help": "eval/compare: repetition penalty of the scored greedy answers. 1.0 = plain greedy, the "
            "usual way to score; chat's 1.1 also penalises every prompt token and, in byte-level vocabularies "
            "(SmolLM2), the byte tokens Chinese characters share, which derails recalled answers."
        },
    )
    stop: list[str] = field(default_factory=list, metadata={"help": "Extra stop strings."})
    json: bool = field(default=False, metadata={"help": "predict: print one JSON object per prompt."})
    questions: str | None = field(
        default=None,
        metadata={
            "help": "compare: JSONL of {question, keywords[, reference]}; default: built-in banking test."
        },
    )
    eval_tasks: str = field(
        default="multitask,banking,customer_service",
        metadata={"help": "eval: comma list of built-in held-out sets to score (or a JSONL path)."},
    )
    eval_mode: str = field(
        default="accuracy",
        metadata={
            "help": "eval: accuracy (score every held-out item against its expected answer, per task) | tasks "
            "(a few items per task, answers beside the expected ones) | interactive (stdin lines, /task N picks "
            "the multi-task task) | sequence (tasks, accuracy, then interactive)."
        },
    )
    examples_per_task: int = field(
        default=3, metadata={"help": "eval --eval_mode tasks|sequence: held-out items shown per task."}
    )
    base_only: bool = field(
        default=False,
        metadata={
            "help": "eval/compare: score the base model alone (no adapter needed; with --adapter_dir, its base); "
            "writes base_eval_* / base_compare.* files with base_* keys."
        },
    )
    with_base: bool = field(
        default=False,
        metadata={
            "help": "eval: also score the base model (adapter off): base_* keys beside the tuned ones, per task."
        },
    )
    max_eval_items: int | None = field(
        default=None, metadata={"help": "eval/compare: cap per set (quick runs)."}
    )
    eval_batch_size: int = field(
        default=8,
        metadata={"help": "eval: answers generated per batch (greedy, left-padded; 1 = one at a time)."},
    )
    export_dir: str | None = field(
        default=None,
        metadata={"help": "Where `export` writes the merged model (default: <adapter_dir>/merged)."},
    )


@dataclass
class ServeArgs:
    """Options of `serve` (OpenAI-compatible API) and `webui` (Gradio)."""

    host: str = field(default="127.0.0.1", metadata={"help": "Bind address (keep 127.0.0.1 unless proxied)."})
    port: int = field(default=8000, metadata={"help": "TCP port."})
    api_key: str | None = field(
        default=None,
        metadata={"help": "Bearer token clients must send (default: $LLM_CHAT_API_KEY, else none)."},
    )
    max_queue: int = field(default=64, metadata={"help": "Requests waiting for the model before 429."})
    max_tokens_limit: int = field(default=2048, metadata={"help": "Upper bound on a request's max_tokens."})
    max_messages: int = field(default=128, metadata={"help": "Upper bound on messages per request."})
    max_request_bytes: int = field(
        default=1_000_000, metadata={"help": "Upper bound on a request body, bytes."}
    )
    adapters: list[str] = field(
        default_factory=list,
        metadata={"help": "Extra adapter dirs to serve side by side (model name = dir name)."},
    )

    def __post_init__(self):
        if self.api_key is None:
            import os

            self.api_key = os.environ.get("LLM_CHAT_API_KEY") or None


CONFIG_TYPES = (ChatModelArgs, ChatDataArgs, ChatLoraArgs, ChatTrainingArguments)
PREDICT_TYPES = (ChatPredictArgs,)
SERVE_TYPES = (ServeArgs, ChatPredictArgs)  # serve's own flags first in --help


def get_group(cfg, cls):
    """The parsed group of type `cls` in a cli.Config (e.g. ServeArgs among cfg.extra), or None."""
    return next((g for g in cfg.groups() if isinstance(g, cls)), None)
