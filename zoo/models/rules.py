"""Placement rules for ``zoo.antialias`` as data: per-family exceptions and known block types.

The general rules live in ``zoo.models.antialias``; this table holds what the official release does differently
for one family, keyed by ``(model class qualified name, module path)``.
"""

from __future__ import annotations

__all__ = ["BLOCK_BLUR_AFTER", "MAXPOOL_OVERRIDES"]

# The stem max-pool of the official anti-aliased ResNets is MaxPool(2, s=1) + blur, not MaxPool(3, s=1, p=1).
MAXPOOL_OVERRIDES: dict[tuple[str, str], dict[str, int]] = {
    ("torchvision.models.resnet.ResNet", "maxpool"): {"kernel_size": 2, "padding": 0},
}

# Known residual blocks: the strided conv whose activation the blur follows (block class -> conv attribute).
BLOCK_BLUR_AFTER: dict[str, str] = {
    "torchvision.models.resnet.BasicBlock": "conv1",
    "torchvision.models.resnet.Bottleneck": "conv2",
}
