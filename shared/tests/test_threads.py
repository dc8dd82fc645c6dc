"""The CPU-thread policy (lora_shared.models): one torch thread where more would only wait on each other."""

import pytest
import torch
from lora_shared.models import set_cpu_threads, tune_cpu_threads
from lora_shared.testing import tiny_mlp


@pytest.fixture
def threads(monkeypatch):
    """Restore torch's thread count afterwards; no OMP_NUM_THREADS (it turns both policies off)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="a CPU-only policy: set_cpu_threads leaves CUDA hosts alone"
)
def test_auto_threads_drop_to_one_when_oversubscribed(monkeypatch, threads):
    monkeypatch.setattr("os.getloadavg", lambda: (100.0, 100.0, 100.0))
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    set_cpu_threads(0)
    assert torch.get_num_threads() == 1
    set_cpu_threads(2)  # an explicit count wins
    assert torch.get_num_threads() == 2


def test_small_model_on_cpu_gets_one_thread_unless_omp_num_threads_says(monkeypatch, threads):
    model = tiny_mlp()
    torch.set_num_threads(2)
    tune_cpu_threads(model, small_params=10**9)
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    tune_cpu_threads(model, small_params=1)  # a big model keeps torch's default
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    tune_cpu_threads(model, small_params=10**9)
    assert torch.get_num_threads() == 2
