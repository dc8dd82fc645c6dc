"""Kill and resume through the real CLI: SIGKILL mid-run + a half-written checkpoint, then `--resume`, must
end bit-for-bit (atol 1e-5) where an uninterrupted run with the same seed ends; Ctrl-C saves and exits 130.

The SIGKILL run is a subprocess slowed by a sleep per step (numerics untouched), so the kill lands after
a checkpoint exists and before the run ends. The reference, the resumed half and the Ctrl-C run are
in-process.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_STEPS, SAVE_STEPS = 12, 3

# Tiny runs: several checkpoints, a loss logged every step, no eval during training.
APPS = {
    "vision-cls": pytest.param(
        "vision-cls",
        ["--config", "tiny", "--demo_images_per_class", "8"],
        id="vision-cls",
    ),
    "text-classifier": pytest.param(
        "text-classifier",
        [
            "--config",
            "tiny",
            "--max_train_samples",
            "48",
            "--max_eval_samples",
            "12",
            "--per_device_train_batch_size",
            "8",
        ],
        id="text-classifier",
        marks=pytest.mark.slow,
    ),
    # Augmentation seeded per image and epoch (lora_shared.seed): the resumed run replays it exactly.
    "vision-det": pytest.param("vision-det", ["--config", "tiny"], id="vision-det", marks=pytest.mark.slow),
}
COMMON = [
    "--max_steps", str(MAX_STEPS),
    "--save_strategy", "steps",
    "--save_steps", str(SAVE_STEPS),
    "--save_total_limit", "10",
    "--logging_steps", "1",
    "--eval_strategy", "no",
    "--seed", "7",
]  # fmt: skip

# The child: the app's own CLI, with every optimizer step delayed so a signal can land mid-run.
CHILD = """
import os, sys, time
from transformers import Trainer
_step = Trainer.training_step
def training_step(self, *a, **k):
    time.sleep(float(os.environ["LORAWORKS_TEST_STEP_SLEEP"]))
    return _step(self, *a, **k)
Trainer.training_step = training_step
from {module}.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _module(app: str) -> str:
    return app.replace("-", "_")


def _require(app: str):
    if not (ROOT / "packages" / app / "src" / _module(app) / "cli.py").is_file():
        pytest.skip(f"{app} is not implemented yet")
    return importlib.import_module(f"{_module(app)}.cli")


def _spawn(app: str, argv: list[str], sleep: float = 0.4) -> subprocess.Popen:
    env = {**os.environ, "LORAWORKS_TEST_STEP_SLEEP": str(sleep), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD.format(module=_module(app)), *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(proc: subprocess.Popen, cond, what: str, timeout: float = 240.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"training exited (rc={proc.returncode}) before {what}:\n{err[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def _pinned(app: str, argv: list[str], ref: Path) -> list[str]:
    """text-classifier's random tiny model trains a WordPiece vocab in-process, and the `tokenizers`
    trainer is not deterministic across processes (measured: 3 runs on the same 48 texts, 3 different
    vocabularies). Runs compared with the reference reuse its vocabulary so the comparison is fair."""
    if app == "text-classifier":
        return [*argv, "--tokenizer_name_or_path", str(ref / "tokenizer")]
    return argv


def _final_loss(run: Path) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r and r["step"] == MAX_STEPS][-1]


def _assert_same_adapter(a: Path, b: Path):
    import torch
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=0, msg=f"adapter tensor {k} differs")


_REFERENCE: dict[str, Path] = {}


def _reference(app: str, argv: list[str], cli, tmp_path_factory) -> Path:
    """The uninterrupted run (same seed, same flags), once per app."""
    if app not in _REFERENCE:
        out = tmp_path_factory.mktemp(f"{app}-reference")
        assert cli.main(["train", *argv, *COMMON, "--output_dir", str(out)]) == 0
        _REFERENCE[app] = out
    return _REFERENCE[app]


@pytest.mark.parametrize(("app", "argv"), list(APPS.values()))
def test_sigkill_then_resume_matches_uninterrupted_run(app, argv, tmp_path, tmp_path_factory, capsys):
    from lora_shared.runs import STAGE_DIR, last_complete_checkpoint

    cli = _require(app)
    ref = _reference(app, argv, cli, tmp_path_factory)
    argv = _pinned(app, argv, ref)
    out = tmp_path / "run"

    # 1. Train in a child process and SIGKILL it once the first checkpoint is complete.
    proc = _spawn(app, ["train", *argv, *COMMON, "--output_dir", str(out)])
    _wait_for(proc, lambda: last_complete_checkpoint(out) is not None, "the first complete checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "adapter_model.safetensors").exists(), "the run finished before the kill"
    # What the run writes before its adapter (base, config) is staged: nothing was published half-way.
    assert (out / STAGE_DIR / "resolved_config.yaml").is_file()
    assert not (out / "resolved_config.yaml").exists() and not (out / "base_model").exists()
    newest = last_complete_checkpoint(out)
    step = int(newest.name.split("-")[1])
    assert step < MAX_STEPS

    # 2. Plant what a kill during the next save leaves: weights cut short, no trainer_state.json.
    planted = out / f"checkpoint-{step + SAVE_STEPS}"
    shutil.rmtree(planted, ignore_errors=True)
    planted.mkdir()
    weights = (newest / "adapter_model.safetensors").read_bytes()
    (planted / "adapter_model.safetensors").write_bytes(weights[: len(weights) // 3])
    (planted / "optimizer.pt").write_bytes(b"\x80\x02half")

    # 3. Resume with the same command + --resume: picks the newest complete checkpoint, ignores the planted one.
    capsys.readouterr()
    assert cli.main(["train", *argv, *COMMON, "--output_dir", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"ignoring incomplete checkpoint {planted}" in err
    assert f"resuming from {newest}" in err

    # 4. Same final loss and adapter weights as the uninterrupted run.
    assert _final_loss(out) == pytest.approx(_final_loss(ref), abs=1e-5)
    _assert_same_adapter(out, ref)
    assert not list(out.glob(".adapter.*")), "temp dirs left behind"
    assert (out / "resolved_config.yaml").is_file() and not (out / STAGE_DIR).exists()


@pytest.mark.parametrize(("app", "argv"), list(APPS.values()))
def test_ctrl_c_saves_a_checkpoint_and_exits_130_with_resume_hint(
    app, argv, tmp_path, tmp_path_factory, capsys, monkeypatch
):
    """A real SIGINT, delivered to this process at the start of step 2 (between scheduled checkpoints).

    In-process (the CLI installs its handler in the main thread, where pytest runs tests), so no
    second interpreter start-up is paid; the subprocess path is covered by the SIGKILL test.
    """
    from lora_shared.runs import is_complete_checkpoint
    from transformers import Trainer

    cli = _require(app)
    ref = _reference(app, argv, cli, tmp_path_factory)
    argv = _pinned(app, argv, ref)
    out = tmp_path / "run"
    real_step = Trainer.training_step

    def training_step(self, *a, **k):
        if self.state.global_step == 1 and not getattr(self, "_sent", False):
            self._sent = True
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in the terminal sends
        return real_step(self, *a, **k)

    monkeypatch.setattr(Trainer, "training_step", training_step)
    handler_before = signal.getsignal(signal.SIGINT)
    capsys.readouterr()
    assert cli.main(["train", *argv, *COMMON, "--output_dir", str(out)]) == 130
    err = capsys.readouterr().err
    monkeypatch.undo()
    assert "Traceback" not in err
    # One line (tqdm's bar may share it: it redraws with \r and no newline).
    hint = [line.split("\r")[-1] for line in err.splitlines() if f"{app} train: interrupted at step" in line]
    assert len(hint) == 1 and "--resume" in hint[0], err[-3000:]
    ckpt = Path(hint[0].split("checkpoint saved to ")[1].split(";")[0])
    assert ckpt.name == "checkpoint-2" and is_complete_checkpoint(ckpt)  # saved off-schedule (save_steps=3)
    assert not (out / "adapter_model.safetensors").exists()  # no final adapter from an interrupted run
    assert signal.getsignal(signal.SIGINT) is handler_before  # the CLI handed SIGINT back

    # Forgetting --resume is refused (a fresh run would write over these checkpoints), before any work.
    assert cli.main(["train", *argv, *COMMON, "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{app} train: error: --output_dir {out}: holds checkpoints of an unfinished run" in err, err
    assert "--resume" in err and is_complete_checkpoint(ckpt)

    # Resuming from the Ctrl-C checkpoint also ends where the uninterrupted run ends.
    assert cli.main(["train", *argv, *COMMON, "--output_dir", str(out), "--resume"]) == 0
    assert f"resuming from {ckpt}" in capsys.readouterr().err
    assert _final_loss(out) == pytest.approx(_final_loss(ref), abs=1e-5)
    _assert_same_adapter(out, ref)
