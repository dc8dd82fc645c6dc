"""Helpers shared by llm-chat tests (a uniquely named module: the suite runs with --import-mode=importlib)."""

TINY_OVERRIDES = (
    "hidden_size=32,intermediate_size=64,num_hidden_layers=2,num_attention_heads=4,num_key_value_heads=2"
)


def make_tiny_model(tokenizer, seed: int = 0):
    from types import SimpleNamespace

    import torch
    from llm_chat.model import build_base

    torch.manual_seed(seed)
    args = SimpleNamespace(model_type="qwen2", config_overrides=TINY_OVERRIDES, attn_implementation="sdpa")
    return build_base(args, tokenizer, for_training=True).eval()


def dialog(*turns, system=None):
    """messages from alternating user/assistant strings."""
    msgs = [{"role": "system", "content": system}] if system else []
    for i, t in enumerate(turns):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": t})
    return msgs
