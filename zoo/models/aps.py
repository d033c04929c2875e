"""``{arch}_aps`` and ``{arch}_aa{K}_aps``: a hand-built family's model with APS at every subsampling.

The model is built anti-aliased with ``aa_stem=True`` (filter size ``K``, or 1 = no low-pass for ``{arch}_aps``),
so every subsampling is a ``BlurPool2d``/``MaxBlurPool2d``/``BlurConv2d`` after a dense (stride-1) operation;
``to_aps`` then rewrites, in place and without changing a state-dict key:

- every padded conv to circular padding (``pad_mode="circular"`` for the blur as well);
- ``BlurPool2d(s)`` -> ``ApsDown2d`` (low-pass at stride 1, then APS by ``s``);
- ``MaxBlurPool2d`` -> ``ApsMaxPool2d`` (circularly padded dense max-pool, then ``ApsDown2d``);
- a conv still strided (AlexNet's conv1) -> ``ApsConv2d``;
- a ResNet block that subsamples -> ``ApsBasicBlock``/``ApsBottleneck``: its projection shortcut takes the
  phase the main path chose (``aps_select``), so the two branches stay aligned under any shift.

Exact invariance holds for the global-average-pool heads (ResNet, DenseNet, MobileNet). VGG and AlexNet flatten
an adaptive 7x7 (6x6) pool into an MLP, which is position-dependent: they are invariant when the last map is
1x1 (a 32x32 input). Offered for the hand-built families (``APS_FAMILIES``) and the torchvision CNN families in
``APS_TORCHVISION``.
"""

from __future__ import annotations

import torch.fx
from torch import Tensor, nn

from zoo.layers import (
    ApsConv2d,
    ApsDown2d,
    ApsMaxPool2d,
    BlurConv2d,
    BlurPool2d,
    CircularConv2d,
    MaxBlurPool2d,
    aps_select,
)
from zoo.models.resnet import BasicBlock, Bottleneck

__all__ = ["APS_FAMILIES", "APS_TORCHVISION", "ApsBasicBlock", "ApsBottleneck", "ApsProjection", "aps_family", "to_aps"]

torch.fx.wrap("aps_select")  # fx keeps the selection as one call (its padding branch reads the shape)

APS_FAMILIES: tuple[str, ...] = ("resnet", "vgg", "densenet", "mobilenet")
# torchvision CNNs (``zoo.models.torchvision_cnn``) whose every subsampling lies on a single path. Left out,
# measured not invariant: regnet, shufflenet and inception_v3 (parallel strided branches or a strided shortcut
# would choose their phases independently; sharing the phase of a block's main path, as ``ApsBasicBlock`` does,
# is not done for them).
APS_TORCHVISION: tuple[str, ...] = ("efficientnet", "mnasnet", "googlenet", "squeezenet", "convnext")


def aps_family(family: str, variant: dict) -> str | None:
    """The family name under which APS is offered for a registry entry, or ``None`` when it is not."""
    if family in APS_FAMILIES:
        return family
    sub = variant.get("family")
    return sub if family == "torchvision_cnn" and sub in APS_TORCHVISION else None


class ApsProjection(nn.Conv2d):
    """A ``BlurConv2d`` shortcut under APS: low-pass at stride 1, the main path's phase, then the 1x1 conv."""

    def __init__(self, conv: BlurConv2d) -> None:
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, bias=conv.bias is not None)
        self.weight = conv.weight
        if conv.bias is not None:
            self.bias = conv.bias
        k = conv.blur.filter_size
        self.stride_aps = conv.blur.stride[0]
        self.blur: nn.Module = (
            BlurPool2d(conv.in_channels, filter_size=k, stride=1, pad_mode="circular") if k > 1 else nn.Identity()
        )

    def forward_phase(self, x: Tensor, phase: Tensor) -> Tensor:
        return self._conv_forward(aps_select(self.blur(x), phase, self.stride_aps), self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("ApsProjection needs the phase of its block's main path: call forward_phase(x, phase)")


class ApsBasicBlock(BasicBlock):
    """ResNet's basic block whose shortcut reuses the phase of the main path's APS."""

    def forward(self, x: Tensor) -> Tensor:
        out, phase = self.aa.forward_phase(self.relu(self.bn1(self.conv1(x))))
        if self.aa.keep_phase:
            self.aa._record(phase)
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample[1](self.downsample[0].forward_phase(x, phase)))


class ApsBottleneck(Bottleneck):
    """ResNet's bottleneck whose shortcut reuses the phase of the main path's APS."""

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out, phase = self.aa.forward_phase(self.relu(self.bn2(self.conv2(out))))
        if self.aa.keep_phase:
            self.aa._record(phase)
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.downsample[1](self.downsample[0].forward_phase(x, phase)))


_PHASE_BLOCKS: dict[type[nn.Module], type[nn.Module]] = {BasicBlock: ApsBasicBlock, Bottleneck: ApsBottleneck}


def _replacement(module: nn.Module, p: int) -> nn.Module | None:
    if isinstance(module, MaxBlurPool2d):
        b = module.blur
        return ApsMaxPool2d(b.channels or 0, module.kernel_size, module.padding, b.filter_size, b.stride[0], p)
    if isinstance(module, BlurConv2d):
        return ApsProjection(module)
    if isinstance(module, BlurPool2d) and module.stride != (1, 1):
        if module.stride[0] != module.stride[1]:
            raise ValueError(f"APS needs equal strides on both axes, got {module.stride}")
        return ApsDown2d(module.channels or 0, module.filter_size, module.stride[0], p)
    if type(module) is nn.Conv2d and module.stride != (1, 1):
        return ApsConv2d(module, 1, p)
    if type(module) is nn.Conv2d and not _keeps_size(module):
        return CircularConv2d(module)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)) and module.stride not in (1, (1, 1)):
        raise ValueError(f"APS cannot place the strided pool {module}")
    return None


def _keeps_size(conv: nn.Conv2d) -> bool:
    """A stride-1 conv whose (symmetric, numeric) padding keeps the map's size."""
    if isinstance(conv.padding, str):
        return conv.padding == "same"
    return all(2 * p == d * (k - 1) for p, d, k in zip(conv.padding, conv.dilation, conv.kernel_size))


def _swap(parent: nn.Module, p: int) -> None:
    for name, child in list(parent.named_children()):
        new = _replacement(child, p)
        if new is not None:
            setattr(parent, name, new)
        else:
            _swap(child, p)


def _circular_pad(module: nn.Module) -> int:
    """The widest circular padding ``module`` itself applies (0 when none)."""
    if isinstance(module, (CircularConv2d, ApsMaxPool2d)):
        return max(module.pads)
    if isinstance(module, BlurPool2d) and module.pad_mode == "circular":
        return max(module.pads)
    if type(module) is nn.Conv2d and module.padding_mode == "circular":
        return max(module.padding)
    return 0


def _min_input(model: nn.Module) -> int:
    """Smallest input side: every map keeps its size until APS divides it, and a circular pad of ``p`` needs a map
    of at least ``p`` pixels. Walks the modules in registration order (the order the families run them)."""
    reduction, need, done = 1, 1, set()
    for module in model.modules():
        if isinstance(module, ApsProjection):  # its blur runs before the phase: on the block's input map
            need = max(need, reduction // module.stride_aps * _circular_pad(module.blur))
            done.add(id(module.blur))
        if isinstance(module, ApsDown2d):  # its blur runs before it subsamples
            need = max(need, reduction * _circular_pad(module.blur))
            done.add(id(module.blur))
        if id(module) not in done:
            need = max(need, reduction * _circular_pad(module))
        if isinstance(module, ApsDown2d):
            reduction *= module.stride
    return max(need, reduction)


def to_aps(model: nn.Module, p: int = 2) -> nn.Module:
    """Rewrite an anti-aliased hand-built model (built with ``aa_stem=True``) for APS; see the module docstring."""
    for module in model.modules():
        cls = _PHASE_BLOCKS.get(type(module))
        if cls is not None and not isinstance(module.aa, nn.Identity):
            module.__class__ = cls
    _swap(model, p)
    for module in model.modules():
        if type(module) is nn.Conv2d and any(module.padding) and module.padding_mode == "zeros":
            module.padding_mode = "circular"
    model.min_input_size = _min_input(model)
    return model
