"""The acceptance run: `--config offline` (Gemma-3-270M from `make models`) reaches >= 0.9 held-out accuracy
on the built-in questions, and `echo "数据清洗流程是什么？" | text-classifier interactive` names the
data-platform label. Minutes on CPU, needs the converted model: marked slow."""

import json
import subprocess
import sys

import pytest
from lora_shared.models import models_dir
from text_classifier.cli import main
from text_classifier.data import QUESTION_LABELS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    if not (models_dir() / "gemma-3-270m" / "model.safetensors").is_file():
        pytest.skip("gemma-3-270m not converted; run `make models`")
    out = tmp_path_factory.mktemp("offline")
    assert main(["train", "--config", "offline", "--output_dir", str(out)]) == 0
    return out


def test_offline_accuracy(offline_run):
    metrics = json.loads((offline_run / "metrics.json").read_text())
    assert metrics["eval_accuracy"] >= 0.9, metrics
    assert metrics["eval_macro_f1"] >= 0.9, metrics


def test_offline_interactive_names_data_platform(offline_run):
    proc = subprocess.run(
        [sys.executable, "-m", "text_classifier", "interactive", "--adapter_dir", str(offline_run)],
        input="数据清洗流程是什么？\n",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    label, conf = proc.stdout.strip().split("\t")
    assert label == QUESTION_LABELS[0] and float(conf.split()[-1]) > 0.5
