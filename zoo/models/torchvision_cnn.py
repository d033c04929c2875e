"""Every other torchvision classification CNN, anti-aliased by ``zoo.antialias``, behind the timm interface.

One class, one data table: ``{arch}`` is torchvision's model (the baseline twin) and ``{arch}_aa{K}`` is
``zoo.antialias(model, K, pad_mode, aa_stem)``. The torchvision model's children become this model's children,
so state-dict keys are torchvision's and torchvision weights load strictly into both twins. The head is
``global_pool`` (timm's selectable pool, replacing torchvision's average pool) then the family's classifier layers.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.fx
import torchvision
from torch import Tensor, nn
from torch.func import functional_call

from zoo.models._contract import ZooModel
from zoo.models._head import make_global_pool
from zoo.models._helpers import forget_stale_builtins
from zoo.models.antialias import antialias

__all__ = ["FAMILIES", "VARIANTS", "TorchvisionCNN"]

# family -> (children that form the head, the final classifier layer, children run after the pool and before the
# classifier; a head layer listed under "pre_flatten" runs on the unflattened (N, C, 1, 1) map) and first conv.
# The feature levels are not data: ``feature_levels`` measures them on the meta device.
FAMILIES: dict[str, dict[str, Any]] = {
    "convnext": dict(head=("avgpool", "classifier"), fc="classifier.2", pre=("classifier.0",), first="features.0.0"),
    "efficientnet": dict(
        head=("avgpool", "classifier"), fc="classifier.1", pre=("classifier.0",), first="features.0.0"
    ),
    "regnet": dict(head=("avgpool", "fc"), fc="fc", pre=(), first="stem.0"),
    "mnasnet": dict(head=("classifier",), fc="classifier.1", pre=("classifier.0",), first="layers.0"),
    "shufflenet": dict(head=("fc",), fc="fc", pre=(), first="conv1.0"),
    "squeezenet": dict(head=("classifier",), fc="classifier.1", pre=("classifier.0",), first="features.0"),
    "googlenet": dict(head=("avgpool", "dropout", "fc"), fc="fc", pre=("dropout",), first="conv1.conv"),
    "inception": dict(head=("avgpool", "dropout", "fc"), fc="fc", pre=("dropout",), first="Conv2d_1a_3x3.conv"),
}

# arch -> family, smallest input of the baseline and of the anti-aliased model (measured, filter sizes 2-5),
# forward_features size at the cfg input size (224 px; inception_v3 299 px).
_ARCHS: dict[str, tuple[str, int, int, int]] = {
    **{f"convnext_{s}": ("convnext", 32, 32, 7) for s in ("tiny", "small", "base", "large")},
    **{f"efficientnet_b{i}": ("efficientnet", 1, 1, 7) for i in range(8)},
    **{f"efficientnet_v2_{s}": ("efficientnet", 1, 1, 7) for s in ("s", "m", "l")},
    **{f"regnet_x_{s}": ("regnet", 1, 1, 7) for s in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")},
    **{
        f"regnet_y_{s}": ("regnet", 1, 1, 7)
        for s in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf", "128gf")
    },
    **{f"mnasnet{s}": ("mnasnet", 1, 1, 7) for s in ("0_5", "0_75", "1_0", "1_3")},
    **{f"shufflenet_v2_{s}": ("shufflenet", 1, 1, 7) for s in ("x0_5", "x1_0", "x1_5", "x2_0")},
    "squeezenet1_0": ("squeezenet", 21, 35, 13),
    "squeezenet1_1": ("squeezenet", 17, 31, 13),
    "googlenet": ("googlenet", 15, 45, 7),
    "inception_v3": ("inception", 75, 75, 8),
}
_EXTRA_KWARGS = {"googlenet": dict(aux_logits=False, init_weights=True),
                 "inception_v3": dict(aux_logits=False, init_weights=True)}  # fmt: skip


class TorchvisionCNN(ZooModel):
    """A torchvision CNN (``filter_size=None``) or its ``zoo.antialias`` rewrite, with timm's interface."""

    def __init__(
        self,
        name: str,
        tv_arch: str,
        family: str,
        min_sizes: tuple[int, int],
        pool_size: int = 7,
        input_size: int = 224,
        **common: Any,
    ) -> None:
        super().__init__(name, **common)
        if self.in_chans != 3:
            raise ValueError(f"{name}: in_chans must be 3 (torchvision's stem), got {self.in_chans}")
        spec = FAMILIES[family]
        self.family = family
        self._pool_size = pool_size
        self._input_size = input_size
        self.classifier_name = spec["fc"]
        self._head_children = spec["head"]
        self._pre_fc = spec["pre"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tv = getattr(torchvision.models, tv_arch)(
                num_classes=max(self.num_classes, 1), **_EXTRA_KWARGS.get(tv_arch, {})
            )
        if self.filter_size is not None:
            tv = antialias(tv, self.filter_size, self.pad_mode, aa_stem=self.aa_stem, inplace=True)
        for child_name, child in tv.named_children():
            if child is not None:
                self.add_module(child_name, child)
        self.num_features = self.head_hidden_size = self._classifier_in_features()
        self._set_pool(self.global_pool_type)
        if self.drop_rate > 0:
            for m in self.modules():
                if isinstance(m, nn.Dropout):
                    m.p = self.drop_rate
        if self.num_classes == 0:
            self._set_classifier(0)
        self.min_input_size = min_sizes[self.filter_size is not None]
        self.feature_info = feature_levels(self, self._record_trunk(), input_size)

    @property
    def head_names(self) -> tuple[str, ...]:
        """``global_pool`` and the family's head children (torchvision's pool, dropout and classifier)."""
        return ("global_pool", *self._head_children)

    @property
    def cfg_pool_size(self) -> int:
        return self._pool_size

    def __prepare_scriptable__(self) -> nn.Module:
        """``torch.jit.script`` compiles this model's ``torch.fx`` graph: the forward as straight-line code (the
        name-driven trunk and head loops are Python), with the same submodules, state-dict keys and outputs.
        The input-size check stays in the graph; activation checkpointing is not scripted (as in every family)."""
        checkpointing, self.grad_checkpointing = self.grad_checkpointing, False
        try:
            return forget_stale_builtins(torch.fx.symbolic_trace(self))
        finally:
            self.grad_checkpointing = checkpointing

    def default_pretrained_cfg(self, name: str) -> dict[str, Any]:
        return {**super().default_pretrained_cfg(name), "input_size": (3, self._input_size, self._input_size)}

    def _set_pool(self, global_pool: str) -> None:
        self.global_pool = make_global_pool(global_pool)
        self.global_pool_type = global_pool
        if hasattr(self, "avgpool"):
            self.avgpool = nn.Identity()  # the pool is ``global_pool``

    def _classifier_in_features(self) -> int:
        fc = self.get_submodule(self.classifier_name)
        base = fc.in_features if isinstance(fc, nn.Linear) else fc.in_channels
        gp = getattr(self, "global_pool", None)
        return base * (gp.feat_mult() if gp is not None and self.family != "squeezenet" else 1)

    def _set_classifier(self, num_classes: int) -> None:
        parent, _, leaf = self.classifier_name.rpartition(".")
        owner = self.get_submodule(parent) if parent else self
        if num_classes == 0:
            new: nn.Module = nn.Identity()
        elif self.family == "squeezenet":
            new = nn.Conv2d(self.num_features, num_classes, 1)
        else:
            new = nn.Linear(self.num_features * self.global_pool.feat_mult(), num_classes)
        setattr(owner, leaf, new)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.family == "squeezenet":  # dropout -> 1x1 conv classifier -> ReLU -> global pool
            if pre_logits:
                return self.global_pool(x)
            x = self.classifier[1](self.classifier[0](x))
            return self.global_pool(self.classifier[2](x)) if self.num_classes else self.global_pool(x)
        if self.family == "convnext":  # the LayerNorm2d of the classifier runs on the pooled map
            x = self.classifier[0](self.global_pool.pool(x)).flatten(1) if self.global_pool_type else x
            return x if pre_logits else self.classifier[2](x)
        x = self.global_pool(x)
        for name in self._pre_fc:
            x = self.get_submodule(name)(x)
        return x if pre_logits else self.get_submodule(self.classifier_name)(x)


def feature_levels(model: nn.Module, trunk: list[str], size: int) -> list[dict[str, Any]]:
    """timm ``feature_info`` of ``model``: for each total stride (2, 4, 8, ...) the last trunk module at it.

    The trunk is ``trunk``'s children, a ``nn.Sequential`` listed by its children (as timm's
    ``flatten_sequential`` lists them). Their output shapes come from one forward on the meta device (no
    compute, no memory) at ``size`` px; the stride of an output ``h`` px high is the power of two nearest to
    ``size / h`` (unpadded layers make ``h`` a little smaller than ``size / stride``).
    """
    modules: list[tuple[str, nn.Module]] = []
    for name in trunk:
        child = model.get_submodule(name)
        if isinstance(child, nn.Sequential):
            modules += [(f"{name}.{sub}", m) for sub, m in child.named_children()]
        else:
            modules.append((name, child))
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, n=n: shapes.__setitem__(n, tuple(out.shape))) for n, m in modules
    ]
    try:
        meta = {k: torch.empty_like(v, device="meta") for k, v in [*model.named_parameters(), *model.named_buffers()]}
        functional_call(model, meta, (torch.empty(1, model.in_chans, size, size, device="meta"),))
    finally:
        for hook in hooks:
            hook.remove()
    last: dict[int, dict[str, Any]] = {}
    for name, _ in modules:
        _, chans, h, _w = shapes[name]
        stride = 2 ** round(math.log2(size / h))
        if stride > 1:
            last[stride] = dict(num_chs=chans, reduction=stride, module=name)
    return [last[s] for s in sorted(last)]


def _variants() -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for arch, (family, min_base, min_aa, pool) in _ARCHS.items():
        spec = FAMILIES[family]
        cls = type(f"TV_{arch}", (TorchvisionCNN,), {"first_conv": spec["first"], "classifier_name": spec["fc"],
                                                     "__module__": __name__})  # fmt: skip
        table[arch] = dict(cls=cls, tv_arch=arch, family=family, min_sizes=(min_base, min_aa), pool_size=pool)
        if arch == "inception_v3":
            table[arch]["input_size"] = 299
    return table


VARIANTS: dict[str, dict[str, Any]] = _variants()
