"""Model cards (lora_shared.cards): hub-valid front matter, no local paths, written with the adapter and export."""

import json
from pathlib import Path

import pytest
import yaml
from lora_shared.cards import TASK_FILE, build_card, parse_card, write_card
from lora_shared.config import LoraArgs
from lora_shared.peft import apply_lora
from lora_shared.runs import export_writer, save_adapter, write_metrics
from lora_shared.testing import tiny_mlp

TASK = {
    "app": "demo-app",
    "pipeline_tag": "image-classification",
    "task": "Demo classification",
    "usage": 'from peft import PeftModel\nrun = "{RUN}"\nlabels = f"{run}/labels.json"\nmodel = PeftModel.from_pretrained(base, run)  # base: {BASE}\n',
    "usage_merged": 'from transformers import pipeline\npipe = pipeline("image-classification", model="{RUN}")\n',
    "data_sizes": {"train images": 12, "eval images": 4},
}


def _run_dir(tmp_path: Path, base: str) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    config = {
        "model_name_or_path": base,
        "dataset": str(tmp_path / "data" / "photos"),
        "learning_rate": 0.01,
        "max_steps": 4,
        "per_device_train_batch_size": 8,
        "bf16": True,
        "report_to": ["tensorboard"],
    }
    (run / "resolved_config.yaml").write_text("# ModelArgs\n" + yaml.safe_dump(config))
    adapter = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}
    adapter |= {"modules_to_save": ["classifier"], "base_model_name_or_path": base, "peft_type": "LORA"}
    (run / "adapter_config.json").write_text(json.dumps(adapter))
    return run


def _assert_no_local_paths(text: str, tmp_path: Path) -> None:
    assert str(tmp_path) not in text and str(Path.home()) not in text, text


def test_card_has_hub_front_matter_hyperparameters_and_no_local_paths(tmp_path):
    run = _run_dir(tmp_path, "google/vit-base-patch16-224")
    (run / "metrics.json").write_text(
        json.dumps({"eval_accuracy": 0.875, "train_loss": 0.31, "eval_runtime": 9.0})
    )
    front, body = parse_card(build_card(run, TASK))
    assert front == {
        "base_model": "google/vit-base-patch16-224",
        "library_name": "peft",
        "pipeline_tag": "image-classification",
        "tags": ["lora", "loraworks", "demo-app"],
    }  # no license: not known for a hub id we cannot reach
    for needle in ("| r | 4 |", "| lora_alpha | 8 |", '| target_modules | ["q_proj", "v_proj"] |'):
        assert needle in body
    assert '| modules_to_save | ["classifier"] |' in body
    assert "| learning_rate | 0.01 |" in body and "| max_steps | 4 |" in body
    assert "| seed | 42 |" in body  # a transformers default the resolved config leaves out
    assert "| precision | bf16 mixed precision |" in body
    assert "| dataset | photos |" in body and "| train images | 12 |" in body
    assert "| eval_accuracy | 0.875 |" in body and "| train_loss | 0.31 |" in body
    assert "eval_runtime" not in body  # timing noise is left out
    assert 'run = "path/to/this/run"\nlabels = f"{run}/labels.json"' in body  # the snippet's f-string kept
    assert "PeftModel.from_pretrained(base, run)  # base: google/vit-base-patch16-224" in body
    _assert_no_local_paths(body, tmp_path)


def test_offline_model_is_named_by_its_hub_origin_with_licence(tmp_path):
    front, body = parse_card(build_card(_run_dir(tmp_path, "qwen2.5-coder-0.5b-instruct"), TASK))
    assert front["base_model"] == "Qwen/Qwen2.5-Coder-0.5B-Instruct" and front["license"] == "apache-2.0"
    assert "`qwen2.5-coder-0.5b-instruct`" in body


def test_offline_model_without_hub_repo_keeps_its_offline_name(tmp_path):
    front, _ = parse_card(build_card(_run_dir(tmp_path, "mobilenet_v2-imagenet"), TASK))
    assert front["base_model"] == "mobilenet_v2-imagenet" and "license" not in front


def test_random_base_inside_the_run_is_named_relative(tmp_path):
    run = _run_dir(tmp_path, str(tmp_path / "run" / "base_model"))
    (run / "base_model").mkdir()
    (run / "base_model" / "config.json").write_text('{"model_type": "vit"}')
    text = build_card(run, TASK)
    front, body = parse_card(text)
    assert "base_model" not in front  # not a hub id: the hub would refuse the card
    assert "randomly initialised `vit` saved in `base_model/`" in body
    assert "path/to/this/run/base_model" in body  # the usage snippet loads it from the run
    _assert_no_local_paths(text, tmp_path)


def test_base_built_on_a_pretrained_backbone_is_not_called_random(tmp_path):
    """vision-det/pose offline: a new detector saved in the run, its backbone the offline MobileNetV2."""
    run = _run_dir(tmp_path, str(tmp_path / "run" / "base_model"))
    config = yaml.safe_load((run / "resolved_config.yaml").read_text()) | {
        "backbone": "mobilenet_v2-imagenet"
    }
    (run / "resolved_config.yaml").write_text(yaml.safe_dump(config))
    (run / "base_model").mkdir()
    (run / "base_model" / "config.json").write_text('{"model_type": "d_fine"}')
    _, body = parse_card(build_card(run, TASK))
    assert "a new `d_fine` on the pretrained `mobilenet_v2-imagenet` backbone, saved in `base_model/`" in body
    assert "smoke test" not in body and "randomly" not in body


def test_local_base_dir_outside_the_run_is_named_by_basename(tmp_path):
    text = build_card(_run_dir(tmp_path, str(tmp_path / "models" / "my-bert")), TASK)
    front, body = parse_card(text)
    assert "base_model" not in front and "`my-bert`" in body
    _assert_no_local_paths(text, tmp_path)


@pytest.fixture
def saved_run(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "resolved_config.yaml").write_text(yaml.safe_dump({"model_name_or_path": "org/tiny", "seed": 3}))
    model = apply_lora(tiny_mlp(), LoraArgs(lora_target_modules=["fc1"], lora_modules_to_save=["head"]))
    save_adapter(model, out, card=TASK)
    return out, model


def test_save_adapter_replaces_peft_template_and_metrics_update_it(saved_run, tmp_path):
    out, _ = saved_run
    front, body = parse_card((out / "README.md").read_text())
    assert front["base_model"] == "org/tiny" and front["library_name"] == "peft"
    assert "Not written yet" in body  # the adapter lands before its metrics
    assert json.loads((out / TASK_FILE).read_text())["app"] == "demo-app"
    write_metrics(out, {"eval_accuracy": 0.5})
    _, body = parse_card((out / "README.md").read_text())
    assert "| eval_accuracy | 0.5 |" in body and "Not written yet" not in body
    write_metrics(out, {"eval_accuracy": 0.25}, name="eval_metrics.json")  # a later `eval` leaves it alone
    assert "| eval_accuracy | 0.5 |" in (out / "README.md").read_text()
    assert not list(out.glob(".README.md.*"))


def test_export_gets_a_transformers_card(saved_run, tmp_path):
    out, _ = saved_run
    with export_writer(tmp_path / "export", out) as tmp:
        (tmp / "README.md").write_text("template\n")  # what a save_pretrained may have written
    front, body = parse_card((tmp_path / "export" / "README.md").read_text())
    assert front["library_name"] == "transformers" and "merged" in front["tags"]
    assert 'pipeline("image-classification", model="path/to/this/export")' in body
    manifest = json.loads((tmp_path / "export" / "loraworks_export.json").read_text())
    assert "README.md" in manifest["files"]


def test_a_card_error_never_fails_the_save(tmp_path, monkeypatch, caplog):
    import lora_shared.cards as cards

    def boom(*a, **k):
        raise RuntimeError("bug")

    monkeypatch.setattr(cards, "build_card", boom)
    assert write_card(tmp_path) is None
    assert "model card not written" in caplog.text
