"""Tiny networks whose shift behaviour is known, for the eval tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zoo.layers import BlurPool2d


class Subsample(nn.Module):
    """Plain stride-2 subsampling (no anti-aliasing)."""

    def forward(self, x: Tensor) -> Tensor:
        return x[..., ::2, ::2]


def circular_net(down: nn.Module | None = None, channels: int = 4, classes: int = 5, seed: int = 0) -> nn.Sequential:
    """conv(circular) - relu - [down] - conv(circular) - relu - GAP - linear. Layer names: '1' and the
    last ReLU ('4' with ``down``, '3' without)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1, padding_mode="circular"), nn.ReLU()]
    if down is not None:
        layers.append(down)
    layers += [nn.Conv2d(channels, channels, 3, padding=1, padding_mode="circular"), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes)]
    return nn.Sequential(*layers)


def blur(k: int, channels: int = 4) -> BlurPool2d:
    return BlurPool2d(channels, filter_size=k, stride=2, pad_mode="circular")


class BrightnessClassifier(nn.Module):
    """Class = which of ``bins`` equal bins of [0, 1) the view's mean pixel value falls in."""

    def __init__(self, bins: int = 4) -> None:
        super().__init__()
        self.bins = bins

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=(1, 2, 3))
        centres = (torch.arange(self.bins, dtype=x.dtype) + 0.5) / self.bins
        return -(mean[:, None] - centres[None]).abs()  # top-1 = the nearest bin centre


class MeanBins(nn.Module):
    """Class = which of 40 bins of [-2, 2] the normalised image mean falls in (sensitive to brightness/noise)."""

    def forward(self, x: Tensor) -> Tensor:
        centres = torch.linspace(-2, 2, 40)
        return -(x.mean((1, 2, 3))[:, None] - centres[None]).abs()


class PositionalBias(nn.Module):
    """G(x) = x + b with a fixed position-dependent pattern b: not shift-equivariant, known error."""

    def __init__(self, bias: Tensor) -> None:
        super().__init__()
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias


def pointwise_generator() -> nn.Module:
    """An image-to-image net of 1x1 convs: commutes exactly with circular shifts."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 3, 1))
