"""Classifier heads shared by the families."""

from __future__ import annotations

from timm.layers import SelectAdaptivePool2d
from torch import Tensor, nn

from zoo.models._interface import ZooModel

GLOBAL_POOLS = ("avg", "max", "avgmax", "catavgmax", "")


def make_global_pool(global_pool: str) -> SelectAdaptivePool2d:
    """timm's selectable global pool (flattening); ``''`` passes the feature map through."""
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"unknown global_pool {global_pool!r}; valid: {', '.join(map(repr, GLOBAL_POOLS))}")
    return SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))


def make_linear(in_features: int, num_classes: int) -> nn.Module:
    """``nn.Linear`` or, for ``num_classes == 0``, ``nn.Identity``."""
    return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()


class MlpHeadModel(ZooModel):
    """Models whose head is ``head_pool`` then a ``classifier`` Sequential ending in the fc.

    ``global_pool=''`` removes the head: ``forward_head`` returns the feature map unchanged.
    ``pre_logits=True`` runs every classifier layer but the last.
    """

    head_pools: tuple[str, ...] = ("avg", "max", "avgmax", "")

    def _head_pool(self, global_pool: str) -> nn.Module:
        return make_global_pool(global_pool)

    def _set_pool(self, global_pool: str) -> None:
        if global_pool not in self.head_pools:
            raise ValueError(f"{self.arch} supports global_pool in {self.head_pools}, got {global_pool!r}")
        self.global_pool = global_pool
        self.head_pool = self._head_pool(global_pool or "avg")

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.global_pool == "":
            return x
        x = self.head_pool(x)
        last = len(self.classifier) - 1
        for i, layer in enumerate(self.classifier):
            if i < last or not pre_logits:
                x = layer(x)
        return x

    def get_classifier(self) -> nn.Module:
        return self.classifier[-1]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self._set_pool(global_pool)
        self.classifier[-1] = make_linear(self.head_hidden_size, num_classes)
