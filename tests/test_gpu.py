"""CUDA-only tests (`make test-gpu`): QLoRA 4-bit round trip, bf16 training, every app's tiny train and the
llm-chat API server, all on a GPU. Deselected by default (`gpu` marker) and skipped without CUDA, so
`pytest -m gpu` on a CPU-only box collects them and reports why each one did not run.

Nothing is downloaded: models are built from config classes in-process, like the CPU tests.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

APPS = ["vision-cls", "vision-det", "vision-pose", "text-classifier", "llm-chat"]


@pytest.fixture(autouse=True)
def cuda():
    """Skip (with the reason) unless CUDA is usable; reset the peak-memory counter for each test."""
    import torch  # imported here, not at module top: collection on CPU boxes stays cheap

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return torch


def _train(app: str, out: Path, *extra: str) -> dict:
    """Run `<app> train --config tiny` in-process; returns the metrics.json it wrote."""
    main = importlib.import_module(f"{app.replace('-', '_')}.cli").main
    assert main(["train", "--config", "tiny", "--output_dir", str(out), *extra]) == 0
    assert (out / "adapter_model.safetensors").is_file()
    return json.loads((out / "metrics.json").read_text())


def _losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def _assert_finite_adapter(out: Path, torch) -> None:
    from safetensors.torch import load_file

    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights, "empty adapter"
    for name, t in weights.items():
        assert torch.isfinite(t).all(), f"{name} has NaN/inf"
    # LoRA B starts at zero: a trained adapter must have moved it.
    assert any(t.abs().max() > 0 for n, t in weights.items() if "lora_B" in n), "lora_B never moved"


@pytest.mark.parametrize("app", APPS)
def test_app_tiny_train_on_cuda(app, tmp_path, cuda):
    torch = cuda
    out = tmp_path / "run"
    _train(app, out)
    # The Trainer picks CUDA on its own when present; the peak counter proves the run really used it.
    assert torch.cuda.max_memory_allocated() > 0, f"{app} trained without touching the GPU"
    losses = _losses(out)
    assert losses and all(map(math.isfinite, losses)), losses
    _assert_finite_adapter(out, torch)


@pytest.mark.parametrize("app", ["llm-chat", "text-classifier"])
def test_bf16_training_on_cuda(app, tmp_path, cuda):
    torch = cuda
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16 (needs compute capability >= 8.0)")
    out = tmp_path / "run"
    _train(app, out, "--bf16", "true")
    assert torch.cuda.max_memory_allocated() > 0
    resolved = (out / "resolved_config.yaml").read_text()
    assert "bf16: true" in resolved and "use_cpu: true" not in resolved, "bf16 fell back to the CPU"
    losses = _losses(out)
    assert len(losses) >= 3 and all(map(math.isfinite, losses)), losses
    _assert_finite_adapter(out, torch)  # master weights stay fp32; bf16 is autocast only
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(str(out / "adapter_model.safetensors")).values()} == {torch.float32}


def test_varlen_packing_on_cuda_equals_padding(cuda):
    """sdpa_varlen on CUDA (one sdpa call per dialog): the packed step's loss and LoRA gradients equal the
    padded batch's, as on CPU (packages/llm-chat/tests/test_varlen.py)."""
    from types import SimpleNamespace

    from llm_chat.config import ChatLoraArgs
    from llm_chat.data import collate_fn, tokenize_dialog
    from llm_chat.model import build_base, build_tiny_tokenizer
    from llm_chat.varlen import VARLEN, use_varlen
    from lora_shared.peft import apply_lora

    torch = cuda
    tok = build_tiny_tokenizer()
    turns = [("你好", "您好！有什么可以帮您？"), ("q", "a two"), ("退款多久到账", "1-3个工作日。")]
    rows = [
        tokenize_dialog(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": a}])
        for q, a in turns
    ]
    torch.manual_seed(0)
    over = (
        "hidden_size=64,intermediate_size=128,num_hidden_layers=2,num_attention_heads=4,num_key_value_heads=2"
    )
    args = SimpleNamespace(model_type="qwen2", config_overrides=over, attn_implementation="sdpa")
    base = build_base(args, tok, for_training=True)
    model = apply_lora(base, ChatLoraArgs(lora_dropout=0.0), task_type="CAUSAL_LM").cuda().train()

    def step(batch):
        model.zero_grad()
        batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items()}
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    padded_loss, padded_grads = step(collate_fn(rows, tok.pad_token_id))
    assert use_varlen(model) and model.config._attn_implementation == VARLEN
    loss, grads = step(collate_fn(rows, tok.pad_token_id, packing=True, varlen=True))
    torch.testing.assert_close(loss, padded_loss, atol=1e-4, rtol=0)
    assert grads.keys() == padded_grads.keys()
    for name, g in padded_grads.items():
        torch.testing.assert_close(grads[name], g, atol=1e-4, rtol=1e-3, msg=name)


def test_qlora_4bit_train_save_reload_same_logits(tmp_path, cuda):
    """QLoRA with the app's own 4-bit settings (llm_chat.model._four_bit_kwargs: NF4, bf16 compute) on a
    tiny random Llama: train a few steps, save the adapter, reload base (4-bit) + adapter, same logits."""
    torch = cuda
    pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes: uv pip install 'llm-chat[qlora]'")
    from llm_chat.model import _four_bit_kwargs
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=64,  # bitsandbytes packs 4-bit weights in blocks of 64
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    LlamaForCausalLM(config).save_pretrained(base_dir)

    def load_4bit():
        model = AutoModelForCausalLM.from_pretrained(base_dir, **_four_bit_kwargs())
        linear = type(model.model.layers[0].self_attn.q_proj).__name__
        assert linear == "Linear4bit", f"base not quantized: q_proj is {linear}"
        return model

    model = prepare_model_for_kbit_training(load_4bit(), use_gradient_checkpointing=False)
    # Every projection (QLoRA's usual choice): the adapter then moves the logits clearly in a few steps.
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear")
    model = get_peft_model(model, lora)
    ids = torch.randint(0, config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(1)).cuda()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    model.train()
    losses = []
    for _ in range(8):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0], f"4-bit LoRA did not learn: {losses}"

    model.eval()
    with torch.no_grad():
        trained = model(input_ids=ids).logits.float()
        with model.disable_adapter():
            base_only = model(input_ids=ids).logits.float()
    model.save_pretrained(adapter_dir)
    del model, opt
    torch.cuda.empty_cache()

    reloaded = PeftModel.from_pretrained(load_4bit(), adapter_dir).eval()
    with torch.no_grad():
        again = reloaded(input_ids=ids).logits.float()
    # Same NF4 weights and kernels: equal up to bf16 compute noise, which must be far below the adapter's
    # own effect (else "same logits" would also pass with the adapter lost on reload).
    reload_err = (again - trained).abs().max().item()
    effect = (trained - base_only).abs().max().item()
    assert reload_err < 1e-2 and reload_err * 10 < effect, (
        f"reload error {reload_err}, adapter effect {effect}"
    )


def test_serve_on_cuda(tmp_path, cuda):
    """Train llm-chat tiny on the GPU, serve the run dir with the real API app, answer one request."""
    torch = cuda
    import httpx
    from llm_chat.cli import APP
    from llm_chat.config import ServeArgs, get_group
    from llm_chat.serving.api import create_app
    from llm_chat.serving.schema import settings_from
    from llm_chat.serving.server import build_engine
    from llm_chat.testing import ServerThread
    from lora_shared.cli import build_config

    out = tmp_path / "run"
    _train("llm-chat", out)
    serve_cmd = next(c for c in APP.commands if c.name == "serve")
    cfg, _ = build_config(APP, serve_cmd, ["--adapter_dir", str(out), "--api_key", "k"])
    settings = settings_from(get_group(cfg, ServeArgs))
    engine = build_engine(cfg, settings.max_queue)
    try:
        assert engine.device.type == "cuda", f"served from {engine.device}"
        model_id = engine.model_ids()[-1]  # the trained adapter (the base is listed first)
        with ServerThread(create_app(engine, settings)) as url:
            body = {"model": model_id, "messages": [{"role": "user", "content": "你好"}], "max_tokens": 6}
            r = httpx.post(
                url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer k"}, timeout=120
            )
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        assert 1 <= usage["completion_tokens"] <= 6 and usage["prompt_tokens"] > 0
    finally:
        engine.close()
    assert torch.cuda.max_memory_allocated() > 0
