"""`make bench` machinery on trivially small cases: timing/ratio helpers, token counting, the JSON and
Markdown it writes (a real `--quick --only ceiling` run), and the table renderer on known numbers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

import bench  # noqa: E402
import bench_worker  # noqa: E402


def test_timed_windows_skip_warmup_and_drop_partial_window():
    steps = [9.0, 9.0, 1.0, 1.0, 2.0, 2.0, 3.0]  # two warm-up steps, then windows of 2
    assert bench.timed_windows(steps, warmup=2, per_window=2) == [1.0, 2.0]
    assert bench.timed_windows(steps, warmup=7, per_window=1) == []


def test_ratio_median_verdict():
    assert bench.median([3.0, 1.0, 2.0, None]) == 2.0
    assert bench.median([]) is None
    assert bench.ratio(1.02, 1.0) == pytest.approx(1.02)
    assert bench.ratio(1.0, 0) is None and bench.ratio(None, 1.0) is None
    assert bench.verdict(1.01, 1.02, higher_is_better=False) == "met"
    assert bench.verdict(1.03, 1.02, higher_is_better=False) == "MISSED"
    assert bench.verdict(2.5, 2.0, higher_is_better=True) == "met"
    assert bench.verdict(None, 2.0, higher_is_better=True) == "n/a"


def test_summarize_pools_windows_of_all_rounds_and_takes_ratios():
    v = bench.Variant("tiny", ["--x"], warmup=1, per_window=2)
    run = lambda times, rss: {  # noqa: E731
        "step_times": times,
        "tokens": [0] * len(times),
        "samples": [4] * len(times),
        "flops_first_step": 400.0,
        "rss_train_mb": rss,
    }
    v.results["ours"] = [run([5, 1.1, 1.1, 1.1, 1.1], 110.0), run([5, 1.1, 1.1, 1.1, 1.1], 110.0)]
    v.results["plain"] = [run([5, 1.0, 1.0, 1.0, 1.0], 100.0), run([5, 1.0, 1.0, 1.0, 1.0], 100.0)]
    s = bench.summarize(v)
    assert len(s["ours"]["windows"]) == 4
    assert s["time_ratio"] == pytest.approx(1.1)
    assert s["rss_ratio"] == pytest.approx(1.1)
    assert s["ours"]["unit"] == "samples"
    assert s["ours"]["units_per_s"] == pytest.approx(4 / 1.1)
    assert s["ours"]["flops_per_unit"] == pytest.approx(100.0)  # 400 FLOPs over the first step's 4 samples
    assert s["ours"]["achieved_gflops"] == pytest.approx(100.0 * 4 / 1.1 / 1e9)


def test_probe_counts_real_tokens_padded_and_padding_free():
    import torch

    probe = bench_worker.Probe(count_flops=False)
    module = torch.nn.Linear(1, 1).train()
    # padded batch: 2 rows, 5 real tokens out of 8
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    probe.forward_hook(module, (), {"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": mask})
    assert (probe._tok, probe._smp) == (5, 2)
    # padding-free packing: one row of 7 tokens holding 3 dialogs (position_ids restart at 0)
    probe._tok = probe._smp = 0
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1]])
    probe.forward_hook(module, (), {"input_ids": torch.zeros(1, 7, dtype=torch.long), "position_ids": pos})
    assert (probe._tok, probe._smp) == (7, 3)
    # images: samples only; eval forwards are not counted
    probe._tok = probe._smp = 0
    probe.forward_hook(module, (), {"pixel_values": torch.zeros(3, 3, 8, 8)})
    assert (probe._tok, probe._smp) == (0, 3)
    module.eval()
    probe.forward_hook(module, (), {"pixel_values": torch.zeros(3, 3, 8, 8)})
    assert probe._smp == 3


def test_quick_ceiling_run_writes_json_and_markdown(tmp_path):
    res, md = tmp_path / "results.json", tmp_path / "BENCH.md"
    code = bench.main(["--quick", "--only", "ceiling", "--results", str(res), "--markdown", str(md)])
    assert code == 0
    data = json.loads(res.read_text())
    assert set(data) >= {"meta", "sections", "skipped", "notes"}
    ceil = data["sections"]["ceiling"]
    assert ceil["fp32_gflops"] > 0 and ceil["bf16_gflops"] > 0
    assert isinstance(ceil["native_bf16"], bool)
    assert data["meta"]["sections"] == ["ceiling"] and data["meta"]["quick"] is True
    text = md.read_text()
    assert text.startswith("# Benchmarks") and "## Hardware ceiling" in text
    assert "shared" in text  # the machine-load note is always printed


def test_markdown_tables_from_known_numbers():
    side = {
        "step_time_s": 0.1,
        "peak_rss_mb": 100.0,
        "windows": [0.1] * 5,
        "unit": "tokens",
        "units_per_s": 1000.0,
        "flops_per_unit": 2e6,
        "achieved_gflops": 2.0,
    }
    results = {
        "meta": {
            "date": "2026-01-01 00:00 UTC",
            "minutes": 1.0,
            "quick": False,
            "sections": bench.SECTIONS,
            "cpu": "cpu",
            "cores": 2,
            "threads": 2,
            "torch": "x",
            "machine_note": "Shared machine.",
        },
        "sections": {
            "ceiling": {
                "fp32_gflops": 10.0,
                "bf16_gflops": 4.0,
                "fp32_n": 2048,
                "bf16_n": 512,
                "threads": 2,
                "capability": "AVX2",
                "native_bf16": False,
            },
            "training": {
                "llm-chat": {
                    "tiny": {
                        "flags": ["--config", "tiny"],
                        "ours": side,
                        "plain": {**side, "step_time_s": 0.1},
                        "time_ratio": 1.0,
                        "rss_ratio": 1.0,
                    },
                    "packing-true": {"flags": [], "ours": {**side, "units_per_s": 2500.0}},
                    "packing-false": {"flags": [], "ours": side},
                    "offline-packed": {
                        "flags": ["--config", "offline", "--bf16", "true"],
                        "ours": {**side, "achieved_gflops": 5.0},
                    },
                    "seq-128": {"flags": [], "ours": side},
                    "seq-256": {"flags": [], "ours": {**side, "step_time_s": 0.2}},
                }
            },
            "inference": {"m": {"adapter_latency_s": 0.02, "merged_latency_s": 0.01, "merged_speedup": 2.0}},
            "pipeline": {
                "p": {
                    "pipeline_images_per_s": 100.0,
                    "model_images_per_s": 10.0,
                    "pipeline_share_of_step": 0.1,
                }
            },
            "serve": {
                "1 clients": {"rps": 2.0, "p50_ms": 500.0, "p95_ms": 900.0, "ttft_p50_ms": 50.0, "errors": 0}
            },
        },
        "skipped": ["vision-det: no cli.py yet (app not built)"],
        "notes": [],
    }
    md = bench.build_markdown(results)
    for heading in (
        "Overhead",
        "Efficiency",
        "Packing",
        "Inference",
        "Data pipeline",
        "Scaling",
        "Serve",
        "Skipped",
    ):
        assert f"## {heading}" in md, heading
    assert "**1.000x** (met)" in md  # overhead time ratio
    assert "**2.50x** (met)" in md  # packing 2500 / 1000 tokens/s
    assert "| llm-chat | seq-256 | 0.2000 | 2.00x |" in md
    assert "20.0%" in md  # 2 GFLOP/s of the 10 GFLOP/s fp32 peak
    # llm-chat's offline packed bf16 run: 2e6 FLOP/token x 2500 tokens/s = 5 GFLOP/s of the 4 GFLOP/s bf16 peak
    assert "| llm-chat | offline, packed | bf16 |" in md and "**125.0%** (met)" in md
    assert "- vision-det: no cli.py yet" in md


@pytest.mark.slow
@pytest.mark.parametrize("module", ["vision_cls", "vision_det", "vision_pose", "text_classifier", "llm_chat"])
def test_plain_script_does_the_same_work_as_our_train(module, tmp_path):
    """The overhead ratio is only meaningful if both sides train on the same batches: same samples (and real
    tokens) per step, every step timed. Runs the bench's own worker launcher, as `make bench` does."""
    from types import SimpleNamespace

    from bench_plain import PLAIN

    assert module in PLAIN
    flags = bench.base_flags("tiny", 3, tmp_path / "out")
    if module == "llm_chat":
        flags += ["--packing", "false"]  # the plain script pads
    app = bench.AppInfo(module.replace("_", "-"), module, ["tiny"])
    opts = SimpleNamespace(threads=1, timeout=600)
    runs = {}
    for mode in ("ours", "plain"):
        log = tmp_path / f"{mode}.log"
        res = bench.run_worker(app, mode, [bench.Variant("tiny", flags)], opts, log)
        assert res is not None, log.read_text()[-2000:]
        run = res["runs"][0]
        assert "error" not in run, run
        runs[mode] = run
    ours, plain = runs["ours"], runs["plain"]
    assert len(ours["step_times"]) == len(plain["step_times"]) == 3
    assert ours["samples"] == plain["samples"] and sum(ours["samples"]) > 0
    assert ours["tokens"] == plain["tokens"]
