"""text-classifier fixtures: tiny model args, a WordPiece trained on the built-in questions, data-file writer."""

import pytest
from text_classifier.config import TextModelArgs

TINY_OVERRIDES = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,max_position_embeddings=128"


@pytest.fixture
def tiny_model_args():
    """Args of a random 2-layer BERT, as in configs/tiny.yaml."""
    return TextModelArgs(model_type="bert", config_overrides=TINY_OVERRIDES, max_length=32)


@pytest.fixture(scope="session")
def tokenizer():
    """A WordPiece trained in-process on the built-in training questions (what the tiny run does)."""
    from text_classifier.data import load_questions
    from text_classifier.model import train_wordpiece

    return train_wordpiece([r.text for r in load_questions("train")], vocab_size=800)


@pytest.fixture
def write(tmp_path):
    """write("name.csv", text) -> path of a UTF-8 file in tmp_path."""

    def _write(name: str, text: str | bytes):
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    return _write
