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
1x1 (a 32x32 input for VGG, 64x64 for AlexNet). Only the hand-built families are offered (``APS_FAMILIES``).
"""

from __future__ import annotations

import torch.fx
from torch import Tensor, nn

from zoo.layers import ApsConv2d, ApsDown2d, ApsMaxPool2d, BlurConv2d, BlurPool2d, MaxBlurPool2d, aps_select
from zoo.models.resnet import BasicBlock, Bottleneck

__all__ = ["APS_FAMILIES", "ApsBasicBlock", "ApsBottleneck", "ApsProjection", "to_aps"]

torch.fx.wrap("aps_select")  # fx keeps the selection as one call (its padding branch reads the shape)

APS_FAMILIES: tuple[str, ...] = ("resnet", "vgg", "densenet", "mobilenet")


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
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)) and module.stride not in (1, (1, 1)):
        raise ValueError(f"APS cannot place the strided pool {module}")
    return None


def _swap(parent: nn.Module, p: int) -> None:
    for name, child in list(parent.named_children()):
        new = _replacement(child, p)
        if new is not None:
            setattr(parent, name, new)
        else:
            _swap(child, p)


def to_aps(model: nn.Module, p: int = 2) -> nn.Module:
    """Rewrite an anti-aliased hand-built model (built with ``aa_stem=True``) for APS; see the module docstring."""
    for module in model.modules():
        cls = _PHASE_BLOCKS.get(type(module))
        if cls is not None and not isinstance(module.aa, nn.Identity):
            module.__class__ = cls
    _swap(model, p)
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and any(module.padding) and module.padding_mode == "zeros":
            module.padding_mode = "circular"
    info = getattr(model, "feature_info", None)
    if info:  # every map keeps its size until APS halves it: the input must survive the total stride
        model.min_input_size = int(info[-1]["reduction"])
    return model
