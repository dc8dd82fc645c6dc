"""vision-pose config: four dataclass groups (model, data, LoRA, training) + predict / make-data options."""

from __future__ import annotations

from dataclasses import dataclass, field

from lora_shared.config import LoraArgs, ModelArgs, TrainDefaults, TrainExtras
from transformers import TrainingArguments


@dataclass
class PoseModelArgs(ModelArgs):
    """Base model (ViTPose from transformers, or a MobileNetV2 backbone + deconv heatmap head) and input size.

    The architecture follows the checkpoint's config (`vitpose` or `mobilenet_v2`); with --model_type the
    same two names build a random model, and config_overrides apply to the backbone config.
    """

    image_height: int | None = field(
        default=None,
        metadata={"help": "Crop height in pixels fed to the model; default: ViTPose's 256 / 256."},
    )
    image_width: int | None = field(
        default=None,
        metadata={"help": "Crop width in pixels; default: ViTPose's 192 / 192 (people are tall)."},
    )
    heatmap_sigma: float = field(
        default=2.0,
        metadata={"help": "Std of the Gaussian target, in heatmap pixels (2 is SimpleBaseline's)."},
    )
    head_channels: int = field(
        default=256,
        metadata={"help": "Channels of the MobileNetV2 deconvolution head (SimpleBaseline: 256)."},
    )
    decode: str = field(
        default="dark",
        metadata={
            "help": "Sub-pixel heatmap decoding: dark (Taylor on log-heatmap) | quarter (argmax+0.25)."
        },
    )


@dataclass
class PoseDataArgs:
    """Where annotated people come from (COCO keypoints JSON, or the built-in stick figures)."""

    dataset: str = field(
        default="figures",
        metadata={
            "help": "figures (built-in synthetic) | a COCO keypoints .json | a dir with train.json + val.json."
        },
    )
    eval_dataset: str | None = field(
        default=None,
        metadata={"help": "Separate eval COCO .json; default: val.json or a split of --dataset."},
    )
    image_dir: str | None = field(
        default=None, metadata={"help": "Root that file_name is relative to; default: the JSON's folder."}
    )
    val_fraction: float = field(
        default=0.2, metadata={"help": "Held-out fraction of images when no eval data is given, 0..1."}
    )
    figures_train: int = field(default=800, metadata={"help": "Images in the built-in figures train split."})
    figures_val: int = field(default=200, metadata={"help": "Images in the built-in figures val split."})
    figure_size: int = field(default=128, metadata={"help": "Side in pixels of generated figure images."})
    box_padding: float = field(
        default=1.25, metadata={"help": "Crop = person box enlarged by this factor (context around limbs)."}
    )
    flip_prob: float = field(
        default=0.5, metadata={"help": "Train-time horizontal flip probability (left/right keypoints swap)."}
    )
    rotation_deg: float = field(
        default=30.0, metadata={"help": "Train-time random rotation range, +-degrees."}
    )
    scale_jitter: float = field(
        default=0.25, metadata={"help": "Train-time random box scale range, +-fraction."}
    )
    oks_sigmas: list[float] = field(
        default_factory=list,
        metadata={"help": "Per-keypoint OKS sigmas; default: COCO's for COCO names, a table for others."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on training people."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on eval people."})
    eval_split: str = field(
        default="validation", metadata={"help": "Split the eval command scores: validation | train."}
    )


@dataclass
class PoseTrainingArguments(TrainExtras, TrainDefaults, TrainingArguments):
    """transformers.TrainingArguments with these changed defaults: output_dir=outputs/vision-pose,
    learning_rate=1e-3 (LoRA + a fresh head), num_train_epochs=10, per_device_*_batch_size=32,
    eval/save per epoch, logging every 10 steps, save_total_limit=2, metric_for_best_model=pck@0.1,
    remove_unused_columns=False, warmup_ratio=0.05."""

    output_dir: str | None = field(
        default="outputs/vision-pose", metadata={"help": "Run directory (adapter, metrics, plots)."}
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (AdamW)."})
    num_train_epochs: float = field(default=10.0, metadata={"help": "Epochs over the training people."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Train batch size per device."})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Eval batch size per device."})
    metric_for_best_model: str | None = field(
        default="pck@0.1", metadata={"help": "Metric for early stopping / best model."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep False: samples are built by our own dataset class."}
    )
    warmup_ratio: float = field(default=0.05, metadata={"help": "Fraction of steps for LR warm-up."})


@dataclass
class PosePredictArgs:
    """Options of `predict`, `eval` and `export`."""

    predictions_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where predict writes keypoints.json + skeleton PNGs (default: <adapter_dir>/predictions)."
        },
    )
    draw_threshold: float = field(
        default=0.0, metadata={"help": "Draw only keypoints whose heatmap score is above this, 0..1."}
    )
    max_drawn: int = field(default=16, metadata={"help": "How many skeleton PNGs eval writes."})
    export_dir: str | None = field(
        default=None,
        metadata={"help": "Where `export` writes the merged model (default: <adapter_dir>/merged)."},
    )


@dataclass
class PoseMakeDataArgs:
    """Options of `make-data` (sizes and seed come from --figures_* / --figure_size / --seed)."""

    data_dir: str = field(
        default="outputs/figures",
        metadata={"help": "Output dir: train.json, val.json, images/{train,val}/*.png."},
    )


CONFIG_TYPES = (PoseModelArgs, PoseDataArgs, LoraArgs, PoseTrainingArguments)
PREDICT_TYPES = (PosePredictArgs,)
MAKE_DATA_TYPES = (PoseMakeDataArgs,)
