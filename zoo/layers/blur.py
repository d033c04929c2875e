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
  (see :mod:`zoo.layers.blur_fast`; in training a custom autograd function whose backward is the
  transposed banded product) and a dense max from shifted slices (``max_pool2d`` when autograd
  records); other devices and dtypes use the reference ops (cuDNN's depthwise convolution is the
  fast GPU path).
* ``"reference"``: pad, depthwise ``conv2d``, ``max_pool2d``: the straightforward implementation.
* ``"compiled"``: the separable blur compiled by ``torch.compile`` into one fused loop (needs a
  C++ compiler on CPU; compiles once per input shape).

Select one globally with ``set_blur_mode("compiled")`` (or the ``ZOO_BLUR_MODE`` environment
variable, or the ``blur_mode(...)`` context manager), or per layer with ``impl=...``. Inside
``torch.compile(model)`` every blur layer traces the slice formulation, without graph breaks.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.layers import blur_fast

PAD_MODES: tuple[str, ...] = ("reflect", "replicate", "zero", "circular")
_PAD_ALIASES = {"refl": "reflect", "repl": "replicate", "zeros": "zero", "constant": "zero"}

__all__ = [
    "BLUR_MODES",
    "PAD_MODES",
    "BlurConv2d",
    "BlurPool2d",
    "MaxBlurPool2d",
    "binomial_filter",
    "blur_mode",
    "blur_padding",
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


def check_filter_size(filter_size: int) -> int:
    """Validate a blur filter size (any int >= 1) and return it."""
    if isinstance(filter_size, bool) or not isinstance(filter_size, int) or filter_size < 1:
        raise ValueError(
            f"filter_size must be an integer >= 1 (1 = plain subsampling, 2 = Rect-2, 3 = Tri-3, "
            f"4 = Tri-4, 5 = Bin-5, ...), got {filter_size!r}"
        )
    return filter_size


def normalize_pad_mode(pad_mode: str) -> str:
    """Return the canonical pad mode name, accepting the official aliases ('refl', 'repl')."""
    mode = _PAD_ALIASES.get(pad_mode, pad_mode)
    if mode not in PAD_MODES:
        raise ValueError(f"unknown pad_mode {pad_mode!r}; valid modes: {', '.join(PAD_MODES)}")
    return mode


def binomial_filter(filter_size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Normalised 2-D binomial filter of shape ``(k, k)``: ``outer(a, a)`` with ``a_i = C(k-1, i) / 2^(k-1)``.

    Each 1-D tap is one correctly rounded division of exact integers, so the filter stays finite for
    any ``k`` (the tails of very large filters underflow to 0); for small ``k`` the taps are dyadic
    and the filter is exact.
    """
    k = check_filter_size(filter_size)
    total = 2 ** (k - 1)
    row = torch.tensor([math.comb(k - 1, i) / total for i in range(k)], dtype=torch.float64)
    return torch.outer(row, row).to(dtype)


def blur_padding(filter_size: int) -> tuple[int, int, int, int]:
    """Official padding ``(left, right, top, bottom)`` for a filter of size ``k``."""
    k = check_filter_size(filter_size)
    lo, hi = (k - 1) // 2, k // 2  # floor((k-1)/2), ceil((k-1)/2)
    return lo, hi, lo, hi


def _use_fast_kernels(x: Tensor) -> bool:
    return x.device.type == "cpu" and (x.dtype == torch.float32 or x.dtype == torch.float64) and x.dim() == 4


def _static_chw(x: Tensor) -> tuple[int, int, int]:
    """``(C, H, W)`` of ``x`` as ints, also under ``torch.jit.trace`` and the legacy ONNX exporter.

    There sizes can be traced 0-dim tensors; the blur depends on them (bands, padding fallback,
    group count), so the traced graph is specialised to the traced C, H, W (the batch stays free).
    """
    c, h, w = x.shape[-3], x.shape[-2], x.shape[-1]
    if not torch.jit.is_scripting():  # noqa: SIM102 (TorchScript skips only a bare is_scripting() branch)
        if torch.jit.is_tracing():
            c, h, w = blur_fast.static_int(c), blur_fast.static_int(h), blur_fast.static_int(w)
    return c, h, w


def blur_reference(
    x: Tensor, filt: Tensor, stride: tuple[int, int], pads: tuple[int, int, int, int], pad_mode: str
) -> Tensor:
    """The straightforward implementation: pad, then depthwise ``conv2d`` with ``filt`` at ``stride``."""
    sh, sw = stride
    if pads == (0, 0, 0, 0):  # filter size 1 (the pads, static ints, encode k: lo + hi = k - 1)
        return x[:, :, ::sh, ::sw]
    channels, h, w = _static_chw(x)
    mode = blur_fast.resolve_pad_mode(pad_mode, pads, h, w)
    weight = filt.to(dtype=x.dtype).expand(channels, 1, pads[2] + pads[3] + 1, pads[0] + pads[1] + 1)
    tracing = False
    if not torch.jit.is_scripting():  # noqa: SIM102 (TorchScript skips only a bare is_scripting() branch)
        if torch.jit.is_tracing():  # a constant weight: the legacy ONNX exporter then knows the conv's shape
            weight = blur_fast.traced_constant(weight)
            tracing = True
    if tracing:
        x = blur_fast.traced_pad(x, pads, mode, h, w)
    elif mode == "zero":
        x = F.pad(x, pads, mode="constant", value=0.0)
    else:
        x = F.pad(x, pads, mode=mode)
    return F.conv2d(x, weight, stride=stride, groups=channels)


_COMPILED: dict = {}


def _run_compiled(name: str, *args):  # type: ignore[no-untyped-def]
    """Run ``blur_fast.<name>`` through ``torch.compile`` (compiled once, specialised per shape)."""
    fn = _COMPILED.get(name)
    if fn is None:
        fn = _COMPILED[name] = torch.compile(getattr(blur_fast, name), dynamic=False)
    with blur_fast.recompile_limit(64):
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
    if impl == "reference" or pads == (0, 0, 0, 0):
        return blur_reference(x, filt, stride, pads, pad_mode)
    _, h, w = _static_chw(x)
    mode = blur_fast.resolve_pad_mode(pad_mode, pads, h, w)
    if not torch.jit.is_scripting():
        if torch.compiler.is_compiling():  # inside torch.compile(model): trace the fusable form
            return blur_fast.blur_slices(x, filt, stride, pads, mode)
        if impl == "compiled":
            return _run_compiled("blur_slices", x, filt, stride, pads, mode)
    if _use_fast_kernels(x):
        return blur_fast.blur_matmul(x, filt, stride, pads, mode)
    return blur_reference(x, filt, stride, pads, pad_mode)


@torch.fx.wrap
def dense_max_pool(x: Tensor, kernel_size: int, padding: int, impl: str = "fast") -> Tensor:
    """``max_pool2d(x, kernel_size, stride=1, padding)``.

    Shifted-slice maxima (5-10x faster) when no gradient is recorded; ``F.max_pool2d`` itself when
    eager autograd records (its backward is one scatter from the saved argmax indices, where the
    backward of chained ``torch.maximum`` replays one saved mask per tap) or ``impl="reference"``.
    Traced graphs always take the slices.
    """
    if impl == "reference" or not _use_fast_kernels(x) or blur_fast.records_autograd(x):
        return F.max_pool2d(x, kernel_size, stride=1, padding=padding)
    return blur_fast.dense_max(x, kernel_size, padding)


def _compiled_max_blur(x: Tensor, kernel_size: int, padding: int, blur: BlurPool2d) -> Tensor:
    if torch.compiler.is_compiling():
        args = (x, kernel_size, padding, blur.filt, blur.stride, blur.pads, blur.pad_mode)
        return blur_fast.max_blur_slices(*args)
    return _run_compiled("max_blur_slices", x, kernel_size, padding, blur.filt, blur.stride, blur.pads, blur.pad_mode)


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
            if (impl == "compiled" or torch.compiler.is_compiling()) and self.blur.filter_size > 1:
                return _compiled_max_blur(x, self.kernel_size, self.padding, self.blur)
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
