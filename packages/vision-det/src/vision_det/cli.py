"""vision-det command line: train | eval | predict | export | make-data (grammar shared by every loraworks app).

vision-det train --config tiny --output_dir /tmp/t
vision-det predict --adapter_dir /tmp/t --threshold 0.5 photo.png photos/
vision-det make-data --output_dir data/shapes
"""

from __future__ import annotations

from lora_shared.cli import App, Command, run_app

APP = App(
    prog="vision-det",
    description="LoRA fine-tuning for object detection (DETR-family AutoModelForObjectDetection), COCO in, COCO mAP out.",
    config_package="vision_det.configs",
    config_types="vision_det.config:CONFIG_TYPES",
    commands=[
        Command(
            "train",
            "fine-tune with LoRA; writes adapter, COCO metrics and curves",
            "vision_det.train:train",
            uses_adapter=False,
            default_config="default",
        ),
        Command(
            "eval",
            "COCO mAP (COCOeval: AP, AP50, AP75, APs/m/l, AR, per-class AP) of a trained adapter",
            "vision_det.train:evaluate",
            extra_types="vision_det.config:PREDICT_TYPES",
        ),
        Command(
            "predict",
            "boxes for images or folders: COCO results JSON + PNGs with boxes drawn",
            "vision_det.predict:predict",
            inputs="IMAGE|DIR",
            extra_types="vision_det.config:PREDICT_TYPES",
        ),
        Command(
            "export",
            "merge the adapter into the base detector (standalone safetensors dir)",
            "vision_det.predict:export",
            extra_types="vision_det.config:PREDICT_TYPES",
        ),
        Command(
            "make-data",
            "write the built-in shapes set (COCO JSON + PNGs, train/val) into --output_dir",
            "vision_det.data:make_data",
            uses_adapter=False,
        ),
    ],
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vision-det` console script."""
    return run_app(APP, argv)


if __name__ == "__main__":
    raise SystemExit(main())
