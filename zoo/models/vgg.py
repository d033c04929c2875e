"""Plain conv stacks with an MLP head: VGG (11-19, +BN) and AlexNet, one class and a variant table.

Anti-aliasing: every MaxPool(k, s) becomes MaxPool(k, s=1) + BlurPool(s) in the same
``features`` slot; a strided conv (AlexNet's conv1) runs at stride ``s/2`` and its ReLU slot
becomes ReLU + BlurPool(2), as in the official release. ``features`` indices and therefore
state-dict keys stay torchvision's.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from zoo.layers import MaxBlurPool2d
from zoo.models._head import MlpHeadModel
from zoo.models._helpers import conv_out, make_linear

# A layer spec: ("conv", out_channels, kernel, stride, padding) or ("pool", kernel, stride, padding).
Spec = tuple[Any, ...]


def _vgg_spec(cfg: list[int | str]) -> list[Spec]:
    return [("pool", 2, 2, 0) if c == "M" else ("conv", c, 3, 1, 1) for c in cfg]


_VGG_CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
_ALEXNET_SPEC: list[Spec] = [
    ("conv", 64, 11, 4, 2), ("pool", 3, 2, 0),
    ("conv", 192, 5, 1, 2), ("pool", 3, 2, 0),
    ("conv", 384, 3, 1, 1), ("conv", 256, 3, 1, 1), ("conv", 256, 3, 1, 1), ("pool", 3, 2, 0),
]  # fmt: skip

VARIANTS: dict[str, dict[str, Any]] = {
    **{name: dict(spec=_vgg_spec(cfg), batch_norm=False) for name, cfg in _VGG_CFGS.items()},
    **{f"{name}_bn": dict(spec=_vgg_spec(cfg), batch_norm=True) for name, cfg in _VGG_CFGS.items()},
    "alexnet": dict(spec=_ALEXNET_SPEC, batch_norm=False, pool_size=6, hidden=4096, dropout_first=True),
}


class VGG(MlpHeadModel):
    """VGG / AlexNet; ``filter_size=None`` is torchvision's model, an int the anti-aliased one.

    ``global_pool`` is ``'avg'`` (torchvision's adaptive pool to ``pool_size`` + MLP) or ``''``
    (no head: ``forward_head`` returns the feature map).
    """

    head_pools = ("avg", "")
    first_conv = "features.0"
    classifier_name = "classifier.6"

    def __init__(
        self,
        name: str = "vgg16",
        spec: list[Spec] | None = None,
        batch_norm: bool = False,
        pool_size: int = 7,
        hidden: int = 4096,
        dropout_first: bool = False,
        **common: Any,
    ) -> None:
        super().__init__(name, **{"drop_rate": 0.5, **common})
        num_classes, in_chans, filter_size = self.num_classes, self.in_chans, self.filter_size
        spec = spec if spec is not None else _vgg_spec(_VGG_CFGS["vgg16"])
        self.spec = spec
        layers: list[nn.Module] = []
        chans, reduction = in_chans, 1
        self.feature_info = []
        for item in spec:
            if item[0] == "conv":
                _, out, k, s, p = item
                dense_stride = s // 2 if filter_size is not None and s > 1 else s
                layers.append(nn.Conv2d(chans, out, k, stride=dense_stride, padding=p))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(out))
                relu = nn.ReLU(inplace=True)
                if dense_stride != s:  # AlexNet conv1: stride 4 -> 2, then ReLU + blur(2)
                    relu = nn.Sequential(relu, self.blur(out))
                layers.append(relu)
                chans, reduction = out, reduction * s
            else:
                _, k, s, p = item
                if filter_size is None:
                    layers.append(nn.MaxPool2d(k, s, p))
                else:
                    layers.append(MaxBlurPool2d(chans, k, s, p, filter_size, self.pad_mode))
                reduction *= s
                self.feature_info.append(dict(num_chs=chans, reduction=reduction, module=f"features.{len(layers) - 1}"))
        self.features = nn.Sequential(*layers)
        self.num_features = chans
        self.head_hidden_size = hidden
        self.pool_size = pool_size
        self.dropout_first = dropout_first
        flat = chans * pool_size * pool_size
        mlp: list[nn.Module] = [nn.Linear(flat, hidden), nn.ReLU(True), nn.Linear(hidden, hidden), nn.ReLU(True)]
        for pos in (0, 3) if dropout_first else (2, 5):
            mlp.insert(pos, nn.Dropout(p=self.drop_rate))
        self.classifier = nn.Sequential(*mlp, make_linear(hidden, num_classes))
        self._finish()

    @property
    def cfg_pool_size(self) -> int:
        return self.pool_size

    def _head_pool(self, global_pool: str) -> nn.Module:
        return nn.Sequential(nn.AdaptiveAvgPool2d((self.pool_size, self.pool_size)), nn.Flatten(1))

    def _min_size(self) -> int:
        """Smallest square input every layer accepts (each stride-1 max-pool needs ``k - 2p`` pixels)."""

        def fits(size: int) -> bool:
            for item in self.spec:
                if item[0] == "conv":
                    _, _, k, s, p = item
                    size = conv_out(size, k, s // 2 if self.antialiased and s > 1 else s, p)
                    if self.antialiased and s > 1:
                        size = -(-size // 2)
                else:
                    _, k, s, p = item
                    size = conv_out(size, k, 1 if self.antialiased else s, p)
                    if self.antialiased and size >= 1:
                        size = -(-size // s)
                if size < 1:
                    return False
            return True

        return next(size for size in range(1, 4096) if fits(size))
