"""Small nn.Module utilities for LoRA on conv nets."""

from __future__ import annotations

import torch
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (as in torchvision / DETR / detectron2).

    With LoRA the base is frozen, but a BatchNorm in train mode still rewrites its running mean/var;
    those buffers are not part of the adapter, so a reloaded adapter would see other statistics than
    the ones it was trained with. Freezing them keeps "base + adapter" reproducible.
    """

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        scale = (
            bn.weight.detach() * torch.rsqrt(bn.running_var + bn.eps)
            if bn.affine
            else torch.rsqrt(bn.running_var + bn.eps)
        )
        shift = (bn.bias.detach() if bn.affine else 0) - bn.running_mean * scale
        self.register_buffer("scale", scale.clone())
        self.register_buffer("shift", shift.clone())
        self.eps = bn.eps  # kept so `unfreeze_batchnorm` can rebuild an exactly equivalent BatchNorm2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(1, -1, 1, 1).to(x.dtype) + self.shift.view(1, -1, 1, 1).to(x.dtype)


def freeze_batchnorm(model: nn.Module) -> int:
    """Replace every BatchNorm2d in `model` by a FrozenBatchNorm2d in place; returns how many were replaced."""
    count = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, child_name, FrozenBatchNorm2d(child))
                count += 1
    return count


def unfreeze_batchnorm(model: nn.Module) -> int:
    """Turn FrozenBatchNorm2d back into equivalent (eval-mode) BatchNorm2d, e.g. before saving a merged model
    that must load as a stock transformers checkpoint. Returns how many were replaced."""
    count = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, FrozenBatchNorm2d):
                bn = nn.BatchNorm2d(child.scale.numel(), eps=child.eps).to(child.scale.device)
                with torch.no_grad():
                    bn.weight.copy_(child.scale)
                    bn.bias.copy_(child.shift)
                    bn.running_mean.zero_()
                    bn.running_var.fill_(1.0 - child.eps)  # sqrt(var + eps) == 1 exactly
                setattr(module, child_name, bn.eval())
                count += 1
    return count
