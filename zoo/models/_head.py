"""The two classifier heads of the families, as ``ZooModel`` subclasses a family inherits from.

``PoolFcModel``: ``global_pool`` (timm's selectable pool) -> optional dropout -> the fc named by
``classifier_name`` (ResNet's ``fc``, DenseNet's ``classifier``).
``MlpHeadModel``: ``global_pool`` -> a ``classifier`` Sequential ending in the fc (VGG, MobileNet).
Both keep the fc where torchvision has it, so state-dict keys are torchvision's.
"""

from __future__ import annotations

from timm.layers import SelectAdaptivePool2d
from torch import Tensor, nn

from zoo.models._contract import ZooModel
from zoo.models._helpers import make_linear

__all__ = ["GLOBAL_POOLS", "MlpHeadModel", "PoolFcModel", "make_global_pool", "make_linear"]

GLOBAL_POOLS = ("avg", "max", "avgmax", "catavgmax", "")


def make_global_pool(global_pool: str) -> SelectAdaptivePool2d:
    """timm's selectable global pool (flattening); ``''`` passes the feature map through."""
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"unknown global_pool {global_pool!r}; valid: {', '.join(map(repr, GLOBAL_POOLS))}")
    return SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))


class PoolFcModel(ZooModel):
    """Global pool, dropout (``drop_rate``, when ``head_dropout``), then a single fc.

    ``global_pool=''`` keeps the map unpooled (timm's convention). ``_finish`` adds the fc at
    ``classifier_name``.
    """

    head_dropout = True

    def _set_pool(self, global_pool: str) -> None:
        self.global_pool = make_global_pool(global_pool)
        self.global_pool_type = global_pool
        self.head_dropout = type(self).head_dropout  # an instance attribute: TorchScript reads it

    def _classifier_in_features(self) -> int:
        return self.num_features * self.global_pool.feat_mult()

    def _add_classifier(self) -> None:
        self._set_classifier(self.num_classes)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x)
        if self.head_dropout and self.drop_rate > 0.0:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        if pre_logits:
            return x
        for name, module in self.named_children():  # the fc by its torchvision name (scriptable)
            if name == self.classifier_name:
                x = module(x)
        return x


class MlpHeadModel(ZooModel):
    """Models whose head is ``global_pool`` then a ``classifier`` Sequential ending in the fc.

    ``global_pool=''`` removes the head: ``forward_head`` returns the feature map unchanged.
    ``pre_logits=True`` runs every classifier layer but the last. ``global_pool_type`` is the pool's name.
    """

    head_pools: tuple[str, ...] = ("avg", "max", "avgmax", "")

    def _head_pool(self, global_pool: str) -> nn.Module:
        return make_global_pool(global_pool)

    def _set_pool(self, global_pool: str) -> None:
        if global_pool not in self.head_pools:
            raise ValueError(f"{self.name} supports global_pool in {self.head_pools}, got {global_pool!r}")
        self.global_pool_type = global_pool
        self.global_pool = self._head_pool(global_pool or "avg")

    def _classifier_in_features(self) -> int:
        return self.head_hidden_size

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.global_pool_type == "":
            return x
        x = self.global_pool(x)
        last = len(self.classifier) - 1
        for i, layer in enumerate(self.classifier):
            if i < last or not pre_logits:
                x = layer(x)
        return x
