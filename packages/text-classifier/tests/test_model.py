"""Model: tiny BERT / decoder classifiers built from config classes, LoRA invariant, weighted loss."""

import pytest
import torch
import torch.nn.functional as F
from lora_shared.config import LoraArgs
from lora_shared.testing import assert_only_lora_changed, is_adapter_param, snapshot_params
from text_classifier.config import TextModelArgs
from text_classifier.model import build_model, build_tokenizer, train_wordpiece, weighted_cross_entropy

LABELS = ["数据平台相关问题", "通用对话", "无关问题"]
LORA = LoraArgs(
    lora_r=4, lora_alpha=8, lora_target_modules=["query", "value"], lora_modules_to_save=["classifier"]
)


def _batch(tokenizer, texts):
    return tokenizer(texts, padding=True, return_tensors="pt")


def test_only_adapter_and_head_trainable(tiny_model_args, tokenizer):
    torch.manual_seed(0)
    model = build_model(tiny_model_args, LORA, LABELS, tokenizer)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(is_adapter_param(n) for n in trainable)
    assert any("classifier" in n for n in trainable)
    assert any("query.lora_A" in n for n in trainable) and any("value.lora_B" in n for n in trainable)
    assert not any("key" in n for n in trainable)
    assert model.config.id2label == dict(enumerate(LABELS))


def test_forward_shapes_and_lora_invariant_after_steps(tiny_model_args, tokenizer):
    torch.manual_seed(0)
    model = build_model(tiny_model_args, LORA, LABELS, tokenizer)
    before = snapshot_params(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = _batch(tokenizer, ["数据清洗流程是什么？", "你好", "今天天气怎么样"])
    labels = torch.tensor([0, 1, 2])
    for _ in range(2):
        out = model(**batch, labels=labels)
        assert out.logits.shape == (3, 3) and out.loss.ndim == 0
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    counts = assert_only_lora_changed(before, model)
    assert counts["adapter_changed"] >= 4 and counts["base"] > 10


def test_decoder_classifier_pools_last_real_token():
    """A decoder (Llama-shaped) classifier: pad_token_id must be set so padding does not change logits."""
    from text_classifier.data import load_questions

    tok = train_wordpiece([r.text for r in load_questions("train")[:50]])
    args = TextModelArgs(
        model_type="llama",
        config_overrides="hidden_size=32,intermediate_size=64,num_hidden_layers=2,num_attention_heads=2,"
        "num_key_value_heads=1,max_position_embeddings=128",
    )
    lora = LoraArgs(lora_r=4, lora_target_modules=["q_proj", "v_proj"], lora_modules_to_save=["score"])
    torch.manual_seed(0)
    model = build_model(args, lora, LABELS, tok).eval()
    assert model.config.pad_token_id == tok.pad_token_id
    assert any("score" in n for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        alone = model(**_batch(tok, ["数据"])).logits
        padded = model(**_batch(tok, ["数据", "数据清洗流程是什么"])).logits
    torch.testing.assert_close(padded[0], alone[0], atol=1e-5, rtol=0)


def test_tokenizer_gets_a_pad_token_and_truncation_side(tmp_path):
    """Decoder tokenizers often lack a pad token: EOS stands in. truncation_side is applied."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"<eos>": 0, "<unk>": 1, "a": 2}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>", unk_token="<unk>").save_pretrained(
        tmp_path
    )
    args = TextModelArgs(model_name_or_path=str(tmp_path), truncation_side="left")
    tok = build_tokenizer(args)
    assert tok.pad_token == "<eos>" and tok.truncation_side == "left"
    from lora_shared.errors import UsageError

    with pytest.raises(UsageError, match="truncation_side"):
        build_tokenizer(TextModelArgs(model_name_or_path=str(tmp_path), truncation_side="middle"))


def test_wordpiece_keeps_every_character_even_with_a_small_vocab():
    texts = ["数据清洗流程", "今天天气怎么样", "ETL 和 API 有什么区别"]
    tok = train_wordpiece(texts, vocab_size=10)
    for t in texts:
        assert tok.unk_token_id not in tok(t)["input_ids"]


def test_trained_wordpiece_is_saved_and_reloaded(tiny_model_args, tmp_path):
    texts = ["数据清洗流程是什么", "你好呀"]
    tok = build_tokenizer(tiny_model_args, texts, output_dir=tmp_path)
    assert (tmp_path / "tokenizer" / "tokenizer.json").is_file()
    assert tiny_model_args.tokenizer_name_or_path == str((tmp_path / "tokenizer").resolve())
    again = build_tokenizer(tiny_model_args)
    assert again("数据清洗")["input_ids"] == tok("数据清洗")["input_ids"]


def test_weighted_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    labels = torch.tensor([0, 1, 2, 0])
    out = {"logits": logits}
    # Unit weights: plain mean cross-entropy.
    plain = weighted_cross_entropy(out, labels, weights=[1.0, 1.0, 1.0])
    torch.testing.assert_close(plain, F.cross_entropy(logits, labels))
    # Weights scale each example's term; the denominator is the number of labels (grad-accumulation exact).
    w = [2.0, 0.5, 1.0]
    per = F.cross_entropy(logits, labels, reduction="none")
    expected = (2.0 * per[0] + 0.5 * per[1] + 1.0 * per[2] + 2.0 * per[3]) / 4
    torch.testing.assert_close(weighted_cross_entropy(out, labels, weights=w), expected)
    torch.testing.assert_close(
        weighted_cross_entropy(out, labels, num_items_in_batch=8, weights=w), expected / 2
    )
