"""BlurPool for 1-D signals (``N, C, L``) and 3-D volumes/videos (``N, C, D, H, W``).

Same method as :class:`zoo.layers.BlurPool2d`: blur with a separable binomial filter, then subsample.
Per axis: filter size ``k`` (an int for every axis, or one per axis; ``1`` = no blur on that axis),
stride ``s`` (anisotropic strides such as ``(2, 1, 1)`` are fine), the official padding
``(floor((k-1)/2), ceil((k-1)/2))`` and ``ceil(n / s)`` outputs. An axis too short for its padding
mode (reflect needs ``pad < n``, circular ``pad <= n``) is padded with ``replicate``; unlike the 2-D
layer this fallback is decided per axis.

Implementations (``impl``, as for the 2-D layers; ``None`` follows ``zoo.layers.get_blur_mode()``):

* ``"fast"``: on CPU float32/float64, one banded matrix product per blurred axis with the padding
  folded into the band (:func:`zoo.layers.kernels.band_matrix`), 3-9x faster than the convolution
  on typical maps (about 2-8x measured; see docs/layers_nd.md). A dense band grows as ``n^2 / s``: when one would exceed
  ``_BAND_MAX`` entries (long audio) the convolution runs instead, and so it does on other devices
  and dtypes. Inside ``torch.compile`` / ``torch.export`` (the dynamo ONNX exporter) a padded sum of
  strided slices runs: plain tensor ops, fusable, no graph break.
* ``"reference"``: pad, then a depthwise ``conv1d``/``conv3d`` with the full filter.
* ``"compiled"``: not separate for these layers; it runs ``"fast"``.
"""

from __future__ import annotations

import math
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.layers import kernels
from zoo.layers.blur import _layer_mode, check_blur_mode
from zoo.layers.kernels import check_filter_size, normalize_pad_mode

__all__ = ["BlurPool1d", "BlurPool3d", "MaxBlurPool1d", "MaxBlurPool3d"]

_BAND_MAX = 1 << 16  # largest band (n * n_out entries) the fast path builds for one axis

IntOrTuple = Union[int, tuple]


def _per_axis(value: IntOrTuple, dims: int, what: str, minimum: int = 1) -> list[int]:
    """``value`` as a list of ``dims`` ints ``>= minimum`` (an int applies to every axis)."""
    vals = [value] * dims if isinstance(value, int) and not isinstance(value, bool) else value
    ok = isinstance(vals, (tuple, list)) and len(vals) == dims
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in vals):
        raise ValueError(f"{what} must be an int >= {minimum} or a tuple of {dims} of them, got {value!r}")
    return [int(v) for v in vals]


def _binomial_taps(k: int) -> list[float]:
    total = 2 ** (k - 1)
    return [math.comb(k - 1, i) / total for i in range(k)]


def _axis_mode(pad_mode: str, lo: int, hi: int, n: int) -> str:
    """The padding actually applied on one axis (``replicate`` when the axis is too short)."""
    biggest = max(lo, hi)
    if (pad_mode == "reflect" and biggest >= n) or (pad_mode == "circular" and biggest > n):
        return "replicate"
    return pad_mode


def _pad_axis(x: Tensor, axis: int, lo: int, hi: int, mode: str) -> Tensor:
    """Pad spatial axis ``axis`` (0-based, after N and C) of ``x`` by ``(lo, hi)`` with a resolved mode."""
    dims = x.dim() - 2
    pads = [0] * (2 * dims)
    pads[2 * (dims - 1 - axis)] = lo
    pads[2 * (dims - 1 - axis) + 1] = hi
    if mode == "zero":
        return F.pad(x, pads, mode="constant", value=0.0)
    return F.pad(x, pads, mode=mode)


def _taps_tensor(taps: list[float]) -> Tensor:
    if not torch.jit.is_scripting():  # a constant of a traced graph, recorded without a warning
        with kernels.untraced():
            return torch.tensor(taps, dtype=torch.float64)
    return torch.tensor(taps, dtype=torch.float64)


def _band_axis(x: Tensor, axis: int, taps: list[float], stride: int, lo: int, hi: int, mode: str) -> Tensor:
    """Blur + subsample one spatial axis as a product with its banded matrix (``n x n_out``)."""
    dim = 2 + axis
    n = _size(x, dim)
    taps_t = _taps_tensor(taps)
    band = kernels.band_matrix(n, taps_t, stride, lo, hi, mode, x.dtype, x.device)
    if dim == x.dim() - 1:
        return torch.matmul(x, band)
    shape = [_size(x, i) for i in range(x.dim())]
    shape[0] = -1  # the batch stays free in a traced graph
    rest = 1
    for i in range(dim + 1, x.dim()):
        rest *= shape[i]
    y = torch.matmul(band.t(), x.reshape(-1, n, rest))
    shape[dim] = band.shape[1]
    return y.reshape(shape)


def _slice_axis(x: Tensor, axis: int, taps: list[float], stride: int, lo: int, hi: int, mode: str) -> Tensor:
    """Blur + subsample one spatial axis as a padded sum of strided slices (plain ops, any length)."""
    dim = 2 + axis
    x = _pad_axis(x, axis, lo, hi, mode).movedim(dim, -1)
    k = len(taps)
    n_out = (x.shape[-1] - k) // stride + 1
    span = (n_out - 1) * stride + 1
    out = x[..., 0:span:stride] * taps[0]
    for i in range(1, k):
        out = out + x[..., i : i + span : stride] * taps[i]
    return out.movedim(-1, dim)


def _size(x: Tensor, dim: int) -> int:
    """``x.shape[dim]`` as an int (while tracing: a constant; the traced graph is specialised to it)."""
    if not torch.jit.is_scripting():  # noqa: SIM102 (TorchScript skips only a bare is_scripting() branch)
        if torch.jit.is_tracing():
            return kernels.static_int(x.shape[dim])
    return x.shape[dim]


def _use_bands(x: Tensor) -> bool:
    """The banded products are the fast path on CPU float32/float64 (elsewhere: the convolution)."""
    return x.device.type == "cpu" and (x.dtype == torch.float32 or x.dtype == torch.float64)


class _BlurPoolNd(nn.Module):
    """Shared body of :class:`BlurPool1d` / :class:`BlurPool3d` (``dims`` spatial axes)."""

    _DIMS: int = 0
    _SHAPE: str = ""

    def __init__(
        self,
        channels: int | None = None,
        filter_size: IntOrTuple = 4,
        stride: IntOrTuple = 2,
        pad_mode: str = "reflect",
        impl: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(filter_size, int) and not isinstance(filter_size, bool):
            check_filter_size(filter_size)
        self.dims = self._DIMS
        self.shape_name = self._SHAPE
        self.channels = channels
        self.impl = None if impl is None else check_blur_mode(impl)
        self.filter_size = _per_axis(filter_size, self.dims, "filter_size")
        self.stride = _per_axis(stride, self.dims, "stride")
        self.pad_mode = normalize_pad_mode(pad_mode)
        self.band_max = _BAND_MAX
        self.taps = [_binomial_taps(k) for k in self.filter_size]
        self.lo = [(k - 1) // 2 for k in self.filter_size]
        self.hi = [k // 2 for k in self.filter_size]
        filt = torch.ones((), dtype=torch.float64)
        for taps in self.taps:  # the full (non-separable) filter, for the reference convolution
            filt = filt.unsqueeze(-1) * torch.tensor(taps, dtype=torch.float64)
        self.register_buffer("filt", filt.to(torch.float32)[None, None], persistent=False)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != self.dims + 2:
            raise ValueError(f"expected a {self.dims + 2}-D input {self.shape_name}, got a {x.dim()}-D one")

    def _reference(self, x: Tensor) -> Tensor:
        for axis in range(self.dims):
            mode = _axis_mode(self.pad_mode, self.lo[axis], self.hi[axis], _size(x, 2 + axis))
            x = _pad_axis(x, axis, self.lo[axis], self.hi[axis], mode)
        channels = _size(x, 1)
        shape = list(self.filt.shape)
        shape[0] = channels
        weight = self.filt.to(x.dtype).expand(shape)
        if self.dims == 1:
            return F.conv1d(x, weight, stride=self.stride, groups=channels)
        return F.conv3d(x, weight, stride=self.stride, groups=channels)

    def _route(self, x: Tensor) -> str:
        """``reference`` (convolution), ``slices`` (inside torch.compile/export) or ``bands`` (CPU fast path)."""
        if _layer_mode(self.impl) == "reference" or not _use_bands(x):
            return "reference"
        if not torch.jit.is_scripting():  # noqa: SIM102 (TorchScript skips only a bare is_scripting() branch)
            if torch.compiler.is_compiling():
                return "slices"
        for axis in range(self.dims):
            n = _size(x, 2 + axis)
            n_out = (n + self.lo[axis] + self.hi[axis] - self.filter_size[axis]) // self.stride[axis] + 1
            if n * n_out > self.band_max:  # a long axis: the convolution beats a huge dense band
                return "reference"
        return "bands"

    def _separable(self, x: Tensor, bands: bool) -> Tensor:
        for axis in range(self.dims):
            k, s, lo, hi = self.filter_size[axis], self.stride[axis], self.lo[axis], self.hi[axis]
            if k == 1 and s == 1:
                continue
            mode = _axis_mode(self.pad_mode, lo, hi, _size(x, 2 + axis))
            if bands and k > 1:
                x = _band_axis(x, axis, self.taps[axis], s, lo, hi, mode)
            else:
                x = _slice_axis(x, axis, self.taps[axis], s, lo, hi, mode)
        return x

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        route = self._route(x)
        if route == "reference":
            return self._reference(x)
        return self._separable(x, route == "bands")

    def extra_repr(self) -> str:
        chans = f"channels={self.channels}, " if self.channels is not None else ""
        impl = f", impl={self.impl!r}" if self.impl is not None else ""
        return f"{chans}filter_size={self.filter_size}, stride={self.stride}, pad_mode={self.pad_mode!r}{impl}"


class BlurPool1d(_BlurPoolNd):
    """Blur an ``(N, C, L)`` signal with a length-``k`` binomial filter, then subsample by ``stride``.

    Args: as :class:`zoo.layers.BlurPool2d` (``channels`` informational, ``filter_size`` and ``stride``
    ints, ``pad_mode`` one of ``reflect``/``replicate``/``zero``/``circular``, ``impl``).
    """

    _DIMS = 1
    _SHAPE = "(N, C, L)"


class BlurPool3d(_BlurPoolNd):
    """Blur an ``(N, C, D, H, W)`` volume with a separable binomial filter, then subsample.

    ``filter_size`` and ``stride`` are ints or ``(d, h, w)`` triples: ``stride=(2, 1, 1)`` halves the
    depth/time axis only; ``filter_size=(4, 1, 1)`` blurs that axis only.
    """

    _DIMS = 3
    _SHAPE = "(N, C, D, H, W)"


class _MaxBlurPoolNd(nn.Module):
    """Dense max-pool (stride 1) followed by the blurred subsampling ("MaxBlurPool").

    The max-pool pads with ``-inf`` by ``padding`` like ``nn.MaxPool``, except with ``pad_mode="circular"``:
    there it wraps around (``padding`` before, ``kernel_size - 1 - padding`` after, keeping the length), so
    the whole layer commutes with circular shifts by multiples of the stride.
    """

    _BLUR: type[_BlurPoolNd] = _BlurPoolNd

    def __init__(
        self,
        channels: int | None = None,
        kernel_size: IntOrTuple = 2,
        stride: IntOrTuple = 2,
        padding: IntOrTuple = 0,
        filter_size: IntOrTuple = 4,
        pad_mode: str = "reflect",
        impl: str | None = None,
    ) -> None:
        super().__init__()
        blur = self._BLUR(channels, filter_size, stride, pad_mode, impl)
        dims = blur.dims
        self.kernel_size = _per_axis(kernel_size, dims, "kernel_size")
        self.padding = _per_axis(padding, dims, "padding", minimum=0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"padding must be at most half of kernel_size, got {padding!r} for {kernel_size!r}")
        self.blur = blur

    def forward(self, x: Tensor) -> Tensor:
        self.blur._check_input(x)
        padding = self.padding
        if self.blur.pad_mode == "circular":  # wrap the max around too: exactly shift-equivariant
            for axis in range(self.blur.dims):
                lo, hi = self.padding[axis], self.kernel_size[axis] - 1 - self.padding[axis]
                x = _pad_axis(x, axis, lo, hi, _axis_mode("circular", lo, hi, _size(x, 2 + axis)))
            padding = [0] * self.blur.dims
        if self.blur.dims == 1:
            x = F.max_pool1d(x, self.kernel_size, stride=1, padding=padding)
        else:
            x = F.max_pool3d(x, self.kernel_size, stride=1, padding=padding)
        return self.blur(x)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, padding={self.padding}"


class MaxBlurPool1d(_MaxBlurPoolNd):
    """``MaxPool1d(kernel_size, stride=1, padding)`` then :class:`BlurPool1d`."""

    _BLUR = BlurPool1d


class MaxBlurPool3d(_MaxBlurPoolNd):
    """``MaxPool3d(kernel_size, stride=1, padding)`` then :class:`BlurPool3d` (per-axis tuples allowed)."""

    _BLUR = BlurPool3d
