"""A run dir and its export load with plain transformers/peft, loraworks not importable, and predict as we do
(issue 18).

The loading runs in a subprocess whose import system refuses lora_shared / vision_cls / text_classifier
(checked first, so the block is real), as for a user with only torch, transformers and peft. It runs the
usage snippets of the run's and the export's README.md as written there, from a directory other than the run.
"""

import json
import subprocess
import sys

from lora_shared.testing import BLOCK_LORAWORKS, run_without_loraworks
from text_classifier.cli import main

PLAIN_LOAD = """
import json, re, sys
from pathlib import Path

import torch

run, export, texts = sys.argv[1], sys.argv[2], sys.argv[3:]


card = {}
# AutoPeftModelForSequenceClassification: the base from adapter_config.json, found from this cwd
exec(card_snippet(run, "path/to/this/run"), card)
model, tokenizer = card["model"], card["tokenizer"]
names = model.config.id2label
run_scores = []
with torch.no_grad():
    for text in texts:
        probs = model(**tokenizer(text, truncation=True, return_tensors="pt")).logits.softmax(-1)[0]
        run_scores.append({names[i]: p for i, p in enumerate(probs.tolist())})

merged = {}
exec(card_snippet(export, "path/to/this/export"), merged)  # pipeline("text-classification")
exported = [{d["label"]: d["score"] for d in r} for r in merged["classify"](texts, top_k=None, truncation=True)]
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"run": run_scores, "export": exported, "leaked": leaked}, ensure_ascii=False))
"""

TEXTS = [
    "数据清洗流程是什么？",
    "你好",
    "今天天气怎么样",
    "数据平台的权限怎么申请" * 20,
]  # the last one is longer than max_length


def test_block_is_real(tmp_path):
    """The same block makes a loraworks import fail (so the test below cannot pass by importing us)."""
    proc = subprocess.run(
        [sys.executable, "-I", "-c", BLOCK_LORAWORKS + "import text_classifier"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "blocked for this test: text_classifier" in proc.stderr


def test_run_and_export_load_with_plain_transformers_and_peft(tmp_path, capsys):
    run, export = tmp_path / "run", tmp_path / "export"
    assert main(["train", "--config", "tiny", "--output_dir", str(run)]) == 0
    assert main(["export", "--adapter_dir", str(run), "--export_dir", str(export)]) == 0

    adapter = json.loads((run / "adapter_config.json").read_text())
    # Where the published base lies (not the stage it was saved in): AutoPeftModel loads it from there.
    assert adapter["base_model_name_or_path"] == str((run / "base_model").resolve())
    assert (run / "base_model" / "config.json").is_file()
    names = adapter["modules_to_save"]
    assert "classifier" in names and len(names) == len(set(names))  # peft's SEQ_CLS names not repeated
    for where in (run, export):  # the tokenizer sits next to the weights and cuts where predict cuts
        assert json.loads((where / "tokenizer_config.json").read_text())["model_max_length"] == 64, where

    capsys.readouterr()
    assert main(["predict", "--adapter_dir", str(run), "--json", *TEXTS]) == 0
    ours = [json.loads(line)["scores"] for line in capsys.readouterr().out.strip().splitlines()]
    assert len(ours) == len(TEXTS)

    elsewhere = tmp_path / "elsewhere"  # not the run dir: no path in the run may be relative to it
    elsewhere.mkdir()
    plain = run_without_loraworks(PLAIN_LOAD, elsewhere, run, export, *TEXTS, timeout=600)
    assert plain["leaked"] == []
    for key in ("run", "export"):
        for mine, theirs in zip(ours, plain[key], strict=True):
            assert mine.keys() == theirs.keys(), key
            assert max(mine, key=mine.get) == max(theirs, key=theirs.get), key
            for label, score in mine.items():
                assert abs(theirs[label] - score) <= 1e-4, (key, label, theirs[label], score)
