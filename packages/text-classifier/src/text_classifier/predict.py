"""Inference for text-classifier: the `Classifier` Python API, `predict` (texts or --file), the
`interactive` prompt loop, and export of a merged model.

    from text_classifier import Classifier
    Classifier.from_pretrained("outputs/text-classifier").classify("数据清洗流程是什么？")
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from lora_shared.errors import UsageError
from lora_shared.runs import LABELS_FILE

from .data import read_text_file
from .model import for_plain_transformers, load_trained

logger = logging.getLogger(__name__)


class Classifier:
    """A trained adapter ready to classify: `classify(text) -> {"label", "confidence", "scores"}`."""

    def __init__(self, model, tokenizer, labels: list[str], max_length: int = 128, bf16: bool = False):
        from lora_shared.models import pick_device

        self.model = model.to(pick_device()).eval()
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.max_length = max_length
        # CPU bf16 autocast is ~3x faster on AVX512-BF16; used when the run itself trained with --bf16.
        self.bf16 = bf16

    @classmethod
    def from_pretrained(cls, adapter_dir: str | Path, **overrides) -> Classifier:
        """Load the run in `adapter_dir` (its resolved config says which base and tokenizer).

        `overrides` are config fields, e.g. `max_length=64` or `bf16=False`.
        """
        from lora_shared.cli import build_config

        from .cli import APP

        command = next(c for c in APP.commands if c.name == "predict")
        flags = ["--adapter_dir", str(adapter_dir)]
        for k, v in overrides.items():
            flags += [f"--{k}", str(v)]
        cfg, _ = build_config(APP, command, flags)
        return cls.from_config(cfg)

    @classmethod
    def from_config(cls, cfg) -> Classifier:
        """Build from a resolved CLI config (what `predict` / `interactive` use)."""
        model, tokenizer, labels = load_trained(cfg)
        return cls(model, tokenizer, labels, cfg.model.max_length, bool(cfg.train.bf16))

    def classify(self, text: str) -> dict:
        """{"label": best label, "confidence": its probability, "scores": {label: probability, ...}}."""
        return self.classify_batch([text])[0]

    def classify_batch(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> list[dict]:
        """`classify` for many texts, batched (texts sorted by length to pad less), in input order."""
        import torch
        from tqdm.auto import tqdm

        if isinstance(texts, str):
            raise TypeError("classify_batch takes a list of texts; use classify() for one")
        device = next(self.model.parameters()).device
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        results: list[dict | None] = [None] * len(texts)
        bar = tqdm(total=len(texts), desc="classifying", unit="text", disable=not progress)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                ).to(device)
                probs = self.model(**enc).logits.float().softmax(-1).tolist()
                for i, row in zip(idx, probs):
                    results[i] = self._result(row)
                bar.update(len(idx))
        bar.close()
        return results  # type: ignore[return-value]

    def _result(self, probs: list[float]) -> dict:
        ranked = sorted(zip(self.labels, probs), key=lambda t: -t[1])
        return {
            "label": ranked[0][0],
            "confidence": round(ranked[0][1], 6),
            "scores": {label: round(p, 6) for label, p in ranked},
        }


def _print(text: str, result: dict, top_k: int, as_json: bool) -> None:
    top = list(result["scores"].items())[: max(1, top_k)]
    if as_json:
        row = {"text": text, **result, "top_k": [{"label": lbl, "score": s} for lbl, s in top]}
        print(json.dumps(row, ensure_ascii=False), flush=True)
    else:
        ranked = ", ".join(f"{lbl} {s:.3f}" for lbl, s in top)
        print(f"{text}\t{result['label']}\tconfidence {result['confidence']:.3f}\ttop-{len(top)}: {ranked}")


def predict(cfg, inputs: list[str]) -> int:
    """Print label, confidence and top-k for each text argument and/or each line of --file."""
    texts = [t.strip() for t in inputs]
    if any(not t for t in texts):
        raise UsageError("an empty text was given; pass non-empty questions")
    if cfg.infer.file:
        texts += read_text_file(cfg.infer.file)
    if not texts:
        raise UsageError('predict needs texts ("问题" ...) or --file questions.txt (one per line)')
    clf = Classifier.from_config(cfg)
    results = clf.classify_batch(
        texts, batch_size=cfg.train.per_device_eval_batch_size, progress=bool(cfg.infer.file)
    )
    for text, result in zip(texts, results):
        _print(text, result, cfg.infer.top_k, cfg.infer.json)
    return 0


def interactive(cfg) -> int:
    """Read questions from stdin and print label + confidence for each; empty line or Ctrl-D ends."""
    clf = Classifier.from_config(cfg)
    tty = sys.stdin.isatty()
    if tty:
        print(f"labels: {', '.join(clf.labels)}. Empty line or Ctrl-D quits.", file=sys.stderr)
    while True:
        try:
            line = input("问题> " if tty else "")
        except EOFError:
            if tty:
                print(file=sys.stderr)
            return 0
        text = line.strip()
        if not text:
            return 0
        result = clf.classify(text)
        if cfg.infer.json:
            print(json.dumps({"text": text, **result}, ensure_ascii=False), flush=True)
        else:
            print(f"{result['label']}\tconfidence {result['confidence']:.3f}", flush=True)


def export(cfg) -> int:
    """Merge the adapter into the base model; save it with its tokenizer and labels (safetensors)."""
    from lora_shared.runs import export_merged, export_target

    target = export_target(cfg.infer.export_dir, cfg.model.adapter_dir)  # refused before loading: exit 2
    model, tokenizer, labels = load_trained(cfg)
    labels_json = {LABELS_FILE: {"labels": labels}}
    tokenizer = for_plain_transformers(tokenizer, cfg.model)  # cuts where predict cuts
    export_merged(model, target, processor=tokenizer, extra_json=labels_json, run_dir=cfg.model.adapter_dir)
    print(f"merged model: {target}")
    return 0
