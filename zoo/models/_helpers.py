"""Layer helpers the families share: the input check, activation checkpointing, conv arithmetic, blur-or-identity."""

# No ``from __future__ import annotations``: ``check_input`` is fx-wrapped and compiled by TorchScript,
# which cannot resolve string annotations.

import torch
import torch.fx
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from zoo.layers import BlurPool2d

__all__ = ["blur_or_identity", "check_input", "checkpoint_seq", "conv_out", "forget_stale_builtins", "make_linear"]


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


def blur_or_identity(channels: int, filter_size: int | None, stride: int, pad_mode: str) -> nn.Module:
    """``BlurPool2d`` when anti-aliasing at a stride > 1, else ``nn.Identity``."""
    if filter_size is None or stride == 1:
        return nn.Identity()
    return BlurPool2d(channels, filter_size=filter_size, stride=stride, pad_mode=pad_mode)


def make_linear(in_features: int, num_classes: int) -> nn.Module:
    """``nn.Linear`` or, for ``num_classes == 0``, ``nn.Identity``."""
    return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()


def forget_stale_builtins(model: nn.Module) -> nn.Module:
    """Drop TorchScript builtin-table entries that a live attribute of ``model`` now occupies; returns ``model``.

    TorchScript maps builtin ops by ``id()`` (``torch.jit._builtins._builtin_table``) and torch registers ids of
    op objects that may later be freed (``torch.ops`` packets refreshed or deleted). A module attribute allocated
    at such a freed address, e.g. ``Conv2d._reversed_padding_repeated_twice`` (a list), is then taken for a
    builtin op and ``torch.jit.script`` fails with "builtin cannot be used as a value", depending on memory
    layout. A non-callable object can never be a registered op, so its entry is stale and is removed.
    """
    from torch.jit._builtins import _get_builtin_table

    table = _get_builtin_table()
    for module in model.modules():
        for value in vars(module).values():
            if id(value) in table and not callable(value):
                del table[id(value)]
    return model
