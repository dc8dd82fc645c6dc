"""One measured training run for `tools/bench.py`, in its own process (so peak RSS is its own).

    python tools/bench_worker.py --app vision_cls --mode ours|plain --result r.json [--flops] -- <train flags>

`ours` runs the app's real `train` command (`<app>.cli.main(["train", ...])`); `plain` resolves the very
same flags with the app's config parser and hands them to the minimal Trainer+peft script for that app
in `bench_plain.py`; `trl` hands them to TRL's `SFTTrainer` (`bench_peer.py`, llm-chat only). Both are instrumented identically, by patching `transformers.Trainer.__init__`:
- a callback stamps `time.perf_counter()` at every optimizer step end (so a step's time includes data
  loading, logging and callbacks: everything a user waits for),
- a forward pre-hook on the model counts real (non-padding) tokens and samples of training batches,
- with --flops, the first step (a warm-up step, never timed) runs under `torch.utils.flop_counter`,
  which counts the FLOPs of every matmul/conv of forward AND backward as they actually execute,
- the logged training loss of every logging step is kept (the peer section compares loss curves),
- peak RSS (ru_maxrss) is read at train end.
Several `--` separated flag sets run one after another in the same process (scaling sweeps).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


class Probe:
    """What one training run measured."""

    def __init__(self, count_flops: bool, profile: bool = False):
        self.count_flops = count_flops
        self.profile = profile  # profile the last step (then dropped from the timings)
        self.profile_rows: list[dict] | None = None
        self._prof = None
        self.stamps: list[float] = []
        self.cpu_stamps: list[float] = []  # process CPU seconds: a step's work even on a contended machine
        self.tokens: list[int] = []  # real tokens per optimizer step
        self.samples: list[int] = []
        self.slots: list[int] = []  # token positions computed (real + padding)
        self.flops_first_step: float | None = None
        self.rss_train_mb: float | None = None
        self.gpu_peak_mb: float | None = None
        self.losses: list[list] = []  # [global step, logged training loss] (per step with logging_steps 1)
        self._tok = self._smp = self._slots = 0
        self._flop_mode = None

    # ---- forward pre-hook: count what the model really sees in training
    def forward_hook(self, module, args, kwargs):
        if not module.training:
            return
        mask, ids = kwargs.get("attention_mask"), kwargs.get("input_ids")
        pos = kwargs.get("position_ids")
        if ids is None and args and hasattr(args[0], "shape"):
            ids = args[0]
        if ids is not None and hasattr(ids, "numel") and not ids.dtype.is_floating_point:
            self._slots += int(ids.numel())
        cu = kwargs.get("cu_seq_lens_q")
        if cu is not None:  # varlen packing: one unpadded row, dialog boundaries given
            self._tok += int(cu[-1])
            self._smp += len(cu) - 1
        elif mask is not None and hasattr(mask, "sum") and mask.dim() == 2:
            self._tok += int(mask.sum())
            self._smp += int(mask.shape[0])
        elif ids is not None and hasattr(ids, "numel") and ids.dtype.is_floating_point is False:
            # padding-free packing: dialogs start where position_ids restart at 0
            tok, smp = packed_counts(ids, pos, kwargs.get("labels"))
            self._tok += tok
            self._smp += smp
        else:
            pix = kwargs.get("pixel_values")
            if pix is None and args and hasattr(args[0], "shape"):
                pix = args[0]
            if pix is not None and hasattr(pix, "shape"):
                self._smp += int(pix.shape[0])

    def callback(self):
        from transformers import TrainerCallback

        probe = self

        class _StepTimer(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                probe.stamps.append(time.perf_counter())
                probe.cpu_stamps.append(time.process_time())

            def on_step_begin(self, args, state, control, **kw):
                if probe.profile and state.global_step == state.max_steps - 1:
                    from torch.profiler import ProfilerActivity, profile

                    probe._prof = profile(activities=[ProfilerActivity.CPU])
                    probe._prof.__enter__()
                if probe.count_flops and state.global_step == 0 and probe._flop_mode is None:
                    from torch.utils.flop_counter import FlopCounterMode

                    probe._flop_mode = FlopCounterMode(display=False)
                    probe._flop_mode.__enter__()

            def on_step_end(self, args, state, control, **kw):
                if probe._prof is not None:
                    probe._prof.__exit__(None, None, None)
                    probe.profile_rows = profile_rows(probe._prof)
                    probe._prof = None
                    return  # a profiled step is slower: not timed
                if probe._flop_mode is not None and probe.flops_first_step is None:
                    probe._flop_mode.__exit__(None, None, None)
                    probe.flops_first_step = float(probe._flop_mode.get_total_flops())
                probe.stamps.append(time.perf_counter())
                probe.cpu_stamps.append(time.process_time())
                probe.tokens.append(probe._tok)
                probe.samples.append(probe._smp)
                probe.slots.append(probe._slots)
                probe._tok = probe._smp = probe._slots = 0

            def on_log(self, args, state, control, logs=None, **kw):
                if logs and "loss" in logs:
                    probe.losses.append([state.global_step, float(logs["loss"])])

            def on_train_end(self, args, state, control, **kw):
                probe.rss_train_mb = peak_rss_mb()
                import torch

                if torch.cuda.is_available():  # on a GPU the memory that matters is the device's
                    probe.gpu_peak_mb = torch.cuda.max_memory_allocated() / 2**20

        return _StepTimer()

    def as_dict(self) -> dict:
        steps = [b - a for a, b in zip(self.stamps, self.stamps[1:])]
        return {
            "step_times": steps,
            "cpu_step_times": [b - a for a, b in zip(self.cpu_stamps, self.cpu_stamps[1:])],
            "tokens": self.tokens,
            "samples": self.samples,
            "slots": self.slots,
            "flops_first_step": self.flops_first_step,
            "rss_train_mb": self.rss_train_mb,
            "profile": self.profile_rows,
            "losses": self.losses,
            "gpu_peak_mb": self.gpu_peak_mb,
        }


def packed_counts(ids, pos, labels) -> tuple[int, int]:
    """(real tokens, dialogs) of a padding-free batch. Rows of bin-packed batches end in a fill segment
    (pad tokens, position ids from 0, no label): a segment counts only if it has a supervised label, as
    every tokenised dialog does (ours and TRL's drop dialogs without one)."""
    if pos is None:
        return int(ids.numel()), int(ids.shape[0])
    starts = (pos == 0).reshape(-1)
    if labels is None or labels.shape != ids.shape:
        return int(ids.numel()), int(starts.sum())
    seg = starts.long().cumsum(0) - 1  # segment index of every token, flattened row by row
    n = int(seg[-1]) + 1
    sup = (labels.reshape(-1) != -100).long()
    real = seg.new_zeros(n).index_add_(0, seg, sup) > 0
    lengths = seg.new_zeros(n).index_add_(0, seg, seg.new_ones(seg.shape))
    return int(lengths[real].sum()), int(real.sum())


def profile_rows(prof, top: int = 10) -> list[dict]:
    """Top ops by self CPU time of one profiled step, with their share of the step's total."""
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        {
            "op": e.key,
            "self_ms": e.self_cpu_time_total / 1e3,
            "share": e.self_cpu_time_total / total,
            "calls": e.count,
        }
        for e in events[:top]
    ] + [{"op": "(all ops)", "self_ms": total / 1e3, "share": 1.0, "calls": sum(e.count for e in events)}]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def install(probes: list[Probe], count_flops: bool, profile: list[bool]) -> None:
    """Patch Trainer.__init__ so every Trainer built from now on is instrumented by a fresh Probe."""
    import transformers

    orig = transformers.Trainer.__init__

    def __init__(self, *args, **kwargs):
        probe = Probe(count_flops, profile[0])
        probes.append(probe)
        cbs = list(kwargs.get("callbacks") or [])
        kwargs["callbacks"] = [*cbs, probe.callback()]
        orig(self, *args, **kwargs)
        self.model.register_forward_pre_hook(probe.forward_hook, with_kwargs=True)

    transformers.Trainer.__init__ = __init__


def run_ours(module: str, flags: list[str]) -> None:
    code = importlib.import_module(f"{module}.cli").main(["train", *flags])
    if code:
        raise SystemExit(f"{module} train exited {code}")


def run_plain(module: str, flags: list[str]) -> None:
    from bench_plain import PLAIN, app_config

    PLAIN[module](app_config(module, flags))


def run_trl(module: str, flags: list[str]) -> dict:
    """TRL's SFTTrainer on the same resolved config (tools/bench_peer.py); returns what it checked."""
    from bench_peer import PEERS
    from bench_plain import app_config

    return PEERS[module](app_config(module, flags))


RUNNERS = {"ours": run_ours, "plain": run_plain, "trl": run_trl}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    head, *flag_sets = _split(argv)
    p = argparse.ArgumentParser()
    p.add_argument("--app", required=True, help="import name, e.g. vision_cls")
    p.add_argument("--mode", choices=sorted(RUNNERS), required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--flops", action="store_true")
    a = p.parse_args(head)

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    import logging

    logging.disable(logging.WARNING)  # the bench reads numbers, not logs; errors still raise
    probes: list[Probe] = []
    profile = [False]  # set per flag set: `--bench_profile` is ours, not the app's
    install(probes, a.flops, profile)
    t0 = time.perf_counter()
    runs = []
    for flags in flag_sets or [[]]:
        n = len(probes)
        profile[0] = "--bench_profile" in flags
        flags = [f for f in flags if f != "--bench_profile"]
        # a bf16 run measures bf16 even where the apps would fall back to fp32 (CPUs without native bf16)
        if "--bf16" in flags and flags[flags.index("--bf16") + 1 :][:1] == ["true"]:
            os.environ["LORAWORKS_FORCE_BF16"] = "1"
        else:
            os.environ.pop("LORAWORKS_FORCE_BF16", None)
        try:
            extra = RUNNERS[a.mode](a.app, flags)
            if len(probes) == n:
                raise SystemExit("no Trainer was built: nothing measured")
            runs.append({**probes[n].as_dict(), **(extra or {})})  # the first Trainer is the training one
        except (Exception, SystemExit) as e:  # one bad configuration must not cost the runs after it
            print(f"bench_worker: run {len(runs)} failed: {e}", file=sys.stderr)
            runs.append({"error": str(e)[:300]})
        # written after every run, so a run killed by the bench's timeout keeps the finished ones
        out = {"runs": runs, "peak_rss_mb": peak_rss_mb(), "wall_s": time.perf_counter() - t0}
        out["threads"] = torch.get_num_threads()
        tmp = Path(a.result).with_suffix(".tmp")
        tmp.write_text(json.dumps(out))
        tmp.replace(a.result)
    return 0


def _split(argv: list[str]) -> list[list[str]]:
    """['--app', 'x', '--', 'a', '--', 'b'] -> [['--app', 'x'], ['a'], ['b']]."""
    parts, cur = [], []
    for tok in argv:
        if tok == "--":
            parts.append(cur)
            cur = []
        else:
            cur.append(tok)
    parts.append(cur)
    return parts


if __name__ == "__main__":
    raise SystemExit(main())
