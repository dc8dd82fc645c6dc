"""The web UI's run manager: launch any app's `train` as its own process, watch it, stop it, resume it.

No Gradio here (ui.py wires it to widgets). A run is `python -m <module> train --config C --output_dir D
[--field value ...]` in its own process group, its output in a log file; progress comes from the run's
metrics.jsonl. Stop sends SIGINT, on which the apps finish the step, save a checkpoint and exit 130;
Resume re-runs the same command with `--resume`. One run at a time (the CPU/GPU is shared with the engine).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# App name (the CLI's prog) -> import name; every one takes `train --config NAME --output_dir D`.
APPS = {
    "llm-chat": "llm_chat",
    "text-classifier": "text_classifier",
    "vision-cls": "vision_cls",
    "vision-det": "vision_det",
    "vision-pose": "vision_pose",
}
# The knobs the Train tab shows, as (flag, label); empty means "keep the config's value". `data_path`
# is not a flag: it becomes --data_dir or --data_files, whichever the app has.
KNOBS = [
    ("model_name_or_path", "Base model (hub id or local dir)"),
    ("dataset", "Dataset (bundled name, hub id or path)"),
    ("data_path", "Data path (a dir or files; overrides the dataset)"),
    ("lora_r", "LoRA r"),
    ("lora_alpha", "LoRA alpha"),
    ("lora_target_modules", "LoRA target modules (comma-separated)"),
    ("learning_rate", "Learning rate"),
    ("num_train_epochs", "Epochs"),
    ("per_device_train_batch_size", "Batch size"),
    ("max_steps", "Max steps (-1 = epochs decide)"),
]
LOG_TAIL_LINES = 40
_TQDM_STEP = re.compile(r"(\d+)/(\d+) \[")


def available_apps() -> list[str]:
    """The apps installed in this environment (an llm-chat-only install offers llm-chat alone)."""
    return [name for name, module in APPS.items() if importlib.util.find_spec(module) is not None]


def bundled_configs(app: str) -> list[str]:
    """The app's bundled config names (tiny, default, ...)."""
    from lora_shared.config import bundled_configs as names

    return names(f"{APPS.get(app, app)}.configs")


def _app_cli(app: str):
    """The app's `cli.APP`, or None when the module has no lora_shared CLI (then the process alone validates)."""
    try:
        return getattr(importlib.import_module(f"{APPS.get(app, app)}.cli"), "APP", None)
    except ImportError:
        return None


def train_argv(
    app: str,
    config: str,
    output_dir: str,
    knobs: dict[str, Any] | None = None,
    extra: str = "",
) -> list[str]:
    """`train --config C --output_dir D --knob value ... <extra flags>` for `app` (empty knobs are skipped)."""
    argv = ["train", "--config", str(config).strip(), "--output_dir", str(output_dir).strip()]
    fields = _field_names(app)
    for name, value in (knobs or {}).items():
        text = "" if value is None else str(value).strip()
        if not text:
            continue
        if name == "data_path":  # a file (list) -> --data_files, a folder -> --data_dir, where the app has it
            name = _data_flag(text, fields)
        if name == "lora_target_modules":
            argv += [f"--{name}", *[m.strip() for m in text.replace(",", " ").split() if m.strip()]]
        else:
            argv += [f"--{name}", text]
    return argv + shlex.split(extra or "")


def _data_flag(path: str, fields: set[str] | None) -> str:
    looks_like_file = bool(Path(path.split(",")[0].strip()).suffix) and not Path(path).is_dir()
    if fields is None:
        return "data_files" if looks_like_file else "data_dir"
    if "data_files" in fields and (looks_like_file or "data_dir" not in fields):
        return "data_files"
    return "data_dir" if "data_dir" in fields else "data_files"


def _field_names(app: str) -> set[str] | None:
    cli = _app_cli(app)
    if cli is None:
        return None
    from lora_shared.cli import command_groups
    from lora_shared.helptext import flag_names

    train = next(c for c in cli.commands if c.name == "train")
    groups, extra = command_groups(cli, train)
    return flag_names(groups + extra)


def validate(app: str, argv: list[str]) -> str | None:
    """The CLI's own one-line error for this `train` argv (unknown flag or config key, bad value), or None.

    Runs the app's parser in-process (no model is built), so bad input shows at once and exactly as the
    CLI prints it; what only the run can find (a missing data file) comes from its exit-2 line instead.
    """
    cli = _app_cli(app)
    if cli is None:
        return None
    from lora_shared.cli import build_config, check_flag_names
    from lora_shared.errors import UsageError

    train = next(c for c in cli.commands if c.name == "train")
    prefix = f"{cli.prog} train: error: "
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):  # argparse prints its message, then exits 2
            check_flag_names(cli, train, argv[1:])
            build_config(cli, train, argv[1:])
    except UsageError as e:
        return prefix + str(e)
    except SystemExit:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        return prefix + (lines[-1].split("error: ", 1)[-1] if lines else "invalid arguments")
    return None


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl written so far (a half-written last line is skipped)."""
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    """The last `n` lines of a log (progress-bar carriage returns folded to their last state)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64_000))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.rsplit("\r", 1)[-1] if "\r" in ln.rstrip("\r") else ln for ln in text.splitlines()]
    return "\n".join(lines[-n:])


def error_line(log_text: str, app: str) -> str | None:
    """The `<app> train: error: ...` (or interrupted) line the CLI printed, if any."""
    hits = [ln.strip() for ln in log_text.splitlines() if ln.strip().startswith(f"{app} train:")]
    return hits[-1] if hits else None


@dataclass
class Run:
    """One launched (or resumed) training process."""

    app: str
    argv: list[str]
    output_dir: Path
    log_path: Path
    proc: subprocess.Popen
    max_steps: int | None
    started: float = field(default_factory=time.time)
    stop_requested: bool = False
    ended: float | None = None

    @property
    def command(self) -> str:
        return shlex.join([self.app, *self.argv])

    def state(self) -> str:
        """running | stopping | finished | stopped | failed."""
        rc = self.proc.poll()
        if rc is None:
            return "stopping" if self.stop_requested else "running"
        if rc == 0:
            return "finished"
        return "stopped" if rc in (130, -signal.SIGINT) else "failed"


class RunManager:
    """Launch / poll / stop / resume one training run at a time; safe to call from Gradio's threads."""

    def __init__(self, work_dir: str | os.PathLike | None = None):
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="llm-chat-webui-runs-"))
        self.run: Run | None = None
        self._lock = threading.Lock()

    # -- actions --------------------------------------------------------------------------------------
    def launch(self, app: str, argv: list[str]) -> Run:
        """Start `app train ...` in its own process group; raises UsageError with the CLI's line on bad input."""
        from lora_shared.errors import UsageError

        with self._lock:
            if self.run is not None and self.run.proc.poll() is None:
                raise UsageError(
                    f"a run is already going ({self.run.command}, pid {self.run.proc.pid}); "
                    "stop it or wait for it to finish before launching another"
                )
            if app not in APPS and importlib.util.find_spec(app) is None:
                raise UsageError(f"unknown app {app!r}; choose from {', '.join(available_apps())}")
            problem = validate(app, argv)
            if problem:
                raise UsageError(problem.split(": error: ", 1)[-1])
            self.run = self._start(app, argv)
            return self.run

    def stop(self) -> str:
        """SIGINT the run's process group: the app saves a checkpoint after this step and exits 130."""
        run = self.run
        if run is None or run.proc.poll() is not None:
            return "no run is going"
        run.stop_requested = True
        try:
            os.killpg(run.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        return f"stopping {run.app} (checkpoint after the current step)"

    def resume(self) -> Run:
        """Re-run the last run's command with --resume (from its newest complete checkpoint)."""
        from lora_shared.errors import UsageError

        last = self.run
        if last is None:
            raise UsageError("nothing to resume: launch a run first")
        argv = list(last.argv)
        if "--resume" not in argv:
            argv.append("--resume")
        return self.launch(last.app, argv)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop a running child on server exit (SIGINT, then SIGKILL), so no orphan keeps training."""
        run = self.run
        if run is None or run.proc.poll() is not None:
            return
        self.stop()
        try:
            run.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait(5)

    # -- what the page shows --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Snapshot of the current run: state, step/max, last loss, elapsed, curves rows, log tail, error."""
        run = self.run
        if run is None:
            return {"state": "idle"}
        from lora_shared.runs import run_file

        state = run.state()
        if run.ended is None and run.proc.poll() is not None:
            run.ended = time.time()  # the first poll after the exit: close enough for a progress readout
        rows = read_metrics(run_file(run.output_dir, "metrics.jsonl"))
        if not rows:  # published already (the run finished and moved its staged log into output_dir)
            rows = read_metrics(run.output_dir / "metrics.jsonl")
        log = tail(run.log_path)
        losses = [r for r in rows if "loss" in r]
        step = max((int(r.get("step", 0)) for r in rows), default=0)
        max_steps = run.max_steps or _tqdm_total(log)
        info: dict[str, Any] = {
            "state": state,
            "app": run.app,
            "command": run.command,
            "pid": run.proc.pid,
            "output_dir": str(run.output_dir),
            "step": step,
            "max_steps": max_steps,
            "loss": losses[-1]["loss"] if losses else None,
            "eval_loss": next((r["eval_loss"] for r in reversed(rows) if "eval_loss" in r), None),
            "elapsed_s": round((run.ended or time.time()) - run.started, 1),
            "rows": rows,
            "log": log,
            "returncode": run.proc.poll(),
        }
        if state in ("failed", "stopped"):
            info["error"] = error_line(log, run.app) or f"{run.app} train: exited with code {run.proc.poll()}"
        if state == "finished":
            info["adapter_dir"] = str(run.output_dir)
            try:
                info["metrics"] = json.loads((run.output_dir / "metrics.json").read_text())
            except (OSError, ValueError):
                pass
        return info

    # -- internals ------------------------------------------------------------------------------------
    def _start(self, app: str, argv: list[str]) -> Run:
        out = Path(_flag_value(argv, "--output_dir") or ".").expanduser()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.work_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{app}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")  # the log tail is live, not a 4 KiB block behind
        with open(log_path, "ab") as log:
            log.write(f"$ {shlex.join([app, *argv])}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", APPS.get(app, app), *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: Stop's SIGINT reaches it and its workers only
            )
        steps = _flag_value(argv, "--max_steps")
        max_steps = int(steps) if steps and steps.lstrip("-").isdigit() and int(steps) > 0 else None
        if max_steps is None:
            max_steps = _config_max_steps(app, argv)
        return Run(app, list(argv), out, log_path, proc, max_steps)


def _flag_value(argv: list[str], flag: str) -> str | None:
    value = None
    for i, tok in enumerate(argv):
        if tok == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif tok.startswith(flag + "="):
            value = tok.split("=", 1)[1]
    return value


def _config_max_steps(app: str, argv: list[str]) -> int | None:
    """max_steps from the resolved config (YAML + flags) when it is > 0; None when epochs decide."""
    cli = _app_cli(app)
    if cli is None:
        return None
    from lora_shared.cli import build_config

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            cfg, _ = build_config(cli, next(c for c in cli.commands if c.name == "train"), argv[1:])
    except (Exception, SystemExit):
        return None
    steps = getattr(cfg.train, "max_steps", -1)
    return int(steps) if steps and steps > 0 else None


def _tqdm_total(log: str) -> int | None:
    """The training bar's total from the log (`3/40 [`), for runs whose length epochs decide."""
    totals = [int(m.group(2)) for m in _TQDM_STEP.finditer(log)]
    return max(totals) if totals else None
