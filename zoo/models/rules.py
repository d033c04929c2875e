"""Anti-aliasing placement rules as data (Zhang, ICML 2019; github.com/adobe/antialiased-cnns).

``MAXPOOL_RULES``: per parent module type and child name, the dense max-pool (kernel, padding) that replaces a
strided max-pool before its ``BlurPool``. The official ResNet stem turns MaxPool(3, s=2, p=1) into
MaxPool(2, s=1) + BlurPool(2).
``ACT_AFTER_NORM``: block types whose strided conv is followed by ``norm`` and then a clamp-type activation
(named attribute), so the blur goes after that activation.
"""

from __future__ import annotations

from torch import nn

MAXPOOL_RULES: dict[tuple[str, str], tuple[int, int]] = {
    ("ResNet", "maxpool"): (2, 0),
}

# block type -> ((strided conv attr, norm attr, activation attr), ...)
ACT_AFTER_NORM: dict[str, tuple[tuple[str, str, str], ...]] = {
    "BasicBlock": (("conv1", "bn1", "relu"),),
    "Bottleneck": (("conv2", "bn2", "relu"),),
}

# block types whose ``downsample`` Sequential starts with a strided 1x1 projection conv
PROJECTION_PARENTS: tuple[str, ...] = ("BasicBlock", "Bottleneck")

# a strided conv at this stride followed directly by one of CLAMP_ACTS (AlexNet conv1, stride 4) runs at half the
# stride, then its activation, then BlurPool(2), as the official release does (its stem is blurred even when
# aa_stem is False, as in the official AlexNet)
HALVED_STRIDE: tuple[int, int] = (4, 4)
CLAMP_ACTS: tuple[type, ...] = (nn.ReLU, nn.ReLU6)
