"""Placement rules for ``zoo.antialias`` as data: per-family exceptions and known block types.

The general rules live in ``zoo.models.antialias``; this table holds what the official release does differently
for one family, keyed by ``(model class qualified name, module path)``, and the block classes whose activation or
pooling is functional (in ``forward``), so no module pattern can find it.
"""

from __future__ import annotations

__all__ = [
    "BLOCK_BLUR_AFTER",
    "BLUR_AFTER_BLOCKS",
    "CONV_ACT_BLOCKS",
    "CONV_BLUR_AFTER",
    "FUNCTIONAL_POOL_BLOCKS",
    "MAXPOOL_OVERRIDES",
    "SLOT_BLOCKS",
]

# The stem max-pool of the official anti-aliased ResNets is MaxPool(2, s=1) + blur, not MaxPool(3, s=1, p=1).
MAXPOOL_OVERRIDES: dict[tuple[str, str], dict[str, int]] = {
    ("torchvision.models.resnet.ResNet", "maxpool"): {"kernel_size": 2, "padding": 0},
    ("timm.models.resnet.ResNet", "maxpool"): {"kernel_size": 2, "padding": 0},
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

# timm blocks with their own anti-aliasing slot (``self.aa``: an Identity, or None in ``ConvNormAct``, that
# ``forward`` calls right after the norm + activation of the strided conv): class -> (strided conv attribute, slot
# attribute). The conv runs at stride 1 and the blur fills the slot, as timm's own ``aa_layer`` does. A slot that
# already holds a layer (timm built with ``aa_layer``: its conv is not strided then) is never filled twice. A strided
# 1x1 conv in such a block (RegNet's ``ConvNormAct`` projection) takes the 1x1 rule instead: blur, then the conv.
SLOT_BLOCKS: dict[str, tuple[str, str]] = {
    "timm.models.resnet.BasicBlock": ("conv1", "aa"),
    "timm.models.resnet.Bottleneck": ("conv2", "aa"),
    "timm.layers.conv_bn_act.ConvNormAct": ("conv", "aa"),
    "timm.models._efficientnet_blocks.ConvBnAct": ("conv", "aa"),
    "timm.models._efficientnet_blocks.DepthwiseSeparableConv": ("conv_dw", "aa"),
    "timm.models._efficientnet_blocks.InvertedResidual": ("conv_dw", "aa"),
    "timm.models._efficientnet_blocks.EdgeResidual": ("conv_exp", "aa"),
}

# Blocks without a slot whose strided conv feeds a norm(+activation) module called in ``forward``: class ->
# (strided conv attribute, attribute of the module whose output the blur follows). timm's ``BatchNormAct2d`` holds
# the activation, so the blur after it is after the activation; the state-dict keys do not change.
BLUR_AFTER_BLOCKS: dict[str, tuple[str, str]] = {
    "timm.models.resnetv2.PreActBottleneck": ("conv2", "norm3"),  # pre-activation: conv2 -> norm3 (BN + ReLU)
    "timm.models.resnetv2.PreActBasic": ("conv1", "norm2"),
    "timm.models.resnetv2.Bottleneck": ("conv2", "norm2"),
}

# Strided convs at model level (stems, only rewritten with ``aa_stem``): (model class, conv path) -> path of the
# module whose output the blur follows (the conv itself when no norm or activation follows it).
CONV_BLUR_AFTER: dict[tuple[str, str], str] = {
    ("timm.models.resnet.ResNet", "conv1"): "act1",
    ("timm.models.efficientnet.EfficientNet", "conv_stem"): "bn1",
    ("timm.models.mobilenetv3.MobileNetV3", "conv_stem"): "bn1",
    ("timm.models.resnetv2.ResNetV2", "stem.conv"): "stem.conv",  # pre-activation stem: conv, then the max-pool
}
