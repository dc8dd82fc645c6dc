"""Conversions on tiny synthetic checkpoints: a random torchvision MobileNetV2, and tiny llama / gemma3 /
qwen2 GGUF files written with the `gguf` package (conftest.py)."""

from __future__ import annotations

import json

import pytest
from loraworks_models import causal_lm, mobilenet

# ---------------------------------------------------------------------------------------------
# MobileNetV2: torchvision layout -> transformers
# ---------------------------------------------------------------------------------------------


def test_mobilenet_v2_conversion_matches_torchvision(tmp_path):
    import torch
    from torchvision.models import mobilenet_v2
    from transformers import AutoModelForImageClassification

    torch.manual_seed(0)
    tv = mobilenet_v2(num_classes=10, width_mult=0.35)  # same layout as 1.0, a tenth of the compute
    for module in tv.modules():  # non-trivial BatchNorm statistics, so a mis-mapped buffer shows
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    tv.eval()
    labels = {i: f"class_{i}" for i in range(10)}
    info = mobilenet.convert_mobilenet_v2(
        tv.state_dict(), tmp_path / "mnv2", id2label=labels, width_mult=0.35
    )
    assert info["info"]["params"] == sum(p.numel() for p in tv.parameters())

    hf = AutoModelForImageClassification.from_pretrained(tmp_path / "mnv2").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(hf(pixel_values=x).logits, tv(x), atol=1e-4, rtol=1e-4)
    assert hf.config.id2label[3] == "class_3"
    assert (tmp_path / "mnv2" / "preprocessor_config.json").is_file()


def test_mobilenet_v2_mapping_rejects_mismatch():
    import torch
    from torchvision.models import mobilenet_v2
    from transformers import MobileNetV2ForImageClassification

    hf = MobileNetV2ForImageClassification(mobilenet.mobilenet_v2_config({i: str(i) for i in range(10)}))
    state = mobilenet_v2(num_classes=10).state_dict()
    state["classifier.1.weight"] = torch.zeros(11, 1280)
    with pytest.raises(ValueError, match="does not fit"):
        mobilenet.mobilenet_v2_state_dict_from_torchvision(state, hf)


# ---------------------------------------------------------------------------------------------
# GGUF -> bf16 HF dir
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_gguf_conversion_gives_plain_bf16_model(tmp_path, arch, write_gguf):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = tmp_path / "src" / f"tiny-{arch}.gguf"
    gguf_path.parent.mkdir()
    original = write_gguf(gguf_path, arch)
    out = tmp_path / "out"
    context = causal_lm.convert_gguf_causal_lm(gguf_path, out)
    reference = context["reference"]
    assert getattr(reference, "hf_quantizer", None) is not None  # what we are getting rid of

    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["dtype"] == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    assert model.dtype == torch.bfloat16
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in original.parameters())

    # The saved weights are the GGUF's (up to bf16) and the GGUF's are the original's (up to Q8_0).
    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = ("the interest in the theater", "a hint of winter")
    assert causal_lm.logits_close(causal_lm.compare_logits(reference, model, tokenizer, texts))
    assert causal_lm.compare_logits(original, model, tokenizer, texts)["min_cosine"] > 0.98

    # Trainer-style use: one backward pass through the converted model works.
    ids = tokenizer(texts[0], return_tensors="pt").input_ids
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()

    if arch == "llama":  # the GGUF's chat template and special tokens survive
        assert "<|im_start|>" in tokenizer.chat_template
        assert tokenizer.eos_token == "<|im_end|>"
        assert (out / "chat_template.jinja").is_file()
    else:  # Gemma base: no template in the GGUF, none invented
        assert tokenizer.chat_template is None
        assert tokenizer.bos_token == "<bos>"
    assert tokenizer.decode(tokenizer(texts[1]).input_ids, skip_special_tokens=True) == texts[1]
    assert tokenizer.model_max_length == 256


def test_qwen2_gguf_keeps_untied_head_and_both_end_of_turn_tokens(tmp_path, write_gguf):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf_path = tmp_path / "src" / "tiny-qwen2.gguf"
    gguf_path.parent.mkdir()
    original = write_gguf(gguf_path, "qwen2")
    out = tmp_path / "out"
    context = causal_lm.convert_gguf_causal_lm(
        gguf_path, out, eos_tokens=causal_lm.QWEN_EOS_TOKENS, keep_reference=False
    )
    assert isinstance(context["reference"], list)  # logits only: the fp32 reference model is gone
    assert context["info"]["tie_word_embeddings"] is False and context["info"]["eos_token_ids"] == [2, 0]

    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["dtype"] == "bfloat16"
    assert GenerationConfig.from_pretrained(out).eos_token_id == [2, 0]  # <|im_end|>, <|endoftext|>
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(  # the head is the GGUF's output.weight, not the embeddings
        model.lm_head.weight, original.lm_head.weight, atol=0.02, rtol=0.05
    )
    stats = causal_lm.compare_logits(context["reference"], model, tokenizer, causal_lm.LOGIT_TEXTS)
    assert stats["same_token_ids"] and causal_lm.logits_close(stats)
    assert tokenizer.eos_token == "<|im_end|>" and "<|im_start|>" in tokenizer.chat_template

    result = causal_lm.check_causal_lm(
        out, context["reference"], prompt="hi", chat=True, expect=None, dtype=torch.float32, tied=False
    )
    assert result["head"] == {"tie_word_embeddings": False, "shares_embeddings": False}
    assert result["dtype"] == "float32" and result["logits_vs_gguf"]["same_token_ids"]
    # The same check fails a model whose head came back tied.
    assert not causal_lm.check_causal_lm(
        out, context["reference"], prompt="hi", chat=True, expect=None, dtype=torch.float32, tied=True
    )["passed"]


def test_stop_check_needs_an_end_of_turn_token():
    import torch
    from transformers import GenerationConfig

    class Tok:
        def apply_chat_template(self, messages, **kwargs):
            return {"input_ids": torch.tensor([[7, 8]]), "attention_mask": torch.ones(1, 2, dtype=torch.long)}

        def decode(self, ids, skip_special_tokens=False):
            return " ".join(map(str, ids))

    class Model:
        generation_config = GenerationConfig(eos_token_id=[2, 0])

        def __init__(self, new):
            self.new = new

        def generate(self, input_ids, attention_mask, max_new_tokens, do_sample):
            return torch.cat([input_ids, torch.tensor([self.new[:max_new_tokens]])], dim=1)

    assert causal_lm.stops_at_end_of_turn(Model([5, 6, 2]), Tok(), "q")["stopped"]
    assert not causal_lm.stops_at_end_of_turn(Model([5] * 80), Tok(), "q")["stopped"]  # ran to max_new_tokens
    assert not causal_lm.stops_at_end_of_turn(Model([5, 6, 9]), Tok(), "q", max_new_tokens=3)["stopped"]


def test_degenerate_detector():
    assert causal_lm.is_degenerate([5, 5, 5, 5, 5, 5])
    assert causal_lm.is_degenerate([1, 2, 1, 2, 1, 2, 1, 2])
    assert causal_lm.is_degenerate([1, 2])
    assert not causal_lm.is_degenerate([10, 11, 12, 13, 10, 14, 15, 16])
