"""Adaptive polyphase sampling (APS): subsampling that makes a CNN exactly invariant to circular shifts.

Subsampling by ``s`` keeps one of the ``s * s`` polyphase components ``x[:, :, i::s, j::s]``. A fixed choice
(``i = j = 0``, what a strided layer does) is why a 1-pixel shift changes the output. APS (Chaman & Dokmanic,
"Truly shift-invariant convolutional neural networks", CVPR 2021, arXiv:2011.14214) keeps, per sample, the
component of largest norm (``p=2`` by default, ``p=1`` an option; ties go to the first component in row-major
order). A circular shift of the input permutes the components and shifts each one circularly, so the chosen
component is the same values, circularly shifted: with circular padding in every conv and pool, the network's
output after global average pooling does not change at all.

Phases are ``(N,)`` int64 tensors with values ``i * s + j``. ``aps_select`` takes a given phase (a shortcut
reuses the phase its block's main path chose, so both branches stay aligned), and ``aps_unpool`` puts a map back
at the phase its encoder chose (zeros elsewhere), which makes an APS U-Net exactly shift-equivariant.

A side that is not a multiple of ``s`` is first extended circularly to the next multiple (the layer then still
works, but exact invariance needs every subsampled side to be a multiple of its stride).

Layers: ``ApsDown2d`` (optional binomial low-pass at stride 1 with circular padding, then APS: the
``_aa{K}_aps`` models), ``ApsMaxPool2d`` (dense max-pool with circular padding, then ``ApsDown2d``) and
``ApsConv2d`` (a strided conv run at stride 1, then ``ApsDown2d``), ``CircularConv2d`` (a conv padded circularly to
keep the map's size); the convs keep ``nn.Conv2d``'s parameter names.
"""

# No ``from __future__ import annotations``: the modules are compiled by TorchScript.

from typing import Optional

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.layers.blur import BlurPool2d

__all__ = [
    "APS_NORMS",
    "ApsConv2d",
    "ApsDown2d",
    "ApsFollow2d",
    "ApsLead2d",
    "ApsMaxPool2d",
    "CircularConv2d",
    "aps_phase",
    "aps_select",
    "aps_unpool",
]

APS_NORMS: tuple[int, ...] = (1, 2)


def _check_stride(stride: int) -> int:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"APS stride must be an integer >= 1, got {stride!r}")
    return stride


def _check_norm(p: int) -> int:
    if p not in APS_NORMS:
        raise ValueError(f"APS norm must be 1 (L1) or 2 (L2), got {p!r}")
    return p


def _components(x: Tensor, stride: int) -> Tensor:
    """``(N, C, H, W) -> (N, s*s, C, H/s, W/s)``: the polyphase components in row-major phase order."""
    h, w = x.shape[-2], x.shape[-1]
    ph, pw = (stride - h % stride) % stride, (stride - w % stride) % stride
    if ph > 0 or pw > 0:
        x = F.pad(x, [0, pw, 0, ph], mode="circular")
    n, c, h, w = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    x = x.reshape(n, c, h // stride, stride, w // stride, stride)
    return x.permute(0, 3, 5, 1, 2, 4).reshape(n, stride * stride, c, h // stride, w // stride)


@torch.fx.wrap
def aps_phase(x: Tensor, stride: int = 2, p: int = 2) -> Tensor:
    """The phase ``(N,)`` of the polyphase component of largest ``p``-norm, per sample."""
    comps = _components(x, stride)
    norms = torch.linalg.vector_norm(comps.flatten(2), ord=float(p), dim=2)
    return norms.argmax(dim=1)


@torch.fx.wrap
def aps_select(x: Tensor, phase: Tensor, stride: int = 2) -> Tensor:
    """The component ``phase`` (one per sample) of ``x`` subsampled by ``stride``; gradients flow through it."""
    comps = _components(x, stride)
    index = phase.reshape(-1, 1, 1, 1, 1).expand(-1, 1, comps.shape[2], comps.shape[3], comps.shape[4])
    return comps.gather(1, index).squeeze(1)


@torch.fx.wrap
def aps_unpool(x: Tensor, phase: Tensor, stride: int = 2) -> Tensor:
    """Inverse of ``aps_select``: ``(N, C, h, w) -> (N, C, s*h, s*w)`` with ``x`` at ``phase``, zeros elsewhere."""
    n, c, h, w = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    out = x.new_zeros(n, stride * stride, c, h, w)
    index = phase.reshape(-1, 1, 1, 1, 1).expand(-1, 1, c, h, w)
    out = out.scatter(1, index, x.unsqueeze(1))
    out = out.reshape(n, stride, stride, c, h, w).permute(0, 3, 4, 1, 5, 2)
    return out.reshape(n, c, h * stride, w * stride)


class ApsDown2d(nn.Module):
    """Low-pass (binomial ``filter_size``, stride 1, circular padding; ``1`` = none), then APS by ``stride``.

    ``forward(x)`` returns the subsampled map; ``forward_phase(x)`` also the chosen phase. Holds no state.
    """

    def __init__(self, channels: int = 0, filter_size: int = 1, stride: int = 2, p: int = 2) -> None:
        super().__init__()
        self.channels = channels
        self.filter_size = filter_size
        self.stride = _check_stride(stride)
        self.p = _check_norm(p)
        self.blur: nn.Module = (
            BlurPool2d(channels, filter_size=filter_size, stride=1, pad_mode="circular")
            if filter_size > 1
            else nn.Identity()
        )
        self.keep_phase = False  # set by an APS U-Net, which reads ``last_phase`` after each encoder stage
        self.last_phase: Optional[Tensor] = None

    def forward_phase(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.blur(x)
        phase = aps_phase(x, self.stride, self.p)
        return aps_select(x, phase, self.stride), phase

    def forward(self, x: Tensor) -> Tensor:
        y, phase = self.forward_phase(x)
        if self.keep_phase:
            self._record(phase)
        return y

    @torch.jit.unused
    def _record(self, phase: Tensor) -> None:
        self.last_phase = phase

    def extra_repr(self) -> str:
        return f"{self.channels}, filter_size={self.filter_size}, stride={self.stride}, p={self.p}"


class ApsLead2d(ApsDown2d):
    """An ``ApsDown2d`` whose phase other branches of its block reuse: ``forward`` returns ``(map, phase)``."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        y, phase = self.forward_phase(x)
        if self.keep_phase:
            self._record(phase)
        return y, phase


class ApsFollow2d(nn.Module):
    """The low-pass of an ``ApsDown2d``, then the component at a phase chosen elsewhere (``forward(x, phase)``).

    A block with parallel strided branches (RegNet's projection, ShuffleNet's two branches, Inception's reduction
    blocks) subsamples every branch at the phase of its first one, so the branches stay aligned under any shift.
    """

    def __init__(self, down: ApsDown2d) -> None:
        super().__init__()
        self.channels = down.channels
        self.filter_size = down.filter_size
        self.stride = down.stride
        self.blur = down.blur

    def forward(self, x: Tensor, phase: Tensor) -> Tensor:
        return aps_select(self.blur(x), phase, self.stride)

    def extra_repr(self) -> str:
        return f"{self.channels}, filter_size={self.filter_size}, stride={self.stride}"


class ApsMaxPool2d(nn.Module):
    """Dense ``kernel_size`` max-pool over a circularly padded map (same size out), then ``ApsDown2d``."""

    def __init__(
        self, channels: int, kernel_size: int, padding: int = 0, filter_size: int = 1, stride: int = 2, p: int = 2
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.pads: list[int] = [padding, kernel_size - 1 - padding, padding, kernel_size - 1 - padding]
        self.down = ApsDown2d(channels, filter_size, stride, p)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.pad(x, self.pads, mode="circular"), self.kernel_size, stride=1)
        return self.down(x)


class CircularConv2d(nn.Conv2d):
    """A stride-1 convolution whose output keeps the input's size: circular padding of ``d * (k - 1)`` per axis
    (``floor`` of half before, the rest after, so even kernels work too). Parameters keep ``nn.Conv2d``'s names."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=1,
            padding=0,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
        )
        self.weight = conv.weight
        if conv.bias is not None:
            self.bias = conv.bias
        (kh, kw), (dh, dw) = conv.kernel_size, conv.dilation
        th, tw = dh * (kh - 1), dw * (kw - 1)
        self.pads: list[int] = [tw // 2, tw - tw // 2, th // 2, th - th // 2]

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(F.pad(x, self.pads, mode="circular"), self.weight, self.bias)


class ApsConv2d(CircularConv2d):
    """A strided convolution run at stride 1 with circular "same" padding (``CircularConv2d``), then ``ApsDown2d``.

    The dense map keeps the input's size, as circular shift-equivariance needs (AlexNet's 11x11 conv1 pads 5 on
    each side instead of 2; ConvNeXt's 4x4 patchify conv 1 before, 2 after).
    """

    def __init__(self, conv: nn.Conv2d, filter_size: int = 1, p: int = 2) -> None:
        if conv.stride[0] != conv.stride[1]:
            raise ValueError(f"APS needs equal strides on both axes, got {conv.stride}")
        super().__init__(conv)
        self.down = ApsDown2d(conv.out_channels, filter_size, conv.stride[0], p)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(super().forward(x))
