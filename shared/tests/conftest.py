"""Fixtures for lora-shared's own tests: tiny hand-written modules (PEFT's trick), no transformers model."""

import pytest
from lora_shared.testing import tiny_mlp


@pytest.fixture
def mlp():
    return tiny_mlp()
