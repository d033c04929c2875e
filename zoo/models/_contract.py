"""The family contract: what a model family provides and what ``ZooModel`` derives from it.

A family (one module: a ``ZooModel`` subclass plus a ``VARIANTS`` table) provides, in ``__init__``:

- the **trunk**: child modules registered in the order they run (``conv1 ... layer4`` or one
  ``features`` Sequential), keeping torchvision's names so state-dict keys are torchvision's;
- its own arguments, passing the common ones on: ``__init__(self, name, ..., **common)`` then
  ``super().__init__(name, **common)`` (``num_classes``, ``in_chans``, ``drop_rate``, ``global_pool``,
  ``filter_size``, ``pad_mode``, ``aa_stem``; validated here, read back as ``self.num_classes`` etc.);
- the **head**, by inheriting ``PoolFcModel`` or ``MlpHeadModel`` (``zoo.models._head``): ``global_pool`` is
  always the pool module (``global_pool_type`` its name), ``classifier_name`` names the final fc and
  ``first_conv`` the first conv; the blur comes from ``self.blur(channels, stride)``;
- ``feature_info`` (``dict(num_chs, reduction, module)`` per level), ``num_features``, ``head_hidden_size``;
- ``_min_size()`` when the net needs more than 1x1 pixels;
- then a call to ``self._finish(...)``: the head's pool (and fc), ``min_input_size``, the weight init.

The base derives ``forward_features`` (and activation checkpointing), ``trunk``, ``forward_intermediates``,
``forward``, ``get_classifier``, ``reset_classifier``, the input check, the default ``pretrained_cfg``,
``build_args`` (what ``zoo.create`` accepts) and argument validation.
"""

# No ``from __future__ import annotations`` here: fx copies the annotations of ``ZooModel.forward``
# into the code of a traced graph, and TorchScript cannot resolve them as strings ('_Tensor_').

import inspect
import numbers
from typing import Any

import torch
import torch.fx
from torch import Tensor, nn

from zoo.constants import IMAGENET_MEAN, IMAGENET_STD
from zoo.layers import MaxBlurPool2d, check_filter_size, normalize_pad_mode
from zoo.models._helpers import blur_or_identity, check_input, checkpoint_seq, forget_stale_builtins, make_linear

__all__ = ["ZooModel", "init_weights"]

torch.fx.wrap("check_input")  # fx keeps the input check as one call (it is wrapped where it is called)


def _is_probability(p: object) -> bool:
    """A real number in [0, 1) (NaN fails the comparison); bools are refused."""
    return isinstance(p, numbers.Real) and not isinstance(p, bool) and 0.0 <= float(p) < 1.0


_LINEAR_INITS = ("normal", "zero_bias", "keep")


def init_weights(
    model: nn.Module, conv_mode: str = "fan_out", conv_nonlinearity: str = "relu", linear: str = "normal"
) -> None:
    """torchvision's initialisation, in module order: Kaiming-normal convs (zero bias), unit/zero BatchNorm,
    and per ``linear``: ``normal`` (weight ~ N(0, 0.01), zero bias), ``zero_bias`` or ``keep`` (PyTorch's)."""
    if linear not in _LINEAR_INITS:
        raise ValueError(f"unknown linear init {linear!r}; valid: {', '.join(_LINEAR_INITS)}")
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=conv_mode, nonlinearity=conv_nonlinearity)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear != "keep":
            if linear == "normal":
                nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class ZooModel(nn.Module):
    """Base class of the zoo's families (timm's interface); the contract is in this module's docstring.

    ``filter_size=None`` builds the torchvision baseline twin; an int builds the anti-aliased model.
    ``name`` is the registered name (``resnet50_aa4``; ``arch`` is its older alias), unlike
    ``ModelEntry.arch``, the architecture (``resnet50``).
    """

    first_conv = ""  # state-dict prefix of the first conv (timm cfg ``first_conv``)
    classifier_name = ""  # state-dict prefix of the final fc (timm cfg ``classifier``)
    __jit_ignored_attributes__ = ["pretrained_cfg", "feature_info", "spec"]
    __jit_unused_properties__ = ["default_cfg", "antialiased", "cfg_pool_size", "arch", "head_names"]

    def __init__(
        self,
        name: str,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        filter_size: int | None = 4,
        pad_mode: str = "reflect",
        aa_stem: bool = False,
    ) -> None:
        """The build arguments every family takes (a family passes them on as ``**common``)."""
        super().__init__()
        if not isinstance(aa_stem, bool):
            raise ValueError(f"aa_stem must be True or False, got {aa_stem!r}")
        if not _is_probability(drop_rate):
            raise ValueError(f"drop_rate must be a number in [0, 1) (the dropout probability), got {drop_rate!r}")
        if filter_size is not None:
            check_filter_size(filter_size)
        elif aa_stem:
            raise ValueError("aa_stem=True needs an anti-aliased model (filter_size >= 1), not the baseline")
        if not isinstance(in_chans, int) or in_chans < 1:
            raise ValueError(f"in_chans must be an int >= 1, got {in_chans!r}")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0 (0 = no classifier), got {num_classes!r}")
        self.name = name
        self.classifier_name = type(self).classifier_name  # an instance attribute: TorchScript reads it
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = float(drop_rate)
        self.filter_size = filter_size
        self.pad_mode = normalize_pad_mode(pad_mode)
        self.aa_stem = aa_stem
        self.global_pool_type = global_pool  # the pool's name; ``global_pool`` is the module (set by the head)
        self.grad_checkpointing = False
        self.pretrained_cfg = {}
        self.feature_info = []
        self.min_input_size = 1

    def __prepare_scriptable__(self) -> nn.Module:
        """``torch.jit.script`` compiles this model itself, after clearing stale builtin ids (a torch bug)."""
        return forget_stale_builtins(self)

    def default_pretrained_cfg(self, name: str) -> dict[str, Any]:
        """torchvision's ImageNet eval settings; weights override them with their own metadata."""
        pool = self.cfg_pool_size
        return dict(
            architecture=name,
            num_classes=self.num_classes,
            input_size=(self.in_chans, 224, 224),
            pool_size=(pool, pool),
            min_input_size=(self.in_chans, self.min_input_size, self.min_input_size),
            crop_pct=0.875,
            interpolation="bilinear",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            first_conv=self.first_conv,
            classifier=self.classifier_name,
        )

    @classmethod
    def build_args(cls) -> set[str]:
        """The keyword arguments a family's constructor accepts (its own and the common ones)."""
        names: set[str] = set()
        for klass in cls.__mro__:
            if "__init__" in vars(klass) and issubclass(klass, ZooModel):
                params = inspect.signature(klass.__init__).parameters.values()
                names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        return names - {"self", "name"}

    @property
    def cfg_pool_size(self) -> int:
        """Spatial size of ``forward_features`` at 224 px."""
        return 7

    @property
    def default_cfg(self) -> dict[str, Any]:
        """Alias of ``pretrained_cfg`` (timm's older name)."""
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, cfg: dict[str, Any]) -> None:  # timm's builder assigns both names
        self.pretrained_cfg = cfg

    @property
    def antialiased(self) -> bool:
        return self.filter_size is not None

    @property
    def arch(self) -> str:
        """The registered name (alias of ``name``, kept for compatibility)."""
        return self.name

    @property
    def head_names(self) -> tuple[str, ...]:
        """The children that form the head: ``global_pool`` and the classifier's top-level module."""
        return ("global_pool", self.classifier_name.split(".")[0])

    def blur(self, channels: int, stride: int = 2) -> nn.Module:
        """The family's blur before a subsampling by ``stride`` (``Identity`` for the baseline)."""
        return blur_or_identity(channels, self.filter_size, stride, self.pad_mode)

    def stem_conv(self, out_chans: int, kernel_size: int = 7) -> nn.Conv2d:
        """torchvision's stem conv (stride 2, "same" padding, no bias); stride 1 with ``aa_stem``, where the blur
        after its activation subsamples."""
        stride = 1 if self.aa_stem else 2
        return nn.Conv2d(self.in_chans, out_chans, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)

    def max_pool(self, channels: int, kernel_size: int, padding: int) -> nn.Module:
        """A stride-2 max-pool: torchvision's ``MaxPool2d(3, 2, 1)`` for the baseline; for the anti-aliased model the
        official dense ``kernel_size`` / ``padding`` max-pool, then the blur (``MaxBlurPool2d``)."""
        if self.filter_size is None:
            return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        return MaxBlurPool2d(channels, kernel_size, 2, padding, self.filter_size, self.pad_mode)

    def _min_size(self) -> int:
        """Smallest square input the net accepts (override when it is more than 1 pixel)."""
        return 1

    def _finish(self, **init: Any) -> None:
        """End of a family's ``__init__``: the head's pool (and a ``PoolFcModel``'s fc), the minimum input
        size, then ``init_weights(self, **init)``."""
        self._set_pool(self.global_pool_type)
        self._add_classifier()
        self._record_trunk()
        self.min_input_size = self._min_size()
        init_weights(self, **init)

    def _record_trunk(self) -> list[str]:
        """Record (and return) the names of the children ``forward_features`` runs: all but the head's."""
        self._trunk_names = [n for n, _ in self.named_children() if n not in self.head_names]
        return self._trunk_names

    def _check(self, x: Tensor) -> None:
        if not torch.jit.is_scripting():
            check_input(x, self.in_chans, self.min_input_size, self.name)

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_features(x)
        return self.forward_head(x)

    def forward_features(self, x: Tensor) -> Tensor:
        """The trunk's children in order (unpooled features); Sequentials checkpointed when enabled."""
        self._check(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return self._forward_checkpointed(x)
        for name, module in self.named_children():
            if name in self._trunk_names:
                x = module(x)
        return x

    @torch.jit.unused
    def _forward_checkpointed(self, x: Tensor) -> Tensor:
        for name, module in self.named_children():
            if name in self._trunk_names:
                x = checkpoint_seq(module, x) if isinstance(module, nn.Sequential) else module(x)
        return x

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def trunk(self) -> list[tuple[str, nn.Module]]:
        """The (name, module) pairs that ``forward_features`` runs, in order, at the depth ``feature_info``
        names them (a child holding feature levels, like ``features``, is listed by its children)."""
        pairs: list[tuple[str, nn.Module]] = []
        for name, module in self.named_children():
            if name in self.head_names:
                continue
            if any(info["module"].startswith(f"{name}.") for info in self.feature_info):
                pairs += [(f"{name}.{child}", m) for child, m in module.named_children()]
            else:
                pairs.append((name, module))
        return pairs

    @torch.jit.ignore
    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """timm's ``forward_intermediates``: the ``feature_info`` feature maps (and the final features).

        ``indices``: an int ``n`` takes the last ``n`` levels, a list takes those levels.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW' for CNNs, got {output_fmt!r}")
        levels = len(self.feature_info)
        if indices is None:
            take = list(range(levels))
        elif isinstance(indices, int):
            take = list(range(levels - indices, levels))
        else:
            take = [i % levels for i in indices]
        if any(i < 0 or i >= levels for i in take):
            raise ValueError(f"indices {indices!r} out of range for {levels} feature levels")
        wanted = {self.feature_info[i]["module"]: i for i in take}
        last = max(take)
        self._check(x)
        found: dict[int, Tensor] = {}
        for name, module in self.trunk():
            x = module(x)
            if name in wanted:
                found[wanted[name]] = x
                if stop_early and wanted[name] == last:
                    break
        intermediates = [found[i] for i in sorted(found)]
        if intermediates_only:
            return intermediates
        return x, intermediates

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The final fc (at ``classifier_name``)."""
        return self.get_submodule(self.classifier_name)

    def _set_pool(self, global_pool: str) -> None:
        raise NotImplementedError  # the head mixins in zoo.models._head

    def _classifier_in_features(self) -> int:
        raise NotImplementedError

    def _add_classifier(self) -> None:
        """Heads whose fc the base creates (``PoolFcModel``) do it here; an MLP head is the family's."""

    def _set_classifier(self, num_classes: int) -> None:
        """Put a fresh fc (``Identity`` for 0 classes) at ``classifier_name``."""
        parent, _, leaf = self.classifier_name.rpartition(".")
        owner = self.get_submodule(parent) if parent else self
        setattr(owner, leaf, make_linear(self._classifier_in_features(), num_classes))

    @torch.jit.ignore
    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self._set_pool(global_pool)
        self._set_classifier(num_classes)
