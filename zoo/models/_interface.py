"""What every zoo model offers: the timm model interface on top of torchvision's key names."""

# No ``from __future__ import annotations`` here: fx copies the annotations of ``ZooModel.forward``
# into the code of a traced graph, and TorchScript cannot resolve them as strings ('_Tensor_').

import numbers
from typing import Any

import torch
import torch.fx
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from zoo.constants import IMAGENET_MEAN, IMAGENET_STD
from zoo.layers import BlurPool2d, check_filter_size, normalize_pad_mode

__all__ = ["ZooModel", "blur_or_identity", "check_input", "checkpoint_seq", "conv_out"]


def _shape_text(x: Tensor) -> str:
    return "(" + ", ".join([str(s) for s in x.shape]) + ")"


@torch.fx.wrap
def check_input(x: Tensor, in_chans: int, min_size: int, name: str) -> None:
    """Raise a clear ``ValueError`` for a wrong channel count or an image too small for the net.

    Scriptable: an fx graph of a zoo model keeps this call, and ``torch.jit.script`` compiles it.
    """
    if x.dim() != 4:
        raise ValueError(f"{name} expects a 4-D batch (N, C, H, W), got a tensor of shape {_shape_text(x)}")
    if x.shape[1] != in_chans:
        raise ValueError(
            f"{name} was built for {in_chans} input channels but got {x.shape[1]} "
            f"(input shape {_shape_text(x)}); build it with in_chans={x.shape[1]} or convert the input"
        )
    h, w = x.shape[-2], x.shape[-1]
    if h < min_size or w < min_size:
        raise ValueError(f"input of {h}x{w} pixels is too small for {name}: the minimum is {min_size}x{min_size}")


def _is_inplace(module: nn.Module) -> bool:
    first = module[0] if isinstance(module, nn.Sequential) and len(module) else module
    return bool(getattr(first, "inplace", False))


def _run_all(modules: list[nn.Module], x: Tensor) -> Tensor:
    for module in modules:
        x = module(x)
    return x


def checkpoint_seq(modules: nn.Sequential, x: Tensor) -> Tensor:
    """Run a Sequential with activation checkpointing (training memory saver).

    Children are checkpointed in segments; an in-place activation joins the segment of the
    layer before it, since it would overwrite that segment's output otherwise.
    """
    segments: list[list[nn.Module]] = []
    for module in modules:
        if segments and _is_inplace(module):
            segments[-1].append(module)
        else:
            segments.append([module])
    for segment in segments:
        x = checkpoint(_run_all, segment, x, use_reentrant=False)
    return x


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution or pooling along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def _is_probability(p: object) -> bool:
    """A real number in [0, 1) (NaN fails the comparison); bools are refused."""
    return isinstance(p, numbers.Real) and not isinstance(p, bool) and 0.0 <= float(p) < 1.0


def blur_or_identity(channels: int, filter_size: int | None, stride: int, pad_mode: str) -> nn.Module:
    """``BlurPool2d`` when anti-aliasing at a stride > 1, else ``nn.Identity``."""
    if filter_size is None or stride == 1:
        return nn.Identity()
    return BlurPool2d(channels, filter_size=filter_size, stride=stride, pad_mode=pad_mode)


class ZooModel(nn.Module):
    """Base class of the zoo's families (timm's interface).

    Subclasses set ``num_classes``, ``num_features``, ``head_hidden_size``, ``in_chans``,
    ``feature_info`` (list of ``dict(num_chs, reduction, module)``), implement
    ``forward_features``, ``forward_head``, ``get_classifier``, ``reset_classifier``,
    ``trunk`` (the modules ``forward_features`` runs in order) and ``_min_size``.

    ``filter_size=None`` builds the torchvision baseline twin; an int builds the anti-aliased model.
    """

    first_conv = ""  # state-dict prefix of the first conv (timm cfg ``first_conv``)
    classifier_name = ""  # state-dict prefix of the final fc (timm cfg ``classifier``)
    __jit_ignored_attributes__ = ["pretrained_cfg", "feature_info", "spec"]
    __jit_unused_properties__ = ["default_cfg", "antialiased", "cfg_pool_size"]

    def __init__(
        self,
        arch: str,
        num_classes: int,
        in_chans: int,
        drop_rate: float,
        filter_size: int | None,
        pad_mode: str,
        aa_stem: bool,
    ) -> None:
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
        self.arch = arch
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = float(drop_rate)
        self.filter_size = filter_size
        self.pad_mode = normalize_pad_mode(pad_mode)
        self.aa_stem = aa_stem
        self.grad_checkpointing = False
        self.pretrained_cfg = {}
        self.feature_info = []
        self.min_input_size = 1

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

    def _check(self, x: Tensor) -> None:
        if not torch.jit.is_scripting():
            check_input(x, self.in_chans, self.min_input_size, self.arch)

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_features(x)
        return self.forward_head(x)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def trunk(self) -> list[tuple[str, nn.Module]]:
        """The (name, module) pairs that ``forward_features`` runs, in order."""
        raise NotImplementedError

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
