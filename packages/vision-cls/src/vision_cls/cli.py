"""vision-cls command line: train | eval | predict | export (grammar shared by every loraworks app).

vision-cls train --config tiny --output_dir /tmp/t
vision-cls predict --adapter_dir /tmp/t cat.png photos/
"""

from __future__ import annotations

from lora_shared.cli import App, Command, run_app

APP = App(
    prog="vision-cls",
    description="LoRA fine-tuning for image classification (any AutoModelForImageClassification).",
    config_package="vision_cls.configs",
    config_types="vision_cls.config:CONFIG_TYPES",
    commands=[
        Command(
            "train",
            "fine-tune with LoRA; writes adapter, metrics, curves and confusion matrix",
            "vision_cls.train:train",
            uses_adapter=False,
            default_config="default",
        ),
        Command(
            "eval",
            "score a trained adapter on a split (accuracy, F1, confusion matrix)",
            "vision_cls.train:evaluate",
            extra_types="vision_cls.config:PREDICT_TYPES",
        ),
        Command(
            "predict",
            "top-k labels for images or folders of images",
            "vision_cls.predict:predict",
            inputs="IMAGE|DIR",
            extra_types="vision_cls.config:PREDICT_TYPES",
        ),
        Command(
            "export",
            "merge the adapter into the base model (standalone safetensors dir)",
            "vision_cls.predict:export",
            extra_types="vision_cls.config:PREDICT_TYPES",
        ),
    ],
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vision-cls` console script."""
    return run_app(APP, argv)


if __name__ == "__main__":
    raise SystemExit(main())
