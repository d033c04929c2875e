"""DenseNet (121/161/169/201) with BlurPool: the stem max-pool becomes MaxPool(3, s=1) + BlurPool,
each transition's AvgPool(2, 2) becomes BlurPool(2). Keys are torchvision's."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.models._head import PoolFcModel

VARIANTS: dict[str, dict[str, Any]] = {
    "densenet121": dict(growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64),
    "densenet161": dict(growth_rate=48, block_config=(6, 12, 36, 24), num_init_features=96),
    "densenet169": dict(growth_rate=32, block_config=(6, 12, 32, 32), num_init_features=64),
    "densenet201": dict(growth_rate=32, block_config=(6, 12, 48, 32), num_init_features=64),
}


class DenseLayer(nn.Module):
    def __init__(self, in_chs: int, growth_rate: int, bn_size: int, drop_rate: float) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_chs)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = drop_rate

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.relu1(self.norm1(x)))
        out = self.conv2(self.relu2(self.norm2(out)))
        if self.drop_rate > 0.0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers: int, in_chs: int, bn_size: int, growth_rate: int, drop_rate: float) -> None:
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(in_chs + i * growth_rate, growth_rate, bn_size, drop_rate))

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class DenseNet(PoolFcModel):
    """DenseNet family; ``filter_size=None`` is torchvision's model, an int the anti-aliased one.

    ``drop_rate`` is the dense layers' dropout (torchvision's ``drop_rate``).
    """

    first_conv = "features.conv0"
    classifier_name = "classifier"
    head_dropout = False  # drop_rate is the dense layers' dropout

    def __init__(
        self,
        name: str = "densenet121",
        growth_rate: int = 32,
        block_config: tuple[int, ...] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        **common: Any,
    ) -> None:
        super().__init__(name, **common)
        aa = self.filter_size is not None
        stem: list[tuple[str, nn.Module]] = [
            ("conv0", self.stem_conv(num_init_features)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
        ]
        if self.aa_stem:
            stem.append(("aa0", self.blur(num_init_features)))
        stem.append(("pool0", self.max_pool(num_init_features, kernel_size=3, padding=1)))
        self.features = nn.Sequential(OrderedDict(stem))
        self.feature_info = [dict(num_chs=num_init_features, reduction=2, module=f"features.{stem[-2][0]}")]
        chans, reduction = num_init_features, 4
        for i, depth in enumerate(block_config):
            block = DenseBlock(depth, chans, bn_size, growth_rate, self.drop_rate)
            self.features.add_module(f"denseblock{i + 1}", block)
            chans += depth * growth_rate
            if i < len(block_config) - 1:
                self.feature_info.append(dict(num_chs=chans, reduction=reduction, module=f"features.denseblock{i + 1}"))
                pool = self.blur(chans // 2) if aa else nn.AvgPool2d(2, 2)
                transition = nn.Sequential(
                    OrderedDict(
                        norm=nn.BatchNorm2d(chans),
                        relu=nn.ReLU(inplace=True),
                        conv=nn.Conv2d(chans, chans // 2, 1, bias=False),
                        pool=pool,
                    )
                )
                self.features.add_module(f"transition{i + 1}", transition)
                chans //= 2
                reduction *= 2
        self.features.add_module("norm5", nn.BatchNorm2d(chans))
        self.features.add_module("relu5", nn.ReLU(inplace=True))  # torchvision's F.relu after features
        self.feature_info.append(dict(num_chs=chans, reduction=reduction, module="features.relu5"))
        self.num_features = self.head_hidden_size = chans
        self._finish(conv_mode="fan_in", conv_nonlinearity="leaky_relu", linear="zero_bias")

    def _min_size(self) -> int:
        # aa: every stride is padded to ceil(H/2); baseline: three AvgPool(2, 2) need an 8x8 map after the stem
        return 1 if self.antialiased else 29
