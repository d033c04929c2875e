"""Weights that give outputs of a healthy scale, so an export or graph comparison cannot pass on ~0 logits."""

from __future__ import annotations

import torch
from torch import nn


def scramble(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics/affine and default-initialised linears, so outputs are O(1), not ~0
    (a comparison of near-zero logits would pass whatever the export did)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            elif isinstance(m, nn.Linear):
                m.reset_parameters()
    return model
