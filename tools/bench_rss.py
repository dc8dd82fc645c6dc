"""Where a training run's memory goes: resident memory (RSS) sampled around each phase of one run.

    uv run --frozen python tools/bench_rss.py --app text_classifier --mode ours|plain -- <train flags> [-- <more>]

Runs our `train` (or the plain script of tools/bench_plain.py) in this process, with a thread sampling
/proc/self/statm every 20 ms, and wraps the calls that allocate (data loading, tokenizer, model build,
LoRA, tokenisation, Trainer creation, each of the first training steps, and on our side what follows
training: predict, adapter, confusion PNG). Prints one line per phase: RSS when it ended, the growth it
caused, and the peak inside it. Several `--` separated flag sets run one after another in this process, as
`make bench`'s workers run them (tiny, then offline): what an earlier run leaves resident shows as the RSS
the next one starts from. Used to trace the text-classifier offline peak-RSS gap in BENCHMARKS.md (the tiny
run's confusion PNG imported snownlp: +413 MB for the rest of the process); not part of `make bench`.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_MB


class Tracer:
    """RSS at phase boundaries and the peak in between (a sampling thread)."""

    def __init__(self, period: float = 0.02):
        self.rows: list[tuple[str, float, float, float]] = []  # phase, rss at end, growth, peak inside
        self._peak = self._start = rss_mb()
        self._depth = 0
        self._stop = False
        threading.Thread(target=self._sample, args=(period,), daemon=True).start()

    def _sample(self, period: float) -> None:
        while not self._stop:
            self._peak = max(self._peak, rss_mb())
            time.sleep(period)

    def mark(self, phase: str) -> None:
        now = rss_mb()
        self.rows.append((phase, now, now - self._start, max(self._peak, now)))
        self._start = self._peak = now

    def wrap(self, owner, name: str, phase: str | None = None) -> None:
        """Mark before and after each top-level call of owner.name."""
        fn = getattr(owner, name)
        label = phase or name

        @functools.wraps(fn)
        def wrapped(*a, **kw):
            self._depth += 1
            if self._depth == 1:
                self.mark(f"(before {label})")
            try:
                return fn(*a, **kw)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.mark(label)

        setattr(owner, name, wrapped)

    def report(self) -> str:
        lines = [f"{'phase':40s} {'RSS MB':>8s} {'growth':>8s} {'peak':>8s}"]
        for phase, now, grow, peak in self.rows:
            if phase.startswith("(before") and abs(grow) < 5:
                continue  # nothing happened between two phases
            lines.append(f"{phase:40s} {now:8.0f} {grow:+8.0f} {peak:8.0f}")
        lines.append(f"{'ru_maxrss (process peak)':40s} {_maxrss():8.0f}")
        return "\n".join(lines)


def _maxrss() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def instrument(tr: Tracer, app: str, mode: str, steps: int) -> None:
    """Phase markers on the calls both sides make (Trainer, steps) and on each side's own helpers."""
    import datasets
    import peft
    import transformers

    tr.wrap(transformers.Trainer, "__init__", "Trainer(...)")
    # (from_pretrained is a classmethod: its growth shows as "(before get_peft_model)" on the plain side)
    tr.wrap(peft, "get_peft_model", "get_peft_model (LoRA)")
    tr.wrap(datasets.Dataset, "map", "Dataset.map (tokenise)")
    if mode == "ours":
        train = importlib.import_module(f"{app}.train")
        names = ("load_splits", "build_tokenizer", "build_model", "stage_pretrained", "tokenize_dataset")
        names += ("save_adapter", "save_confusion_png", "write_metrics")  # after training: a user's peak too
        for name in names:
            if hasattr(train, name):
                tr.wrap(train, name)
        tr.wrap(transformers.Trainer, "predict", "Trainer.predict")

    orig = transformers.Trainer.__init__

    def __init__(self, *a, **kw):
        class Steps(transformers.TrainerCallback):
            def on_step_end(self, args, state, control, **k):
                if state.global_step <= steps:
                    tr.mark(f"training step {state.global_step}")

            def on_train_begin(self, args, state, control, **k):
                tr.mark("train() setup (optimizer, dataloader)")

        kw["callbacks"] = [*(kw.get("callbacks") or []), Steps()]
        orig(self, *a, **kw)

    transformers.Trainer.__init__ = __init__


def main(argv: list[str] | None = None) -> int:
    from bench_worker import _split

    argv = list(sys.argv[1:] if argv is None else argv)
    head, *flag_sets = _split(argv)
    p = argparse.ArgumentParser()
    p.add_argument("--app", required=True, help="import name, e.g. text_classifier")
    p.add_argument("--mode", choices=["ours", "plain"], required=True)
    p.add_argument("--steps", type=int, default=3, help="training steps to mark one by one")
    a = p.parse_args(head)
    tr = Tracer()
    import torch  # noqa: F401  (its import is part of both sides' baseline)
    import transformers  # noqa: F401

    tr.mark("imports (torch, transformers)")
    instrument(tr, a.app, a.mode, a.steps)
    for i, flags in enumerate(flag_sets or [[]], start=1):
        if a.mode == "ours":
            code = importlib.import_module(f"{a.app}.cli").main(["train", *flags])
            if code:
                raise SystemExit(code)
        else:
            from bench_plain import PLAIN, app_config

            PLAIN[a.app](app_config(a.app, flags))
        tr.mark(f"end of run {i}")
    print(tr.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
