"""vision-pose command line: train | eval | predict | export | make-data (grammar shared by every loraworks app).

vision-pose train --config tiny --output_dir /tmp/p
vision-pose predict --adapter_dir /tmp/p person.png photos/ annotations.json
vision-pose make-data --data_dir outputs/figures
"""

from __future__ import annotations

from lora_shared.cli import App, Command, run_app

APP = App(
    prog="vision-pose",
    description="LoRA fine-tuning for keypoint estimation (top-down heatmaps: ViTPose, MobileNetV2).",
    config_package="vision_pose.configs",
    config_types="vision_pose.config:CONFIG_TYPES",
    commands=[
        Command(
            "train",
            "fine-tune with LoRA; writes adapter, metrics (PCK, OKS AP), curves and skeleton PNGs",
            "vision_pose.train:train",
            uses_adapter=False,
            default_config="default",
        ),
        Command(
            "eval",
            "score a trained adapter on a split (PCK@0.05/0.1, pixel error, OKS AP)",
            "vision_pose.train:evaluate",
            extra_types="vision_pose.config:PREDICT_TYPES",
        ),
        Command(
            "predict",
            "keypoints for images (whole image = one person) or COCO .json boxes: JSON + skeleton PNGs",
            "vision_pose.predict:predict",
            inputs="IMAGE|DIR|COCO.json",
            extra_types="vision_pose.config:PREDICT_TYPES",
        ),
        Command(
            "export",
            "merge the adapter into the base model (standalone safetensors dir)",
            "vision_pose.predict:export",
            extra_types="vision_pose.config:PREDICT_TYPES",
        ),
        Command(
            "make-data",
            "write the built-in stick figures as COCO keypoints JSON + PNGs (train/val)",
            "vision_pose.data:make_data",
            uses_adapter=False,
            extra_types="vision_pose.config:MAKE_DATA_TYPES",
        ),
    ],
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vision-pose` console script."""
    return run_app(APP, argv)


if __name__ == "__main__":
    raise SystemExit(main())
