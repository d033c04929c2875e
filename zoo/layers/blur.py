"""Binomial low-pass filters and the BlurPool family (Zhang, ICML 2019).

Every strided operation is split into a dense operation followed by a blurred subsampling.
``BlurPool2d`` is that blurred subsampling; ``MaxBlurPool2d`` replaces a strided max-pool and
``BlurConv2d`` a strided 1x1 projection (blur and a 1x1 conv commute, so blurring first is cheaper).

Padding follows the official release: ``(floor((k-1)/2), ceil((k-1)/2))`` on each axis, so the
output is ``ceil(H / stride)`` for every filter size. A map too small for the chosen padding
mode (reflect needs ``pad < size``, circular ``pad <= size``) is padded with ``replicate``
instead, which is what reflection degenerates to on a 1-pixel map; this keeps tiny feature
maps (e.g. 2x2 or 1x1 at the end of a network on a 32 px input) from crashing.

Implementations (``BLUR_MODES``), all with the reference outputs up to float rounding (<= 1e-6):

* ``"fast"`` (default): CPU float32/float64 use two banded GEMMs with the padding folded in
  (see :mod:`zoo.layers.kernels`; in training a custom autograd function whose backward is the
  transposed banded product) and a dense max from shifted slices (``max_pool2d`` when autograd
  records); other devices and dtypes use the reference ops (cuDNN's depthwise convolution is the
  fast GPU path).
* ``"reference"``: pad, depthwise ``conv2d``, ``max_pool2d``: the straightforward implementation.
* ``"compiled"``: the separable blur compiled by ``torch.compile`` into one fused loop (needs a
  C++ compiler on CPU; compiles once per input shape).

The kernels live in :mod:`zoo.layers.kernels`; this module holds the modules and the one dispatch
(``_route``) that picks a kernel per call from the mode, the device/dtype, tracing and ``torch.compile``.

Select one globally with ``set_blur_mode("compiled")`` (or the ``ZOO_BLUR_MODE`` environment
variable, or the ``blur_mode(...)`` context manager), or per layer with ``impl=...``. Inside
``torch.compile(model)`` every blur layer traces the slice formulation, without graph breaks.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Optional

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.layers import kernels
from zoo.layers.kernels import (
    PAD_MODES,
    binomial_filter,
    blur_padding,
    check_filter_size,
    normalize_pad_mode,
)

__all__ = [
    "BLUR_MODES",
    "PAD_MODES",
    "BlurConv2d",
    "BlurPool2d",
    "MaxBlurPool2d",
    "binomial_filter",
    "blur_mode",
    "blur_padding",
    "check_filter_size",
    "get_blur_mode",
    "normalize_pad_mode",
    "set_blur_mode",
]

BLUR_MODES: tuple[str, ...] = ("fast", "reference", "compiled")


def check_blur_mode(mode: str) -> str:
    """Validate a blur implementation name and return it."""
    if mode not in BLUR_MODES:
        raise ValueError(f"unknown blur mode {mode!r}; valid modes: {', '.join(BLUR_MODES)}")
    return mode


_MODE = [check_blur_mode(os.environ.get("ZOO_BLUR_MODE", "fast") or "fast")]


def get_blur_mode() -> str:
    """The global blur implementation used by layers built with ``impl=None``."""
    return _MODE[0]


def set_blur_mode(mode: str) -> str:
    """Set the global blur implementation (``fast``, ``reference`` or ``compiled``); returns the old one."""
    old, _MODE[0] = _MODE[0], check_blur_mode(mode)
    return old


@contextlib.contextmanager
def blur_mode(mode: str) -> Iterator[None]:
    """Context manager: run the enclosed code with the given global blur implementation."""
    old = set_blur_mode(mode)
    try:
        yield
    finally:
        set_blur_mode(old)


def _layer_mode(impl: str | None) -> str:
    if torch.jit.is_scripting():  # no global state or torch.compile in TorchScript
        mode = "fast" if impl is None or impl == "compiled" else impl
    else:
        mode = _MODE[0] if impl is None else impl
    return mode


def _pair(value: int | tuple[int, int], what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"{what} must be an int >= 1 or a pair of them, got {value!r}")
    return pair  # type: ignore[return-value]


def _route(impl: str, x: Optional[Tensor] = None) -> str:
    """The one dispatch: which kernel family runs this call.

    ``"reference"`` (pad + depthwise conv, ``max_pool2d``), ``"inline"`` (inside ``torch.compile(model)``:
    trace the fusable slice form, no graph break), ``"compiled"`` (the slice form through our own
    ``torch.compile``) or ``"fast"`` (banded GEMMs, dense max; CPU float32/float64 only, else reference).
    TorchScript has no ``torch.compile``: there ``compiled`` already became ``fast`` (``_layer_mode``).
    Without ``x`` (``torch.fx`` proxies cannot be inspected) the device/dtype fallback is left to the kernel call.
    """
    if impl == "reference":
        return "reference"
    if not torch.jit.is_scripting():
        if torch.compiler.is_compiling():
            return "inline"
        if impl == "compiled":
            return "compiled"
    if x is not None and not kernels.use_fast_kernels(x):
        return "reference"
    return "fast"


_COMPILED: dict = {}


@contextlib.contextmanager
def recompile_limit(limit: int) -> Iterator[None]:
    """Let ``torch.compile`` keep up to ``limit`` shape specialisations of the blur kernels.

    Each blur layer of a network sees another shape; the default limit (8) is below the count of a
    ResNet at two batch sizes and two memory formats.
    """
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    if getattr(config, name, limit) >= limit:
        yield
        return
    with config.patch({name: limit}):
        yield


def _run_compiled(name: str, *args):  # type: ignore[no-untyped-def]
    """Run ``kernels.<name>`` through ``torch.compile`` (compiled once, specialised per shape)."""
    fn = _COMPILED.get(name)
    if fn is None:
        fn = _COMPILED[name] = torch.compile(getattr(kernels, name), dynamic=False)
    with recompile_limit(64):
        return fn(*args)


@torch.fx.wrap
def blur_downsample(
    x: Tensor,
    filt: Tensor,
    stride: tuple[int, int],
    pads: tuple[int, int, int, int],
    pad_mode: str,
    impl: str = "fast",
) -> Tensor:
    """Blur with ``filt`` (``1x1xkxk``, separable and normalised) then subsample by ``stride``.

    ``impl`` is one of ``BLUR_MODES``; every implementation gives the reference outputs. A leaf for
    ``torch.fx`` tracing: the small-map fallback below branches on the input shape.
    """
    route = _route(impl, x)
    if route == "reference" or pads == (0, 0, 0, 0):
        return kernels.blur_reference(x, filt, stride, pads, pad_mode)
    _, h, w = kernels.static_chw(x)
    mode = kernels.resolve_pad_mode(pad_mode, pads, h, w)
    if not torch.jit.is_scripting():  # TorchScript routes only to fast/reference
        if route == "inline":
            return kernels.blur_slices(x, filt, stride, pads, mode)
        if route == "compiled":
            return _run_compiled("blur_slices", x, filt, stride, pads, mode)
    return kernels.blur_matmul(x, filt, stride, pads, mode)


@torch.fx.wrap
def dense_max_pool(x: Tensor, kernel_size: int, padding: int, impl: str = "fast") -> Tensor:
    """``max_pool2d(x, kernel_size, stride=1, padding)``.

    Shifted-slice maxima (5-10x faster than ``max_pool2d`` with stride 1 on CPU). In eager training,
    NCHW inputs take a custom backward that recomputes each window's first maximum from the saved
    input (same gradients as ``max_pool2d``, ties included; about 2x faster for the ResNet stem and no
    int64 argmax indices kept); channels-last inputs take ``F.max_pool2d``, whose native
    channels-last kernels are faster there. ``impl="reference"`` and other devices/dtypes use
    ``F.max_pool2d``. Traced graphs always take the slices.
    """
    if _route(impl, x) == "reference" or not kernels.use_fast_kernels(x):
        return F.max_pool2d(x, kernel_size, stride=1, padding=padding)
    if kernels.records_autograd(x):
        if not torch.jit.is_scripting():  # noqa: SIM102 (TorchScript skips only a bare is_scripting() branch)
            if x.is_contiguous():
                return kernels.dense_max_recomputing(x, kernel_size, padding)
        return F.max_pool2d(x, kernel_size, stride=1, padding=padding)
    return kernels.dense_max(x, kernel_size, padding)


class BlurPool2d(nn.Module):
    """Blur with a ``k x k`` binomial filter, then subsample by ``stride``.

    Args:
        channels: informational only; the layer works with any channel count at run time.
        filter_size: binomial filter size ``k >= 1`` (1 = plain subsampling).
        stride: int or ``(sh, sw)``.
        pad_mode: ``reflect`` (official default), ``replicate``, ``zero`` or ``circular``.
        impl: ``fast``, ``reference`` or ``compiled``; ``None`` follows ``get_blur_mode()``.

    The filter is a non-persistent buffer: nothing is added to the state dict.
    """

    def __init__(
        self,
        channels: int | None = None,
        filter_size: int = 4,
        stride: int | tuple[int, int] = 2,
        pad_mode: str = "reflect",
        impl: str | None = None,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.impl = None if impl is None else check_blur_mode(impl)
        self.filter_size = check_filter_size(filter_size)
        self.stride = _pair(stride, "stride")
        self.pad_mode = normalize_pad_mode(pad_mode)
        self.pads = blur_padding(self.filter_size)
        self.register_buffer("filt", binomial_filter(self.filter_size)[None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return blur_downsample(x, self.filt, self.stride, self.pads, self.pad_mode, _layer_mode(self.impl))

    def extra_repr(self) -> str:
        chans = f"channels={self.channels}, " if self.channels is not None else ""
        impl = f", impl={self.impl!r}" if self.impl is not None else ""
        return f"{chans}filter_size={self.filter_size}, stride={self.stride}, pad_mode={self.pad_mode!r}{impl}"


class MaxBlurPool2d(nn.Module):
    """Dense max-pool (stride 1) followed by ``BlurPool2d`` ("MaxBlurPool").

    ``kernel_size``/``padding`` are those of the dense max-pool: the official ResNet stem uses
    ``kernel_size=2, padding=0``, VGG ``2, 0``, DenseNet ``3, 1``, AlexNet ``3, 0``.
    """

    def __init__(
        self,
        channels: int | None = None,
        kernel_size: int = 2,
        stride: int | tuple[int, int] = 2,
        padding: int = 0,
        filter_size: int = 4,
        pad_mode: str = "reflect",
        impl: str | None = None,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.padding = padding
        self.blur = BlurPool2d(channels, filter_size=filter_size, stride=stride, pad_mode=pad_mode, impl=impl)

    def forward(self, x: Tensor) -> Tensor:
        impl = _layer_mode(self.blur.impl)
        if not torch.jit.is_scripting():  # noqa: SIM102 (TorchScript skips only a bare is_scripting() branch)
            if self.blur.filter_size > 1:
                route = _route(impl)
                b = self.blur
                if route == "inline":  # one fusable function for the caller's torch.compile
                    return kernels.max_blur_slices(x, self.kernel_size, self.padding, b.filt, b.stride, b.pads,
                                                   b.pad_mode)  # fmt: skip
                if route == "compiled":
                    return _run_compiled("max_blur_slices", x, self.kernel_size, self.padding, b.filt, b.stride,
                                         b.pads, b.pad_mode)  # fmt: skip
        x = dense_max_pool(x, self.kernel_size, self.padding, impl)
        return self.blur(x)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, padding={self.padding}"


class BlurConv2d(nn.Conv2d):
    """A stride-1 convolution applied after a ``BlurPool2d``: the anti-aliased strided projection.

    It *is* an ``nn.Conv2d`` (same ``weight``/``bias`` parameters), so it takes the place of a
    torchvision ``conv1x1(stride=2)`` without changing state-dict keys.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int | tuple[int, int] = 2,
        bias: bool = False,
        filter_size: int = 4,
        pad_mode: str = "reflect",
        impl: str | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=1, padding=kernel_size // 2, bias=bias)
        self.blur = BlurPool2d(in_channels, filter_size=filter_size, stride=stride, pad_mode=pad_mode, impl=impl)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.blur(x), self.weight, self.bias)
