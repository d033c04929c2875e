"""ResNet, ResNeXt and Wide ResNet with BlurPool at every downsampling point.

Placement (official release): the stem conv stays strided (unless ``aa_stem``), the stem
max-pool becomes MaxPool(2, s=1) + BlurPool; a strided block runs its 3x3 conv at stride 1 and
blurs after the following ReLU; the projection shortcut blurs before its 1x1 conv.
State-dict keys are torchvision's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from zoo.layers import BlurConv2d
from zoo.models._head import PoolFcModel
from zoo.models._helpers import blur_or_identity

VARIANTS: dict[str, dict[str, Any]] = {
    "resnet18": dict(block="basic", layers=(2, 2, 2, 2)),
    "resnet34": dict(block="basic", layers=(3, 4, 6, 3)),
    "resnet50": dict(block="bottleneck", layers=(3, 4, 6, 3)),
    "resnet101": dict(block="bottleneck", layers=(3, 4, 23, 3)),
    "resnet152": dict(block="bottleneck", layers=(3, 8, 36, 3)),
    "resnext50_32x4d": dict(block="bottleneck", layers=(3, 4, 6, 3), groups=32, width_per_group=4),
    "resnext101_32x8d": dict(block="bottleneck", layers=(3, 4, 23, 3), groups=32, width_per_group=8),
    "resnext101_64x4d": dict(block="bottleneck", layers=(3, 4, 23, 3), groups=64, width_per_group=4),
    "wide_resnet50_2": dict(block="bottleneck", layers=(3, 4, 6, 3), width_per_group=128),
    "wide_resnet101_2": dict(block="bottleneck", layers=(3, 4, 23, 3), width_per_group=128),
}


class _ResBlock(nn.Module):
    """A residual block: ``_layers`` builds the main path, with ``aa(channels)`` after the strided conv's ReLU
    (a blur, or ``Identity`` for torchvision's model, whose conv is then strided); the shortcut comes last."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        groups: int,
        base_width: int,
        filter_size: int | None,
        pad_mode: str,
    ) -> None:
        super().__init__()
        dense_stride = 1 if filter_size is not None else stride
        self._layers(
            inplanes,
            planes,
            dense_stride,
            groups,
            base_width,
            lambda c: blur_or_identity(c, filter_size, stride, pad_mode),
        )
        self.downsample = downsample

    def _layers(self, inplanes: int, planes: int, stride: int, groups: int, base_width: int, aa: Callable) -> None:
        raise NotImplementedError


class BasicBlock(_ResBlock):
    def _layers(self, inplanes: int, planes: int, stride: int, groups: int, base_width: int, aa: Callable) -> None:
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and width_per_group=64")
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.aa = aa(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.aa(self.relu(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(_ResBlock):
    expansion = 4

    def _layers(self, inplanes: int, planes: int, stride: int, groups: int, base_width: int, aa: Callable) -> None:
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.aa = aa(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.aa(self.relu(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(PoolFcModel):
    """ResNet family; ``filter_size=None`` is torchvision's model, an int the anti-aliased one."""

    first_conv = "conv1"
    classifier_name = "fc"

    def __init__(
        self,
        name: str = "resnet50",
        block: str = "bottleneck",
        layers: tuple[int, ...] = (3, 4, 6, 3),
        groups: int = 1,
        width_per_group: int = 64,
        **common: Any,
    ) -> None:
        super().__init__(name, **common)
        filter_size, aa_stem = self.filter_size, self.aa_stem
        block_cls = _BLOCKS[block]
        aa = filter_size is not None
        self.conv1 = self.stem_conv(64)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.stem_aa = self.blur(64) if aa_stem else nn.Identity()
        self.maxpool = self.max_pool(64, kernel_size=2, padding=0)
        self.feature_info = [dict(num_chs=64, reduction=2, module="stem_aa" if aa_stem else "relu")]
        inplanes = 64
        for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            out = planes * block_cls.expansion
            downsample = None
            if stride != 1 or inplanes != out:
                if aa and stride != 1:
                    conv: nn.Module = BlurConv2d(
                        inplanes, out, 1, stride, filter_size=filter_size, pad_mode=self.pad_mode
                    )
                else:
                    conv = nn.Conv2d(inplanes, out, 1, stride=stride, bias=False)
                downsample = nn.Sequential(conv, nn.BatchNorm2d(out))
            blocks = [
                block_cls(inplanes, planes, stride, downsample, groups, width_per_group, filter_size, self.pad_mode)
            ]
            blocks += [
                block_cls(out, planes, 1, None, groups, width_per_group, filter_size, self.pad_mode)
                for _ in range(1, depth)
            ]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = out
            self.feature_info.append(dict(num_chs=out, reduction=4 * 2**i, module=f"layer{i + 1}"))
        self.num_features = self.head_hidden_size = inplanes
        self._finish(linear="keep")

    def _min_size(self) -> int:
        return 3 if self.antialiased else 1  # MaxPool(2, s=1) needs a 2x2 map after the strided stem
