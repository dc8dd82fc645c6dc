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
    # varlen packing: the same row with its boundaries and an all-ones mask (not one sample of 7 tokens)
    probe._tok = probe._smp = 0
    cu = torch.tensor([0, 3, 5, 7], dtype=torch.int32)
    batch = {"input_ids": torch.zeros(1, 7, dtype=torch.long), "position_ids": pos, "cu_seq_lens_q": cu}
    probe.forward_hook(module, (), {**batch, "attention_mask": torch.ones(1, 7, dtype=torch.long)})
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
    # --render rewrites the Markdown from the results; a --machine_note given then replaces the stored one
    assert bench.main(["--render", str(res), "--markdown", str(md)]) == 0
    assert "shared" in md.read_text()
    assert bench.main(["--render", str(res), "--markdown", str(md), "--machine_note", "Idle box."]) == 0
    assert (
        "**Idle box.**" in md.read_text()
        and json.loads(res.read_text())["meta"]["machine_note"] == "Idle box."
    )


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
                    # padded batches half real: ceiling 1000 / 0.5 = 2000 tokens/s
                    "packing-false": {"flags": [], "ours": {**side, "real_token_share": 0.5}},
                    "offline-packed": {
                        "flags": ["--config", "offline", "--bf16", "true"],
                        "ours": {**side, "achieved_gflops": 5.0},
                    },
                    "peer-tiny": {
                        "flags": [],
                        "ours": {**side, "units_per_s": 1100.0},
                        "trl": side,
                        "peer": {
                            "tokens_ratio": 1.1,
                            "rss_ratio": 0.9,
                            "label_tokens": 500,
                            "label_mismatch": 0,
                            "loss": {
                                "steps": [1, 2],
                                "ours": [5.5, 5.4],
                                "trl": [5.5, 5.4],
                                "max_rel_diff": 0.0,
                                "match": True,
                            },
                        },
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
        "Peer",
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
    assert "**2.50x**" in md  # packing 2500 / 1000 tokens/s
    assert "| built-in | 2500.0 | 1000.0 | 50% | 2000.0 | 2.00x | **2.50x** | **125.0%** (met) |" in md
    assert "| llm-chat | seq-256 | 0.2000 | 2.00x |" in md
    assert "20.0%" in md  # 2 GFLOP/s of the 10 GFLOP/s fp32 peak
    # llm-chat's offline packed bf16 run: 2e6 FLOP/token x 2500 tokens/s = 5 GFLOP/s of the 4 GFLOP/s bf16 peak
    assert "| llm-chat | offline, packed | bf16 |" in md and "**125.0%** (met)" in md
    assert "- vision-det: no cli.py yet" in md
    peer_row = (
        "| random Qwen2, hidden 128 (byte-level tokens) | 1100.0 | 1000.0 | **1.100x** (met) | 100 / 100 MB |"
    )
    assert peer_row in md and "| 0 of 500 | 0.0e+00 (match) |" in md
    assert "steps 1-2: 5.5000/5.5000, 5.4000/5.4000" in md
    assert "| GPU (CUDA) rows | not measured (no GPU) |" in md  # never a made-up GPU number
    notes = " ".join(bench.analysis_notes(results))
    assert "**Packing, built-in: 125% of the padding ceiling** (met the 90% goal)" in notes
    assert "**Peer (random Qwen2, hidden 128 (byte-level tokens)): ours 1.10x TRL's tokens/s** (met" in notes


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


def test_probe_packed_counts_skip_fill_segments():
    """A bin-packed batch: row 0 holds dialogs of 3 and 2 tokens, row 1 one of 2 tokens + a 3-token fill
    segment (pad ids, positions from 0, no label), which is not a dialog."""
    import torch

    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 0, 0, 0]])
    pos = torch.tensor([[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]])
    labels = torch.tensor([[-100, 6, 7, -100, 9], [-100, 6, -100, -100, -100]])
    assert bench_worker.packed_counts(ids, pos, labels) == (7, 3)
    probe = bench_worker.Probe(count_flops=False)
    module = torch.nn.Linear(1, 1).train()
    probe.forward_hook(module, (), {"input_ids": ids, "position_ids": pos, "labels": labels})
    assert (probe._tok, probe._smp, probe._slots) == (7, 3, 10)


def test_compare_losses_and_label_mismatch():
    import bench_peer

    same = bench_peer.compare_losses([[1, 5.0], [2, 4.0]], [[1, 5.0], [2, 4.0 * (1 + 5e-4)]], rel_tol=1e-3)
    assert same["match"] and same["max_rel_diff"] == pytest.approx(5e-4 / (1 + 5e-4))
    apart = bench_peer.compare_losses([[1, 5.0], [2, 4.0]], [[1, 5.0], [2, 4.1]], rel_tol=1e-3)
    assert not apart["match"]
    # a step logged on one side only is a mismatch, not a silent skip
    assert not bench_peer.compare_losses([[1, 5.0], [2, 4.0]], [[1, 5.0]], rel_tol=1e-3)["match"]
    assert not bench_peer.compare_losses([], [], rel_tol=1e-3)["match"]
    ours = [[-100, 3, 4], [-100, -100, 7]]
    assert bench_peer.label_mismatch(ours, [[-100, 3, 4], [-100, -100, 7]]) == (3, 0)
    assert bench_peer.label_mismatch(ours, [[-100, 3, 4], [-100, 6, 7]]) == (3, 1)


def test_tagged_chatml_renders_like_the_model_template_and_tags_exactly_our_labels():
    """The TRL peer's template: same text as the model's own (with or without a default system message),
    and `{% generation %}` covering exactly llm-chat's assistant-only labels."""
    import bench_peer
    from llm_chat.data import tokenize_dialog
    from llm_chat.model import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    dialog = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    tagged = bench_peer.tagged_chatml(tok)
    assert tok.apply_chat_template(dialog, tokenize=False, chat_template=tagged) == tok.apply_chat_template(
        dialog, tokenize=False
    )
    out = tok.apply_chat_template(
        dialog, tokenize=True, chat_template=tagged, return_assistant_tokens_mask=True, return_dict=True
    )
    ours = tokenize_dialog(tok, dialog)
    assert out["input_ids"] == ours["input_ids"]
    assert [m == 1 for m in out["assistant_masks"]] == [lab != -100 for lab in ours["labels"]]
    # a Qwen2.5-style template that adds a default system message to dialogs without one
    tok.chat_template = (
        "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nBe brief.<|im_end|>\\n' }}{% endif %}"
        + tok.chat_template
    )
    tagged = bench_peer.tagged_chatml(tok)
    text = tok.apply_chat_template(dialog, tokenize=False, chat_template=tagged)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert text == tok.apply_chat_template(dialog, tokenize=False)


def test_peer_runner_matches_our_train_on_a_tiny_model(tmp_path, monkeypatch):
    """Two steps of `llm-chat train` and of the TRL peer, instrumented as make bench does: the same tokens
    per step, TRL's labels identical to ours, and per-step losses within the bench's tolerance."""
    import transformers

    monkeypatch.setattr(transformers.Trainer, "__init__", transformers.Trainer.__init__)  # restored after
    monkeypatch.setenv("TQDM_DISABLE", "1")
    probes: list = []
    bench_worker.install(probes, count_flops=False, profile=[False])
    flags = bench.base_flags("tiny", 2, tmp_path / "ours")
    flags += ["--dataset", "banking", "--max_train_samples", "16", "--max_eval_samples", "1"]
    flags += ["--max_length", "512", "--packing", "true", "--logging_steps", "1"]
    bench_worker.run_ours("llm_chat", flags)
    checks = bench_worker.run_trl("llm_chat", flags)
    ours, trl = probes[0].as_dict(), probes[1].as_dict()
    assert ours["tokens"] == trl["tokens"] and len(ours["tokens"]) == 2 and min(ours["tokens"]) > 0
    assert ours["samples"] == trl["samples"] == [8, 8]
    assert checks["same_input_ids"] == checks["dialogs"] == 16
    assert checks["label_mismatch"] == 0 and checks["label_tokens"] > 0
    loss = bench.peer_summary(
        [ours],
        [{**trl, **checks}],
        {"units_per_s": 1.0, "peak_rss_mb": 1.0},
        {"units_per_s": 1.0, "peak_rss_mb": 1.0},
    )["loss"]
    assert loss["steps"] == [1, 2] and loss["match"], loss


def test_peer_runs_are_planned_abba_each_in_its_own_process(tmp_path, monkeypatch):
    """`--only peer`: the tiny peer run (no offline model in --quick) alternates ours/TRL ABBA, one process
    per run (peak RSS is per process), and its summary pairs the two sides."""
    from types import SimpleNamespace

    opts = SimpleNamespace(quick=True, windows=5, native_bf16=False, rounds=2, reuse=None, reuse_only=False)
    app = bench.AppInfo("llm-chat", "llm_chat", ["tiny", "offline"])
    calls = []

    def fake_worker(app, mode, variants, opts, log, flops=True):
        calls.append((mode, [v.key for v in variants], log.name))
        n = len(variants[0].flags)
        step = {"step_times": [0.1] * 10, "tokens": [100] * 10, "samples": [8] * 10, "slots": [100] * 10}
        return {
            "runs": [
                {**step, "rss_train_mb": 10.0, "losses": [[1, 5.0], [2, 4.0]], "label_mismatch": 0, "n": n}
            ],
            "peak_rss_mb": 10.0,
        }

    monkeypatch.setattr(bench, "run_worker", fake_worker)
    out = bench.run_training([app], opts, {"peer"}, [], tmp_path)
    assert [(m, keys) for m, keys, _ in calls] == [
        ("ours", ["peer-tiny"]),
        ("trl", ["peer-tiny"]),
        ("trl", ["peer-tiny"]),
        ("ours", ["peer-tiny"]),
    ]
    assert calls[0][2] == "r0-ours-peer-tiny.log"
    peer = out["llm-chat"]["peer-tiny"]["peer"]
    assert peer["tokens_ratio"] == pytest.approx(1.0) and peer["loss"]["match"]
    flags = " ".join(out["llm-chat"]["peer-tiny"]["flags"])
    assert "--logging_steps 1" in flags and "--packing true" in flags


def test_packing_picks_the_row_capacity_that_leaves_least_filler():
    """llm-chat's collator: at the full capacity first-fit-decreasing leaves uneven rows (all filled up to
    the widest); the chosen capacity computes fewer positions, each row still within the capacity."""
    from llm_chat.data import pack_rows, pack_rows_min_fill

    lengths = [598, 540, 500, 450, 400, 380, 350, 320]

    def slots(rows):
        return len(rows) * max(sum(lengths[i] for i in r) for r in rows)

    full, best = pack_rows(lengths, 768), pack_rows_min_fill(lengths, 768)
    assert sorted(i for r in best for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 768 for r in best)
    assert slots(best) < slots(full) and slots(best) < len(lengths) * max(lengths)  # and below padding
    assert pack_rows_min_fill([5, 3], 4) == pack_rows([5, 3], 4)  # nothing to choose: longest over capacity
