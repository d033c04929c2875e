"""Placement rules for ``zoo.antialias`` as data: per-family exceptions and known block types.

The general rules live in ``zoo.models.antialias``; this table holds what the official release does differently
for one family, keyed by ``(model class qualified name, module path)``, and the block classes whose activation or
pooling is functional (in ``forward``), so no module pattern can find it.
"""

from __future__ import annotations

__all__ = ["BLOCK_BLUR_AFTER", "CONV_ACT_BLOCKS", "FUNCTIONAL_POOL_BLOCKS", "MAXPOOL_OVERRIDES"]

# The stem max-pool of the official anti-aliased ResNets is MaxPool(2, s=1) + blur, not MaxPool(3, s=1, p=1).
MAXPOOL_OVERRIDES: dict[tuple[str, str], dict[str, int]] = {
    ("torchvision.models.resnet.ResNet", "maxpool"): {"kernel_size": 2, "padding": 0},
}

# Known residual blocks: the strided conv whose activation the blur follows (block class -> conv attribute).
BLOCK_BLUR_AFTER: dict[str, str] = {
    "torchvision.models.resnet.BasicBlock": "conv1",
    "torchvision.models.resnet.Bottleneck": "conv2",
}

# conv -> bn -> functional ReLU blocks (GoogLeNet, Inception v3): a strided one gets the blur after its ReLU.
CONV_ACT_BLOCKS: frozenset[str] = frozenset(
    {"torchvision.models.googlenet.BasicConv2d", "torchvision.models.inception.BasicConv2d"}
)

# Blocks that call F.max_pool2d(x, kernel, stride) in forward: class -> (kernel, stride) of that pool. Their
# ``_forward`` is swapped for one running MaxPool(kernel, s=1) + blur(stride) (Inception v3's InceptionB/D).
FUNCTIONAL_POOL_BLOCKS: dict[str, tuple[int, int]] = {
    "torchvision.models.inception.InceptionB": (3, 2),
    "torchvision.models.inception.InceptionD": (3, 2),
}
