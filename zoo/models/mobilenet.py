"""MobileNetV2 and MobileNetV3 (small, large) with BlurPool.

Every stride-2 depthwise conv runs at stride 1, followed by its BN and activation and then
BlurPool(2) (appended to the same ``Conv2dNormActivation``, so keys stay torchvision's).
The stem conv stays strided unless ``aa_stem``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation, SqueezeExcitation

from zoo.layers import BlurPool2d
from zoo.models._head import MlpHeadModel
from zoo.models._helpers import make_linear


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without going below 90% (MobileNet rule)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def conv_bn_act(
    in_chs: int,
    out_chs: int,
    kernel: int,
    stride: int,
    norm: Callable[..., nn.Module],
    act: Callable[..., nn.Module] | None,
    groups: int = 1,
    filter_size: int | None = None,
    pad_mode: str = "reflect",
) -> Conv2dNormActivation:
    """Conv-BN-act; anti-aliased (conv at stride 1, then blur) when ``filter_size`` is set."""
    aa = filter_size is not None and stride > 1
    layer = Conv2dNormActivation(
        in_chs, out_chs, kernel, 1 if aa else stride, groups=groups, norm_layer=norm, activation_layer=act
    )
    if aa:
        layer.append(BlurPool2d(out_chs, filter_size, stride, pad_mode))
    return layer


class _MobileNet(MlpHeadModel):
    first_conv = "features.0.0"

    def _record(self, index: int, chans: int, reduction: int) -> None:
        """Note ``features[index]`` as a feature level, replacing the previous one of equal reduction."""
        info = dict(num_chs=chans, reduction=reduction, module=f"features.{index}")
        if self.feature_info and self.feature_info[-1]["reduction"] == reduction:
            self.feature_info[-1] = info
        else:
            self.feature_info.append(info)


class InvertedResidualV2(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int, expand: int, filter_size: int | None, pad_mode: str):
        super().__init__()
        hidden = round(in_chs * expand)
        self.use_res_connect = stride == 1 and in_chs == out_chs
        norm = nn.BatchNorm2d
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_act(in_chs, hidden, 1, 1, norm, nn.ReLU6))
        layers += [
            conv_bn_act(hidden, hidden, 3, stride, norm, nn.ReLU6, hidden, filter_size, pad_mode),
            nn.Conv2d(hidden, out_chs, 1, bias=False),
            norm(out_chs),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


# (expand t, channels c, repeats n, stride s)
_V2_SETTING = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class MobileNetV2(_MobileNet):
    """MobileNetV2; ``filter_size=None`` is torchvision's model, an int the anti-aliased one."""

    classifier_name = "classifier.1"

    def __init__(
        self,
        name: str = "mobilenet_v2",
        width_mult: float = 1.0,
        **common: Any,
    ) -> None:
        super().__init__(name, **{"drop_rate": 0.2, **common})
        num_classes, in_chans, filter_size, aa_stem = self.num_classes, self.in_chans, self.filter_size, self.aa_stem
        chans = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        stem_filter = filter_size if aa_stem else None
        layers: list[nn.Module] = [
            conv_bn_act(in_chans, chans, 3, 2, nn.BatchNorm2d, nn.ReLU6, 1, stem_filter, self.pad_mode)
        ]
        self._record(0, chans, 2)
        reduction = 2
        for t, c, n, s in _V2_SETTING:
            out = make_divisible(c * width_mult)
            for i in range(n):
                stride = s if i == 0 else 1
                layers.append(InvertedResidualV2(chans, out, stride, t, filter_size, self.pad_mode))
                chans, reduction = out, reduction * stride
                self._record(len(layers) - 1, chans, reduction)
        layers.append(conv_bn_act(chans, last, 1, 1, nn.BatchNorm2d, nn.ReLU6))
        self._record(len(layers) - 1, last, reduction)
        self.features = nn.Sequential(*layers)
        self.num_features = self.head_hidden_size = last
        self.classifier = nn.Sequential(nn.Dropout(p=self.drop_rate), make_linear(last, num_classes))
        self._finish(conv_nonlinearity="leaky_relu")


class InvertedResidualV3(nn.Module):
    def __init__(
        self,
        cfg: tuple[int, ...],
        act: Callable[..., nn.Module],
        use_se: bool,
        norm: Callable[..., nn.Module],
        filter_size: int | None,
        pad_mode: str,
    ) -> None:
        super().__init__()
        in_chs, kernel, hidden, out_chs, stride = cfg
        self.use_res_connect = stride == 1 and in_chs == out_chs
        layers: list[nn.Module] = []
        if hidden != in_chs:
            layers.append(conv_bn_act(in_chs, hidden, 1, 1, norm, act))
        layers.append(conv_bn_act(hidden, hidden, kernel, stride, norm, act, hidden, filter_size, pad_mode))
        if use_se:
            layers.append(SqueezeExcitation(hidden, make_divisible(hidden // 4), scale_activation=nn.Hardsigmoid))
        layers.append(conv_bn_act(hidden, out_chs, 1, 1, norm, None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x) if self.use_res_connect else self.block(x)


# (in, kernel, expanded, out, squeeze-excite, activation RE/HS, stride), from the MobileNetV3 paper
_V3_LARGE = [
    (16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2), (24, 3, 72, 24, False, "RE", 1),
    (24, 5, 72, 40, True, "RE", 2), (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1), (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1), (160, 5, 960, 160, True, "HS", 1),
]  # fmt: skip
_V3_SMALL = [
    (16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2), (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2), (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1), (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1), (96, 5, 576, 96, True, "HS", 1),
]  # fmt: skip


class MobileNetV3(_MobileNet):
    """MobileNetV3; ``filter_size=None`` is torchvision's model, an int the anti-aliased one."""

    classifier_name = "classifier.3"

    def __init__(
        self,
        name: str = "mobilenet_v3_large",
        setting: list[tuple[Any, ...]] | None = None,
        last_channel: int = 1280,
        width_mult: float = 1.0,
        **common: Any,
    ) -> None:
        super().__init__(name, **{"drop_rate": 0.2, **common})
        num_classes, in_chans, filter_size, aa_stem = self.num_classes, self.in_chans, self.filter_size, self.aa_stem
        setting = setting if setting is not None else _V3_LARGE
        norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        acts = {"RE": nn.ReLU, "HS": nn.Hardswish}
        chans = make_divisible(setting[0][0] * width_mult)
        stem_filter = filter_size if aa_stem else None
        layers: list[nn.Module] = [
            conv_bn_act(in_chans, chans, 3, 2, norm, nn.Hardswish, 1, stem_filter, self.pad_mode)
        ]
        self._record(0, chans, 2)
        reduction = 2
        for in_c, kernel, exp, out, se, act, stride in setting:
            cfg = tuple(make_divisible(c * width_mult) for c in (in_c, exp, out))
            block_cfg = (cfg[0], kernel, cfg[1], cfg[2], stride)
            layers.append(InvertedResidualV3(block_cfg, acts[act], se, norm, filter_size, self.pad_mode))
            chans, reduction = cfg[2], reduction * stride
            self._record(len(layers) - 1, chans, reduction)
        head_in = 6 * chans
        layers.append(conv_bn_act(chans, head_in, 1, 1, norm, nn.Hardswish))
        self._record(len(layers) - 1, head_in, reduction)
        self.features = nn.Sequential(*layers)
        hidden = make_divisible(last_channel * width_mult)
        self.num_features, self.head_hidden_size = head_in, hidden
        self.classifier = nn.Sequential(
            nn.Linear(head_in, hidden),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=self.drop_rate, inplace=True),
            make_linear(hidden, num_classes),
        )
        self._finish(conv_nonlinearity="leaky_relu")


VARIANTS: dict[str, dict[str, Any]] = {
    "mobilenet_v2": dict(cls=MobileNetV2),
    "mobilenet_v3_large": dict(cls=MobileNetV3, setting=_V3_LARGE, last_channel=1280),
    "mobilenet_v3_small": dict(cls=MobileNetV3, setting=_V3_SMALL, last_channel=1024),
}
