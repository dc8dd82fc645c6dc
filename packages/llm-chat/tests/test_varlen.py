"""sdpa_varlen: packed dialogs in one unpadded row attend per dialog, with the loss and gradients of
separate dialogs; the collator's varlen batch; the packing check catches a kernel that ignores boundaries."""

import pytest
import torch
from llm_chat.data import IGNORE_INDEX, collate_fn, tokenize_dialog
from llm_chat.model import packing_is_exact
from llm_chat.varlen import VARLEN, use_varlen
from llm_chat_testutils import dialog, make_tiny_model


@pytest.fixture
def rows(tokenizer):
    return [
        tokenize_dialog(tokenizer, dialog("你好", "您好！有什么可以帮您？", system="客服")),
        tokenize_dialog(tokenizer, dialog("q", "a", "q2", "a two")),
        tokenize_dialog(tokenizer, dialog("退款多久到账", "1-3个工作日。")),
    ]


def test_varlen_batch_is_one_unpadded_row_with_the_boundaries(tokenizer, rows):
    lengths = [len(r["input_ids"]) for r in rows]
    b = collate_fn(rows, tokenizer.pad_token_id, packing=True, varlen=True)
    assert b["input_ids"].shape == b["labels"].shape == b["position_ids"].shape == (1, sum(lengths))
    assert b["attention_mask"].shape == (1, sum(lengths)) and bool(b["attention_mask"].all())
    assert b["cu_seq_lens_q"].tolist() == b["cu_seq_lens_k"].tolist() == [0, *torch.tensor(lengths).cumsum(0)]
    assert b["max_length_q"] == b["max_length_k"] == max(lengths)
    assert b["position_ids"][0].tolist() == [k for n in lengths for k in range(n)]
    assert b["input_ids"][0].tolist() == [t for r in rows for t in r["input_ids"]]


def _loss_and_grads(model, batch):
    model.zero_grad()
    out = model(**batch, use_cache=False)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_varlen_training_step_equals_padded_dialogs(tokenizer, rows):
    """The same batch, padded (sdpa) vs one varlen row (sdpa_varlen): same loss, same gradients."""
    model = make_tiny_model(tokenizer).train()
    model.config.attention_dropout = 0.0
    padded_loss, padded_grads = _loss_and_grads(model, collate_fn(rows, tokenizer.pad_token_id))
    assert use_varlen(model) and model.config._attn_implementation == VARLEN
    batch = collate_fn(rows, tokenizer.pad_token_id, packing=True, varlen=True, supervised_logits=True)
    loss, grads = _loss_and_grads(model, batch)
    torch.testing.assert_close(loss, padded_loss, atol=1e-5, rtol=0)
    assert grads.keys() == padded_grads.keys()
    for name, g in padded_grads.items():
        torch.testing.assert_close(grads[name], g, atol=1e-5, rtol=1e-4, msg=name)


def test_varlen_without_boundaries_is_plain_sdpa(tokenizer, rows):
    """Generation, padded batches and eval go through transformers' sdpa unchanged."""
    sdpa = make_tiny_model(tokenizer)
    varlen = make_tiny_model(tokenizer)
    use_varlen(varlen)
    padded = collate_fn(rows, tokenizer.pad_token_id)
    padded.pop("labels")
    with torch.no_grad():
        torch.testing.assert_close(varlen(**padded).logits, sdpa(**padded).logits, atol=0, rtol=0)
    prompt = padded["input_ids"][:1, :9]
    gen = {"max_new_tokens": 6, "do_sample": False}
    assert varlen.generate(prompt, **gen).tolist() == sdpa.generate(prompt, **gen).tolist()


def test_varlen_keeps_a_sliding_window_inside_a_long_dialog(tokenizer, rows):
    """A dialog longer than the model's sliding window is masked inside as transformers masks it."""
    from types import SimpleNamespace

    from llm_chat.model import build_base
    from llm_chat_testutils import TINY_OVERRIDES

    window = 8
    over = f"{TINY_OVERRIDES},use_sliding_window=True,sliding_window={window},max_window_layers=1"
    torch.manual_seed(0)
    args = SimpleNamespace(model_type="qwen2", config_overrides=over, attn_implementation="sdpa")
    model = build_base(args, tokenizer, for_training=True).eval()
    assert model.config.layer_types == ["full_attention", "sliding_attention"]
    assert all(len(r["input_ids"]) > window for r in rows)
    with torch.no_grad():
        separate = [model(input_ids=torch.tensor([r["input_ids"]])).logits[0] for r in rows]
        use_varlen(model)
        b = collate_fn(rows, tokenizer.pad_token_id, packing=True, varlen=True)
        b.pop("labels")
        packed = model(**b).logits[0]
        no_window = make_tiny_model(tokenizer)
        no_window.load_state_dict(model.state_dict())
        full = no_window(input_ids=torch.tensor([rows[0]["input_ids"]])).logits[0]
    torch.testing.assert_close(packed, torch.cat(separate), atol=1e-5, rtol=0)
    # the window matters here: the same weights without it give other logits after the window's length
    torch.testing.assert_close(full[:window], separate[0][:window], atol=1e-5, rtol=0)
    assert not torch.allclose(full, separate[0], atol=1e-3)


def test_packing_check_refuses_a_varlen_batch_on_a_kernel_without_boundaries(tokenizer):
    """eager attention ignores cu_seq_lens and sees an all-ones mask: the dialogs would mix, and the check
    (run with the training collator's format) must say so; sdpa_varlen passes it."""
    eager = make_tiny_model(tokenizer)
    eager.set_attn_implementation("eager")
    eager.config.use_cache = False
    assert not use_varlen(eager)
    assert packing_is_exact(eager, len(tokenizer), varlen=False)
    assert not packing_is_exact(eager, len(tokenizer), varlen=True)
    model = make_tiny_model(tokenizer)
    model.config.use_cache = False
    assert use_varlen(model) and packing_is_exact(model, len(tokenizer), varlen=True)


def test_varlen_loss_counts_every_supervised_token_once(tokenizer, rows):
    b = collate_fn(rows, tokenizer.pad_token_id, packing=True, varlen=True)
    assert int((b["labels"] != IGNORE_INDEX).sum()) == sum(
        sum(t != IGNORE_INDEX for t in r["labels"]) for r in rows
    )
