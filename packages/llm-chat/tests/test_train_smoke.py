"""The real CLI on the tiny config: files written, LoRA invariant, a self-contained run dir that chat/eval/
compare/export reload offline, and bad data exiting 2."""

import json

import pytest
import torch
from llm_chat import train as train_mod
from llm_chat.cli import main
from lora_shared.testing import assert_only_lora_changed, capture_built_model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    with capture_built_model(train_mod) as captured:
        assert main(["train", "--config", "tiny", "--output_dir", str(out)]) == 0
    return out, captured


def test_writes_a_self_contained_run(run):
    out, _ = run
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "resolved_config.yaml",
        "metrics.json",
        "metrics.jsonl",
        "curves.png",
        "tokenizer.json",
        "base_model/model.safetensors",
        "base_model/tokenizer.json",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["packing"] == 1 and metrics["eval_perplexity"] > 1
    # LoRA r=4 on 7 projections x 2 layers of a hidden-32 Qwen2 (q 32x32, k/v 32x16, o 32x32, MLP 32x64).
    assert metrics["trainable_params"] == 4096
    assert "base_model" in (out / "resolved_config.yaml").read_text()
    assert not list(out.glob(".*tmp"))


def test_lora_invariant(run):
    _, captured = run
    counts = assert_only_lora_changed(captured["before"], captured["model"])
    assert counts["adapter_changed"] >= 14


def test_reload_and_export_give_same_logits(run, tmp_path):
    from llm_chat.model import load_for_inference

    out, captured = run
    model, tok = load_for_inference(out / "base_model", [out], torch_dtype="float32")
    assert list(model.peft_config) == [
        out.name.replace("-", "_") if False else __import__("llm_chat.model").model.adapter_name(out)
    ]
    x = torch.tensor([[5, 6, 7, 8, 9]])
    trained = captured["model"].eval()
    with torch.no_grad():
        ref = trained(input_ids=x).logits
        torch.testing.assert_close(model(input_ids=x).logits, ref, atol=1e-5, rtol=0)
    assert main(["export", "--adapter_dir", str(out), "--export_dir", str(tmp_path / "merged")]) == 0
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=x).logits, ref, atol=1e-4, rtol=0)
    assert AutoTokenizer.from_pretrained(tmp_path / "merged").chat_template


def test_chat_predict_eval_compare_cli(run, capsys):
    out, _ = run
    assert main(["chat", "--adapter_dir", str(out), "--prompt", "你好", "--max_new_tokens", "4"]) == 0
    assert f"adapter {out}" in capsys.readouterr().err
    assert main(["predict", "--adapter_dir", str(out), "--json", "--max_new_tokens", "3", "a", "b"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [r["prompt"] for r in rows] == ["a", "b"] and all(r["completion_tokens"] <= 3 for r in rows)
    common = ["--adapter_dir", str(out), "--max_eval_items", "2", "--max_new_tokens", "3"]
    assert main(["eval", *common, "--eval_tasks", "multitask,banking"]) == 0
    ev = json.loads((out / "eval_metrics.json").read_text())
    assert "eval_banking_perplexity" in ev and (out / "eval_report.md").is_file()
    assert main(["compare", *common]) == 0
    cmp = json.loads((out / "compare.json").read_text())
    assert cmp["summary"]["questions"] == 2 and {"base", "tuned"} <= cmp["rows"][0].keys()
    assert "| keyword_match |" in (out / "compare.md").read_text()


def test_eval_with_base_and_compare_report_base_and_tuned(run, tmp_path):
    """eval --with_base: base (adapter off) and tuned keys per task, the same base answers as --base_only;
    compare: every question is a win, tie or loss, with tokens/s per side."""
    out, _ = run
    common = ["--adapter_dir", str(out), "--eval_tasks", "multitask", "--max_eval_items", "4"]
    common += ["--max_new_tokens", "3"]
    assert main(["eval", *common, "--with_base", "true", "--output_dir", str(tmp_path / "both")]) == 0
    ev = json.loads((tmp_path / "both" / "eval_metrics.json").read_text())
    tuned = {k for k in ev if k.startswith("eval_")}
    assert tuned and {f"base_{k}" for k in tuned} == {k for k in ev if k.startswith("base_")}
    assert (
        "| task | set | n | metric | base | tuned | change |"
        in (tmp_path / "both" / "eval_report.md").read_text()
    )
    both = [json.loads(x) for x in (tmp_path / "both" / "eval_predictions.jsonl").read_text().splitlines()]
    assert main(["eval", *common, "--base_only", "true", "--output_dir", str(tmp_path / "base")]) == 0
    base = [
        json.loads(x) for x in (tmp_path / "base" / "base_eval_predictions.jsonl").read_text().splitlines()
    ]
    assert [r["base_prediction"] for r in both] == [r["prediction"] for r in base]
    b = json.loads((tmp_path / "base" / "base_eval_metrics.json").read_text())
    assert b == {k: v for k, v in ev.items() if k.startswith("base_")}
    # "base" is the saved base model itself (the adapter really is off), which the adapter moved away from.
    plain = ["eval", "--model_name_or_path", str(out / "base_model"), *common[2:], "--base_only", "true"]
    assert main([*plain, "--output_dir", str(tmp_path / "plain")]) == 0
    p = json.loads((tmp_path / "plain" / "base_eval_metrics.json").read_text())
    ppl = "base_eval_multitask_perplexity"
    assert p[ppl] == pytest.approx(ev[ppl], rel=1e-4) and ev[ppl] != ev["eval_multitask_perplexity"]

    cmp_args = ["compare", "--adapter_dir", str(out), "--max_eval_items", "3", "--max_new_tokens", "3"]
    assert main([*cmp_args, "--output_dir", str(tmp_path / "cmp")]) == 0
    s = json.loads((tmp_path / "cmp" / "compare.json").read_text())["summary"]
    assert s["wins"] + s["ties"] + s["losses"] == s["questions"] == 3
    assert s["base_tokens_per_s"] > 0 and s["tuned_tokens_per_s"] > 0 and "overall_gain_points" in s
    assert "wins" in (tmp_path / "cmp" / "compare.md").read_text()


def test_eval_needs_an_adapter(capsys):
    assert main(["eval", "--config", "tiny"]) == 2
    assert "--adapter_dir" in capsys.readouterr().err


def test_train_bad_record_exit_2_and_skip(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    data.write_text(
        "\n".join([json.dumps(good)] * 4 + ['{"messages": [{"role": "user", "content": "q"}]}']) + "\n"
    )
    args = ["train", "--config", "tiny", "--dataset", str(data), "--output_dir", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{data}:5:" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "adapter_model.safetensors").exists()
    assert main([*args, "--skip_bad_records", "--max_steps", "1"]) == 0
    assert (tmp_path / "o" / "adapter_model.safetensors").is_file()
