"""Seeding: one call for python, numpy and torch (CPU and CUDA)."""


def seed_everything(seed: int) -> None:
    """Seed every RNG a run touches (transformers.set_seed covers random, numpy, torch, cuda)."""
    from transformers import set_seed

    set_seed(seed)
