"""vision-det config: four dataclass groups (model, data, LoRA, training) + predict options, flat namespace."""

from __future__ import annotations

from dataclasses import dataclass, field

from lora_shared.config import LoraArgs, ModelArgs, TrainDefaults, TrainExtras
from lora_shared.hubdata import HubDataArgs
from transformers import TrainingArguments


@dataclass
class DetModelArgs(ModelArgs):
    """Detector (any DETR-family AutoModelForObjectDetection), its backbone and the input size."""

    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Longest image side after resize, px (aspect kept; batches padded with a pixel mask); "
            "default: the processor's."
        },
    )
    backbone: str | None = field(
        default=None,
        metadata={
            "help": "Backbone of a --model_type detector: resnet | mobilenet_v2 (random init) or a "
            "pretrained MobileNetV2 dir / offline model name (e.g. mobilenet_v2-imagenet)."
        },
    )
    backbone_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Backbone config overrides, e.g. 'embedding_size=16,depths=[1,1,1,1]' (key=value list)."
        },
    )
    backbone_stage: str = field(
        default="stage4",
        metadata={
            "help": "Backbone stage(s) that feed the transformer: stem, stage1..stage4 (stride 4, 8, 16, 32); "
            "comma-separated for multi-scale detectors, e.g. stage2,stage3,stage4 (RT-DETR, D-FINE)."
        },
    )


@dataclass
class DetDataArgs(HubDataArgs):
    """Where images and boxes come from, validation, and augmentation."""

    dataset: str = field(
        default="shapes",
        metadata={
            "help": "shapes (built-in generator) | COCO JSON file | dir with train.json + val.json | "
            "datasets dir (save_to_disk), hub dataset id (user/name) or imagefolder --data_dir DIR "
            "(metadata.jsonl) with image + objects{bbox, category}."
        },
    )
    # The other load_dataset flags come from HubDataArgs; these two say what the builders read here.
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of --dataset imagefolder: images + metadata.jsonl (file_name, objects)."},
    )
    data_files: list[str] | None = field(
        default=None,
        metadata={"help": "Files of a load_dataset builder --dataset (parquet): PATH or SPLIT=PATH."},
    )
    eval_dataset: str | None = field(
        default=None,
        metadata={"help": "Separate eval data (COCO JSON or datasets dir); default: val.json or a split."},
    )
    image_root: str | None = field(
        default=None,
        metadata={"help": "Folder the COCO `file_name`s are relative to; default: the JSON file's folder."},
    )
    val_fraction: float = field(
        default=0.1, metadata={"help": "Held-out fraction when no eval data is given, 0..1."}
    )
    fix_boxes: bool = field(
        default=False,
        metadata={
            "help": "Clip boxes that leave their image and drop boxes with no area (counts are logged) "
            "instead of exiting with an error."
        },
    )
    shapes_train_images: int = field(default=1000, metadata={"help": "Built-in shapes set: training images."})
    shapes_val_images: int = field(default=200, metadata={"help": "Built-in shapes set: validation images."})
    shapes_image_size: int = field(default=128, metadata={"help": "Built-in shapes set: image side, px."})
    shapes_seed: int = field(
        default=0, metadata={"help": "Built-in shapes set: generator seed (same seed, same set)."}
    )
    shapes_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where the shapes set is written; default: $LORAWORKS_HOME/data/vision-det-shapes/<params>."
        },
    )
    augment: bool = field(
        default=True, metadata={"help": "Augment training images (flip, zoom/shift, colour)."}
    )
    aug_hflip: float = field(default=0.5, metadata={"help": "Horizontal flip probability, 0..1."})
    aug_scale: list[float] = field(
        default_factory=lambda: [0.7, 1.3],
        metadata={"help": "Random zoom range (min max); <1 zooms out, >1 crops in; boxes follow, 1 1 = off."},
    )
    aug_translate: float = field(
        default=0.15, metadata={"help": "Random shift, as a fraction of the image side, 0..1."}
    )
    aug_color_jitter: float = field(
        default=0.2, metadata={"help": "Brightness/contrast/saturation jitter strength, 0 = off."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Cap on training images (quick runs)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on eval images."})
    eval_split: str = field(
        default="validation", metadata={"help": "Split the eval command scores: validation | train."}
    )


@dataclass
class DetTrainingArguments(TrainExtras, TrainDefaults, TrainingArguments):
    """transformers.TrainingArguments with these changed defaults: output_dir=outputs/vision-det,
    learning_rate=1e-4 and weight_decay=1e-4 (DETR's recipe), max_grad_norm=0.1 (DETR clips at 0.1),
    num_train_epochs=20, per_device_*_batch_size=8, eval/save per epoch, logging_steps=10,
    save_total_limit=2, metric_for_best_model=AP50, remove_unused_columns=False (the transform reads the
    raw image and objects columns), label_names=[labels], batch_eval_metrics=True, eval_use_gather_object=True and
    eval_do_concat_batches=False (COCO mAP is accumulated batch by batch: DETR labels are a list of
    dicts, one per image, that cannot be concatenated)."""

    output_dir: str | None = field(
        default="outputs/vision-det", metadata={"help": "Run directory (adapter, metrics, plots)."}
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate (AdamW)."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=0.1, metadata={"help": "Gradient clipping norm (DETR: 0.1)."})
    num_train_epochs: float = field(default=20.0, metadata={"help": "Epochs over the training split."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Train batch size per device."})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Eval batch size per device."})
    metric_for_best_model: str | None = field(
        default="AP50", metadata={"help": "Metric for early stopping / best model (AP, AP50, loss, ...)."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep False: the transform reads the image and objects columns."}
    )
    label_names: list[str] | None = field(
        default_factory=lambda: ["labels"],
        metadata={"help": "Batch keys holding the targets (DETR: labels)."},
    )
    batch_eval_metrics: bool = field(
        default=True, metadata={"help": "Keep True: COCO mAP is accumulated per eval batch."}
    )
    eval_do_concat_batches: bool = field(
        default=False, metadata={"help": "Keep False: per-image label dicts cannot be concatenated."}
    )
    eval_use_gather_object: bool = field(
        default=True,
        metadata={
            "help": "Keep True: the last eval batch is trimmed per image; as tensors, accelerate would cut "
            "every label tensor (boxes!) to the batch's leftover image count."
        },
    )


@dataclass
class DetPredictArgs:
    """Options of `predict`, `eval` and `export`."""

    threshold: float = field(default=0.5, metadata={"help": "Minimum score of a box to report/draw, 0..1."})
    json: bool = field(default=False, metadata={"help": "Print one JSON object per image instead of text."})
    draw: bool = field(default=True, metadata={"help": "Write a PNG per image with its boxes drawn."})
    predictions_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where predict writes predictions.json and the PNGs (default: <output_dir>/predictions)."
        },
    )
    export_dir: str | None = field(
        default=None,
        metadata={"help": "Where `export` writes the merged model (default: <adapter_dir>/merged)."},
    )


CONFIG_TYPES = (DetModelArgs, DetDataArgs, LoraArgs, DetTrainingArguments)
PREDICT_TYPES = (DetPredictArgs,)
