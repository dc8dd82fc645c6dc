"""llm-chat fixtures: the in-process tiny tokenizer and a tiny random Qwen2 (no download)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for llm_chat_testutils (tests are not a package)

from llm_chat_testutils import make_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    from llm_chat.model import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    return make_tiny_model(tokenizer)
