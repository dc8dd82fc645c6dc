"""Tiny model: packing keeps attention per dialog (same per-sample loss), LoRA placement, templates."""

import pytest
import torch
from llm_chat.data import IGNORE_INDEX, collate_fn, tokenize_dialog
from llm_chat.model import CHATML, packing_is_exact, prepare_tokenizer
from llm_chat_testutils import dialog, make_tiny_model
from lora_shared.errors import UsageError


def _per_token_nll(logits, labels):
    """NLL of each predicted position (shifted), -100 positions dropped, in order."""
    lg, lb = logits[:, :-1].float(), labels[:, 1:]
    keep = lb != IGNORE_INDEX
    return torch.nn.functional.cross_entropy(lg[keep], lb[keep], reduction="none")


def test_packing_gives_the_same_per_sample_loss(tokenizer, tiny_model):
    rows = [
        tokenize_dialog(tokenizer, dialog("你好", "您好！有什么可以帮您？", system="客服")),
        tokenize_dialog(tokenizer, dialog("q", "a", "q2", "a two")),
        tokenize_dialog(tokenizer, dialog("退款多久到账", "1-3个工作日。")),
    ]
    with torch.no_grad():
        separate = []
        for r in rows:
            b = collate_fn([r], tokenizer.pad_token_id)
            separate.append(
                _per_token_nll(
                    tiny_model(**{k: v for k, v in b.items() if k != "labels"}).logits, b["labels"]
                )
            )
        padded = collate_fn(rows, tokenizer.pad_token_id)
        p_logits = tiny_model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
        packed = collate_fn(rows, tokenizer.pad_token_id, packing=True)
        # use_cache=False as in training (build_model sets it): a KV cache disables packed-sequence masks.
        k_logits = tiny_model(
            input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False
        ).logits
    start = 0
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        seg = _per_token_nll(k_logits[:, start : start + n], packed["labels"][:, start : start + n])
        pad = _per_token_nll(p_logits[i : i + 1, :n], padded["labels"][i : i + 1, :n])
        torch.testing.assert_close(seg.mean(), separate[i].mean(), atol=1e-4, rtol=0)
        torch.testing.assert_close(pad.mean(), separate[i].mean(), atol=1e-4, rtol=0)
        start += n
    # And the packed batch loss the Trainer sees equals the token-weighted mean of the separate losses.
    with torch.no_grad():
        loss = tiny_model(**packed, use_cache=False).loss
    torch.testing.assert_close(loss, torch.cat(separate).mean(), atol=1e-4, rtol=0)


def test_packing_into_rows_keeps_the_loss_and_bounds_the_row_length(tokenizer, tiny_model):
    rows = [
        tokenize_dialog(tokenizer, dialog("你好", "您好！有什么可以帮您？", system="客服")),
        tokenize_dialog(tokenizer, dialog("q", "a", "q2", "a two")),
        tokenize_dialog(tokenizer, dialog("退款多久到账", "1-3个工作日。")),
        tokenize_dialog(tokenizer, dialog("hi", "hello")),
    ]
    lengths = [len(r["input_ids"]) for r in rows]
    short = sorted(lengths)
    cap = max(max(lengths), short[0] + short[1])  # the two shortest share a row; the rest cannot all fit
    assert sum(lengths) > cap
    packed = collate_fn(rows, tokenizer.pad_token_id, packing=True, pack_length=cap)
    assert 1 < packed["input_ids"].shape[0] < len(rows) and packed["input_ids"].shape[1] <= cap
    # every real token appears once; the filler is label -100
    assert (packed["labels"] != IGNORE_INDEX).sum() == sum(
        sum(t != IGNORE_INDEX for t in r["labels"]) for r in rows
    )
    with torch.no_grad():
        separate = []
        for r in rows:
            b = collate_fn([r], tokenizer.pad_token_id)
            logits = tiny_model(**{k: v for k, v in b.items() if k != "labels"}).logits
            separate.append(_per_token_nll(logits, b["labels"]))
        loss = tiny_model(**packed, use_cache=False).loss
    torch.testing.assert_close(loss, torch.cat(separate).mean(), atol=1e-4, rtol=0)


def test_packing_check_detects_cross_attention(tokenizer):
    model = make_tiny_model(tokenizer)
    model.config.use_cache = False  # as build_model leaves it for training
    assert packing_is_exact(model, len(tokenizer))
    # With a KV cache transformers skips the packed-sequence mask: packed dialogs would see each other,
    # and the check must say so (train then falls back to padding).
    model.config.use_cache = True
    assert not packing_is_exact(model, len(tokenizer))


def test_lora_on_every_projection_only_adapters_train(tokenizer):
    from llm_chat.config import ChatLoraArgs
    from lora_shared.peft import apply_lora

    model = apply_lora(make_tiny_model(tokenizer), ChatLoraArgs(), task_type="CAUSAL_LM")
    cfg = model.peft_config["default"]
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (8, 32, 0.1)
    adapted = {n.split(".")[-4] for n, _ in model.named_parameters() if "lora_A" in n}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    for n, p in model.named_parameters():
        assert p.requires_grad == ("lora_" in n), n
    out = model(input_ids=torch.tensor([[1, 2, 3]]))
    assert out.logits.shape == (1, 3, len(tokenizer))


def test_supplied_template_and_missing_template(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    with pytest.raises(UsageError, match="--chat_template_path"):
        prepare_tokenizer(tok, None, "m")
    prepare_tokenizer(tok, "chatml", "m")
    assert tok.chat_template == CHATML
    with pytest.raises(UsageError, match="not found"):
        prepare_tokenizer(tok, "/nope/t.jinja", "m")


def test_qlora_on_cpu_is_a_clear_error(tokenizer, monkeypatch):
    from types import SimpleNamespace

    from llm_chat.model import build_base

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = SimpleNamespace(
        model_type=None,
        model_name_or_path="x",
        load_in_4bit=True,
        attn_implementation="sdpa",
        torch_dtype="auto",
    )
    with pytest.raises(UsageError, match="CUDA"):
        build_base(args, tokenizer, for_training=True)


@pytest.mark.parametrize("packing", [False, True])
def test_supervised_logits_only_keep_the_loss_and_gradients(tokenizer, packing):
    """logits_to_keep + shift_labels: same loss and LoRA gradients, logits only where the loss looks."""
    from llm_chat.model import keeps_logits_mask

    rows = [
        tokenize_dialog(tokenizer, dialog("你好", "您好！有什么可以帮您？", system="客服")),
        tokenize_dialog(tokenizer, dialog("q", "a", "q2", "a two")),
        tokenize_dialog(tokenizer, dialog("退款多久到账", "1-3个工作日。")),
    ]
    model = make_tiny_model(tokenizer)
    assert keeps_logits_mask(model)
    results = []
    for supervised in (False, True):
        model.zero_grad()
        batch = collate_fn(rows, tokenizer.pad_token_id, packing=packing, supervised_logits=supervised)
        out = model(**batch, use_cache=False)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((out.loss.detach(), out.logits.shape, grads))
    (full_loss, full_shape, full_grads), (loss, shape, grads) = results
    supervised_count = int((batch["labels"] != IGNORE_INDEX).sum())
    assert shape[:-1] == (supervised_count,) and supervised_count < full_shape[0] * full_shape[1]
    assert batch["shift_labels"].shape == (supervised_count,)
    torch.testing.assert_close(loss, full_loss, atol=1e-5, rtol=0)
    for name, g in full_grads.items():
        torch.testing.assert_close(grads[name], g, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("trusted", [False, True])
def test_inference_loads_with_the_runs_trust_remote_code(monkeypatch, trusted):
    """chat/eval/compare/serve/export load through load_for_cfg: a run trained with --trust_remote_code
    loads its tokenizer and base with it (and only then)."""
    from types import SimpleNamespace

    from llm_chat import model as M

    seen = []

    class Stop(Exception):
        pass

    def fake_from_pretrained(loader, name, **kw):
        seen.append(("tokenizer", kw.get("trust_remote_code")))
        return object()

    def fake_build_base(margs, tokenizer, for_training):
        seen.append(("model", margs.trust_remote_code))
        raise Stop

    monkeypatch.setattr(M, "from_pretrained", fake_from_pretrained)
    monkeypatch.setattr(M, "prepare_tokenizer", lambda tok, path, source: tok)
    monkeypatch.setattr(M, "build_base", fake_build_base)
    model_args = SimpleNamespace(
        model_type=None,
        adapter_dir=None,
        model_name_or_path="some/remote-code-model",
        torch_dtype="float32",
        attn_implementation="sdpa",
        revision="main",
        trust_remote_code=trusted,
    )
    cfg = SimpleNamespace(model=model_args, train=SimpleNamespace(chat_template_path=None))
    with pytest.raises(Stop):
        M.load_for_cfg(cfg)
    assert seen == [("tokenizer", trusted), ("model", trusted)]
