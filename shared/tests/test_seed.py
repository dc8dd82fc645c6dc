"""Per-sample seeded augmentation: the same draw for the same (seed, epoch, sample), whatever came before."""

import torch
from lora_shared.seed import SampleSeeds, SeededAugment, epoch_callback


def test_seeded_augment_draws_per_sample_and_leaves_the_global_rng_alone():
    augment = SeededAugment(lambda img: img + torch.rand(3), seed=3)
    zero = torch.zeros(3)
    torch.manual_seed(0)
    expected_global = torch.rand(2)
    torch.manual_seed(0)
    a5, a6 = augment(zero, 5), augment(zero, 6)
    assert torch.equal(torch.rand(2), expected_global)  # dropout / the sampler see the same stream
    assert torch.equal(augment(zero, 5), a5) and not torch.equal(a5, a6)
    assert torch.equal(SeededAugment(augment.transform, seed=3)(zero, 6), a6)  # a resumed run's fresh object
    augment.epoch = 1
    assert not torch.equal(augment(zero, 5), a5)
    assert not torch.equal(SeededAugment(augment.transform, seed=4)(zero, 5), a5)


def test_sample_rng_and_epoch_callback():
    seeds = SampleSeeds(7)
    draws = [seeds.rng(i).random() for i in range(3)]
    assert [seeds.rng(i).random() for i in (2, 1, 0)] == draws[::-1]
    assert len(set(draws)) == 3
    assert 0 <= SampleSeeds(2**62).sample_seed(10**9) < 2**63

    class State:
        epoch = 2.0  # the Trainer's state.epoch at the start of the third epoch (also right after --resume)

    epoch_callback(seeds).on_epoch_begin(None, State(), None)
    assert seeds.epoch == 2 and [seeds.rng(i).random() for i in range(3)] != draws
    State.epoch = None  # before the first epoch starts
    epoch_callback(seeds).on_epoch_begin(None, State(), None)
    assert seeds.epoch == 0
