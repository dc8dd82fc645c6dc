"""Watching a run: `--report_to` checked before any work, curves.png redrawn at every evaluation (issue 18)."""

from dataclasses import dataclass, field

import pytest
from lora_shared.callbacks import PlotCurvesCallback, default_callbacks
from lora_shared.config import LoraArgs, parse_config, validate_args
from lora_shared.errors import UsageError
from transformers import TrainerControl, TrainerState, TrainingArguments


@dataclass
class DataArgs:
    size: int = field(default=8, metadata={"help": "Image side."})


TYPES = (DataArgs, LoraArgs, TrainingArguments)


def _parsed(tmp_path, *flags):
    return parse_config(TYPES, ["--output_dir", str(tmp_path / "run"), *flags])


def test_a_tracker_that_is_not_installed_is_one_usage_error(tmp_path, monkeypatch):
    """wandb is not a dependency: naming it must fail before the run dir exists, saying what to install."""
    from transformers.integrations import integration_utils

    monkeypatch.setattr(integration_utils, "is_wandb_available", lambda: False)
    with pytest.raises(UsageError) as e:
        validate_args(_parsed(tmp_path, "--report_to", "wandb"), "train")
    msg = str(e.value)
    assert msg.startswith("--report_to wandb: wandb is not installed")
    assert "uv pip install wandb" in msg and "--report_to tensorboard" in msg
    assert "\n" not in msg
    assert not (tmp_path / "run").exists()


def test_an_unknown_tracker_is_named(tmp_path):
    with pytest.raises(
        UsageError, match=r"--report_to tensorbord: not a tracker transformers knows; .*tensorboard"
    ):
        validate_args(_parsed(tmp_path, "--report_to", "tensorbord"), "train")


@pytest.mark.parametrize("value", ["tensorboard", "none"])
def test_installed_trackers_pass(tmp_path, value):
    validate_args(_parsed(tmp_path, "--report_to", value), "train")  # tensorboard is a lora-shared dependency


def test_eval_does_not_check_trackers(tmp_path, monkeypatch):
    """eval/predict never start a tracker (the apps set report_to=[]), so they are not refused over one."""
    from transformers.integrations import integration_utils

    monkeypatch.setattr(integration_utils, "is_wandb_available", lambda: False)
    validate_args(_parsed(tmp_path, "--report_to", "wandb"), "eval")


def test_curves_png_is_redrawn_at_every_evaluation(tmp_path):
    """A run still going has a fresh curves.png after each eval, not only at the end."""
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    state = TrainerState()
    state.log_history = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 2, "eval_loss": 1.7}]
    cb = next(c for c in default_callbacks(args) if isinstance(c, PlotCurvesCallback))
    png = tmp_path / "curves.png"
    cb.on_evaluate(args, state, TrainerControl(), metrics={"eval_loss": 1.7})
    first = png.read_bytes()
    assert first.startswith(b"\x89PNG")

    state.log_history += [{"step": 3, "loss": 1.0}, {"step": 4, "eval_loss": 1.2, "eval_accuracy": 0.5}]
    cb.on_evaluate(args, state, TrainerControl(), metrics={"eval_loss": 1.2})
    assert png.read_bytes() != first  # redrawn with the second eval (and a metrics panel)
    assert not list(tmp_path.glob(".curves.png.*"))  # written through a temp file + os.replace
