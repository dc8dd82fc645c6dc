"""Tiny runs of two apps: the run's README.md is a hub-valid model card (and the export's), TensorBoard events
land in the run dir with `--report_to tensorboard` (issue 18)."""

import ast
from pathlib import Path

import pytest
from lora_shared.cards import parse_card

APPS = {
    "llm-chat": ("llm_chat.cli", ["--report_to", "tensorboard"]),
    "text-classifier": ("text_classifier.cli", []),
}


@pytest.fixture(scope="module", params=list(APPS))
def run(request, tmp_path_factory):
    import importlib

    module, flags = APPS[request.param]
    main = importlib.import_module(module).main
    out = tmp_path_factory.mktemp(request.param) / "run"
    assert main(["train", "--config", "tiny", "--output_dir", str(out), *flags]) == 0
    return request.param, main, out


def _no_local_paths(text: str, out: Path) -> None:
    for local in (str(out.parent), str(Path.home()), "/tmp/"):
        assert local not in text, f"{local} in the card"


def test_run_card_is_hub_valid_and_complete(run):
    app, _, out = run
    text = (out / "README.md").read_text(encoding="utf-8")
    front, body = parse_card(text)
    assert front["library_name"] == "peft"
    assert front["tags"] == ["lora", "loraworks", app]
    assert (
        front["pipeline_tag"]
        == {"llm-chat": "text-generation", "text-classifier": "text-classification"}[app]
    )
    assert "base_model" not in front  # the tiny base is random, saved in the run: no hub id to name
    assert "randomly initialised" in body and "`base_model/`" in body
    assert "| r | 4 |" in body and "| lora_alpha | 8 |" in body
    assert "| learning_rate | 0.01 |" in body and "| seed | 42 |" in body
    assert "## Results" in body and "| eval_loss |" in body and "Not written yet" not in body
    assert "## Usage" in body and "path/to/this/run" in body
    code = body.split("```python\n", 1)[1].split("```", 1)[0]
    ast.parse(code)  # the snippet is Python a user can paste
    assert "{RUN}" not in code and "{BASE}" not in code
    if app == "text-classifier":
        assert 'open(f"{run}/labels.json")' in code  # the snippet's own f-string survives the fill-in
    _no_local_paths(text, out)


def test_tensorboard_events_are_written_under_the_run(run):
    app, _, out = run
    events = list((out / "runs").glob("*/events.out.tfevents.*")) if (out / "runs").is_dir() else []
    if app == "llm-chat":
        assert events and events[0].stat().st_size > 0
    else:
        assert not events  # report_to defaults to none


def test_export_card_is_a_transformers_card(run, tmp_path):
    app, main, out = run
    if app != "llm-chat":
        pytest.skip("one export is enough: the card code is shared")
    export = tmp_path / "export"
    assert main(["export", "--adapter_dir", str(out), "--export_dir", str(export)]) == 0
    text = (export / "README.md").read_text(encoding="utf-8")
    front, body = parse_card(text)
    assert front["library_name"] == "transformers" and "merged" in front["tags"]
    assert 'pipeline("text-generation", model="path/to/this/export")' in body
    _no_local_paths(text, out)
