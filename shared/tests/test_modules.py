import torch
from lora_shared.modules import FrozenBatchNorm2d, freeze_batchnorm, unfreeze_batchnorm
from torch import nn


def test_frozen_bn_matches_eval_bn_and_never_updates():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.Sequential(nn.BatchNorm2d(4)))
    for _ in range(3):  # give the BNs non-trivial statistics
        net(torch.randn(8, 3, 5, 5) * 3 + 1)
    net.eval()
    x = torch.randn(2, 3, 5, 5)
    ref = net(x)
    assert freeze_batchnorm(net) == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net(torch.randn(8, 3, 5, 5) * 10)  # train-mode forward must not move anything
    torch.testing.assert_close(net(x), ref, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert isinstance(net[1], FrozenBatchNorm2d)
    assert unfreeze_batchnorm(net) == 2
    net.eval()
    torch.testing.assert_close(net(x), ref, atol=1e-5, rtol=1e-5)
    assert isinstance(net[1], nn.BatchNorm2d)
