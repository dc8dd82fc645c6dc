"""A run dir and its export load with plain transformers/peft, loraworks not importable, and predict as we do
(issue 18).

The loading runs in a subprocess whose import system refuses lora_shared / vision_cls / text_classifier
(checked first, so the block is real), as for a user with only torch, transformers and peft. It runs the
usage snippets of the run's and the export's README.md as written there, from a directory other than the run.
"""

import json
import subprocess
import sys

import pytest
from lora_shared.testing import BLOCK_LORAWORKS, run_without_loraworks
from vision_cls.cli import main

PLAIN_LOAD = """
import json, re, sys
from pathlib import Path

import torch
from PIL import Image
from peft import AutoPeftModel

run, export, images = sys.argv[1], sys.argv[2], sys.argv[3:]


def scores(model, processor):
    pixels = processor([Image.open(p).convert("RGB") for p in images], return_tensors="pt")
    with torch.no_grad():
        probs = model(**pixels).logits.softmax(-1)
    names = model.config.id2label
    return [{names[i]: p for i, p in enumerate(row)} for row in probs.tolist()]


card = {}
exec(card_snippet(run, "path/to/this/run"), card)  # PeftModel on the base the card names
run_scores = scores(card["model"], card["processor"])

# peft's AutoPeftModel finds the base through adapter_config.json (base_model_name_or_path), from this cwd.
names = json.load(open(f"{run}/labels.json"))["labels"]
auto = AutoPeftModel.from_pretrained(
    run, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
).eval()
auto_scores = scores(auto, card["processor"])

merged = {}
exec(card_snippet(export, "path/to/this/export"), merged)  # pipeline("image-classification")
exported = [{d["label"]: d["score"] for d in r} for r in merged["classify"](images, top_k=100)]
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"run": run_scores, "auto": auto_scores, "export": exported, "leaked": leaked}))
"""


def test_block_is_real(tmp_path):
    """The same block makes a loraworks import fail (so the test below cannot pass by importing us)."""
    proc = subprocess.run(
        [sys.executable, "-I", "-c", BLOCK_LORAWORKS + "import vision_cls"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "blocked for this test: vision_cls" in proc.stderr


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Demo images larger than the model's 32 px, one not square: the resize must match ours."""
    from vision_cls.data import make_demo_dataset

    root = tmp_path_factory.mktemp("imgs")
    paths = []
    for i, row in enumerate(make_demo_dataset(1, 64, seed=3)):
        img = row["image"].convert("RGB")
        if i == 0:
            img = img.resize((57, 41))
        img.save(root / f"{i}.png")
        paths.append(root / f"{i}.png")
    return paths


def test_run_and_export_load_with_plain_transformers_and_peft(tmp_path, images, capsys):
    run, export = tmp_path / "run", tmp_path / "export"
    assert main(["train", "--config", "tiny", "--output_dir", str(run)]) == 0
    assert main(["export", "--adapter_dir", str(run), "--export_dir", str(export)]) == 0

    adapter = json.loads((run / "adapter_config.json").read_text())
    # Where the published base lies (not the stage it was saved in): AutoPeftModel loads it from there.
    assert adapter["base_model_name_or_path"] == str((run / "base_model").resolve())
    assert (run / "base_model" / "config.json").is_file()
    assert len(adapter["modules_to_save"]) == len(set(adapter["modules_to_save"]))
    for where in (run, export):  # the real training size (tiny: 32 px), not a 224 px default
        proc = json.loads((where / "preprocessor_config.json").read_text())
        assert proc["size"] == {"height": 32, "width": 32}, where

    capsys.readouterr()
    argv = ["predict", "--adapter_dir", str(run), "--json", "--top_k", "100", *map(str, images)]
    assert main(argv) == 0
    ours = [
        {t["label"]: t["score"] for t in json.loads(line)["top_k"]}
        for line in capsys.readouterr().out.strip().splitlines()
    ]
    assert len(ours) == len(images)

    elsewhere = tmp_path / "elsewhere"  # not the run dir: no path in the run may be relative to it
    elsewhere.mkdir()
    (elsewhere / "photo.jpg").write_bytes(images[0].read_bytes())  # what the card snippets classify
    plain = run_without_loraworks(PLAIN_LOAD, elsewhere, run, export, *images, timeout=600)
    assert plain["leaked"] == []
    for key in ("run", "auto", "export"):
        for mine, theirs in zip(ours, plain[key], strict=True):
            assert mine.keys() == theirs.keys(), key
            assert max(mine, key=mine.get) == max(theirs, key=theirs.get), key
            for label, score in mine.items():
                assert abs(theirs[label] - score) <= 1e-4, (key, label, theirs[label], score)
