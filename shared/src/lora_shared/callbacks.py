"""Small `TrainerCallback`s composed by every app: JSONL metrics, throughput + memory, curves PNG."""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from .runs import run_file

logger = logging.getLogger(__name__)


def peak_memory_mb() -> dict[str, float]:
    """Peak host RSS of this process (and peak CUDA memory when on GPU), in MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_mb": rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024}
    try:
        import torch

        if torch.cuda.is_available():
            out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    except ImportError:  # pragma: no cover
        pass
    return out


class ThroughputCallback(TrainerCallback):
    """Adds samples/s, tokens/s (when the Trainer counts input tokens) and peak memory to each log.

    Timed over the steps since the previous log, so the numbers are per window, not run averages
    that hide a slowdown; evaluation time between logs is excluded.
    """

    def __init__(self):
        self._t0 = None
        self._step0 = 0
        self._tokens0 = 0
        self._paused = 0.0
        self._eval_start = None

    def on_train_begin(self, args, state, control, **kw):
        self._t0, self._step0, self._tokens0 = (
            time.perf_counter(),
            state.global_step,
            state.num_input_tokens_seen or 0,
        )

    def on_prediction_step(self, args, state, control, **kw):
        if self._eval_start is None:
            self._eval_start = time.perf_counter()

    def on_evaluate(self, args, state, control, **kw):
        if self._eval_start is not None:
            self._paused += time.perf_counter() - self._eval_start
            self._eval_start = None

    def on_log(self, args, state, control, logs=None, **kw):
        if logs is None or self._t0 is None or "loss" not in logs:
            return
        now = time.perf_counter()
        elapsed = max(now - self._t0 - self._paused, 1e-9)
        steps = state.global_step - self._step0
        if steps <= 0:
            return
        batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1)
        extra = {"samples_per_s": round(steps * batch / elapsed, 3), "step_time_s": round(elapsed / steps, 4)}
        tokens = (state.num_input_tokens_seen or 0) - self._tokens0
        if tokens > 0:
            extra["tokens_per_s"] = round(tokens / elapsed, 1)
        extra.update({k: round(v, 1) for k, v in peak_memory_mb().items()})
        logs.update(extra)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)
        self._t0, self._step0, self._tokens0, self._paused = (
            now,
            state.global_step,
            state.num_input_tokens_seen or 0,
            0.0,
        )


class MetricsJsonlCallback(TrainerCallback):
    """Appends every log (train and eval) as one JSON line to `<output_dir>/metrics.jsonl`."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or not logs:
            return
        path = self.path or run_file(args.output_dir, "metrics.jsonl")  # staged when replacing a run
        path.parent.mkdir(parents=True, exist_ok=True)
        row = {"step": state.global_step, "epoch": state.epoch, **logs}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False, default=float) + "\n")


class PlotCurvesCallback(TrainerCallback):
    """Renders the loss / eval-metric curves to `<output_dir>/curves.png` after every evaluation and at the end.

    Redrawn at each evaluation so a long run can be watched; each PNG replaces the last atomically (temp file
    + os.replace), so a viewer never reads a half-written image.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None

    def _draw(self, args, state) -> None:
        if state.is_world_process_zero:
            from .plots import plot_curves

            plot_curves(state.log_history, self.path or run_file(args.output_dir, "curves.png"))

    def on_evaluate(self, args, state, control, **kw):
        self._draw(args, state)  # Trainer logs the eval metrics into log_history before this hook

    def on_train_end(self, args, state, control, **kw):
        self._draw(args, state)


class SafeCheckpointCallback(TrainerCallback):
    """Removes `training_args.bin` from each new checkpoint: a full pickle of the args object.

    Trainer writes it for humans and never reads it on resume (the resolved_config.yaml next to the
    adapter records the same settings as text), and a checkpoint must hold no file that runs code when
    unpickled. What remains (optimizer.pt, scheduler.pt, rng_state.pth) is plain tensor data that
    Trainer reloads with `torch.load(weights_only=True)`.
    """

    def on_save(self, args, state, control, **kw):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            (ckpt / "training_args.bin").unlink(missing_ok=True)


class TrainingInterrupted(Exception):
    """Raised after Ctrl-C once a resumable checkpoint is on disk; the CLI prints how to resume (exit 130)."""

    exit_code = 130


class InterruptCallback(TrainerCallback):
    """First Ctrl-C (SIGINT) or SIGTERM: finish the current step, save a checkpoint, stop with a resume hint.

    A second Ctrl-C interrupts at once (the default handler is restored after the first). Only installed
    in the main thread (signal handlers can't be set elsewhere).
    """

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handle(self, signum, frame):
        import signal

        self.requested = True
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        logger.warning("interrupt received: saving a checkpoint after this step (Ctrl-C again to abort now)")

    def on_train_begin(self, args, state, control, **kw):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def on_step_end(self, args, state, control, **kw):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True

    def on_save(self, args, state, control, **kw):
        if self.requested:
            self._restore()
            ckpt = f"{args.output_dir}/checkpoint-{state.global_step}"
            raise TrainingInterrupted(
                f"interrupted at step {state.global_step}: checkpoint saved to {ckpt}; "
                "re-run the same command with --resume to continue"
            )

    def on_train_end(self, args, state, control, **kw):
        self._restore()

    def _restore(self):
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def default_callbacks(args) -> list[TrainerCallback]:
    """The callbacks every app composes; early stopping when `args.early_stopping_patience` is set."""
    cbs: list[TrainerCallback] = [
        ThroughputCallback(),
        MetricsJsonlCallback(),
        PlotCurvesCallback(),
        SafeCheckpointCallback(),  # before InterruptCallback: its on_save raises to stop the run
        InterruptCallback(),
    ]
    patience = getattr(args, "early_stopping_patience", None)
    if patience:
        from transformers import EarlyStoppingCallback

        # EarlyStoppingCallback needs a best-model metric tracked at every evaluation.
        args.load_best_model_at_end = True
        args.metric_for_best_model = args.metric_for_best_model or "loss"
        cbs.append(EarlyStoppingCallback(early_stopping_patience=patience))
    return cbs
