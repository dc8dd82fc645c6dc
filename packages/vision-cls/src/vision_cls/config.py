"""vision-cls config: four dataclass groups (model, data, LoRA, training) + predict options, flat namespace."""

from __future__ import annotations

from dataclasses import dataclass, field

from lora_shared.config import LoraArgs, ModelArgs, TrainDefaults, TrainExtras
from lora_shared.hubdata import HubDataArgs
from transformers import TrainingArguments


@dataclass
class ClsModelArgs(ModelArgs):
    """Base model (any AutoModelForImageClassification) and input size."""

    image_size: int | None = field(
        default=None,
        metadata={"help": "Input side in pixels; default: the processor's (or the model config's)."},
    )


@dataclass
class ClsDataArgs(HubDataArgs):
    """Where images come from."""

    dataset: str = field(
        default="demo",
        metadata={
            "help": "demo | sklearn-digits | ImageFolder dir | CSV (path,label) | datasets dir (save_to_disk) | "
            "a hub dataset id (beans, user/name) | imagefolder (with --data_dir) | parquet (with --data_files)."
        },
    )
    # The other load_dataset flags come from HubDataArgs; this one says what imagefolder reads here.
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of --dataset imagefolder: DIR/<class>/<image> or DIR/train|validation/<class>/."
        },
    )
    eval_dataset: str | None = field(
        default=None, metadata={"help": "Separate eval data (same formats); default: a split of --dataset."}
    )
    val_fraction: float = field(
        default=0.2, metadata={"help": "Held-out fraction when no eval data is given, 0..1."}
    )
    demo_images_per_class: int = field(
        default=120, metadata={"help": "Images per class in the demo dataset."}
    )
    demo_image_size: int = field(default=64, metadata={"help": "Side in pixels of generated demo images."})
    image_column: str = field(
        default="image", metadata={"help": "Image column of a datasets dir / hub / load_dataset --dataset."}
    )
    label_column: str = field(
        default="label",
        metadata={"help": "Label column of a CSV, datasets dir or hub / load_dataset --dataset."},
    )
    skip_bad_images: bool = field(
        default=False,
        metadata={"help": "Skip unreadable images (and count them) instead of exiting with an error."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Cap on training samples (quick runs)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on eval samples."})
    eval_split: str = field(
        default="validation", metadata={"help": "Split the eval command scores: validation | train."}
    )


@dataclass
class ClsTrainingArguments(TrainExtras, TrainDefaults, TrainingArguments):
    """transformers.TrainingArguments with these changed defaults: output_dir=outputs/vision-cls,
    learning_rate=5e-4 (LoRA wants ~10x full fine-tuning), num_train_epochs=3, per_device_*_batch_size=16,
    eval/save/logging per epoch / 10 steps, save_total_limit=2, metric_for_best_model=accuracy,
    remove_unused_columns=False (the on-the-fly transform needs the raw image column)."""

    output_dir: str | None = field(
        default="outputs/vision-cls", metadata={"help": "Run directory (adapter, metrics, plots)."}
    )
    learning_rate: float = field(default=5e-4, metadata={"help": "Peak learning rate (AdamW)."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs over the training split."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Train batch size per device."})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Eval batch size per device."})
    metric_for_best_model: str | None = field(
        default="accuracy", metadata={"help": "Metric for early stopping / best model."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep False: the transform reads the image column."}
    )
    warmup_ratio: float = field(default=0.1, metadata={"help": "Fraction of steps for LR warm-up."})


@dataclass
class ClsPredictArgs:
    """Options of `predict` and `eval`."""

    top_k: int = field(default=3, metadata={"help": "How many labels to print per image."})
    json: bool = field(default=False, metadata={"help": "Print one JSON object per image instead of text."})
    export_dir: str | None = field(
        default=None,
        metadata={"help": "Where `export` writes the merged model (default: <adapter_dir>/merged)."},
    )


CONFIG_TYPES = (ClsModelArgs, ClsDataArgs, LoraArgs, ClsTrainingArguments)
PREDICT_TYPES = (ClsPredictArgs,)
