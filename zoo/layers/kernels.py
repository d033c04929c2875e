"""Blur kernels behind ``BlurPool2d`` / ``MaxBlurPool2d`` / ``BlurConv2d``: every implementation, one module.

* Filters and the padding rule: ``binomial_filter`` (finite for any ``k``), ``blur_padding`` (the official
  ``(floor((k-1)/2), ceil((k-1)/2))``), ``resolve_pad_mode`` (``replicate`` when a map is too small for
  reflect/circular), ``source_index`` (the padding as an index map) and ``pad`` (``F.pad`` with it).
* ``blur_reference``: pad, depthwise ``conv2d``; the straightforward implementation.
* ``blur_matmul``: the binomial filter is separable and its padding is a fixed index map, so each
  axis of "pad, blur, subsample" is one small banded matrix ``B`` (``n x n_out``) with the padding
  folded in (reflected/replicated/wrapped taps are summed into the right rows, zero-padded taps
  dropped). The 2-D layer is two GEMMs, ``B_h^T @ x @ B_w``: no padded copy, only the needed output
  rows and columns, and BLAS-speed on CPU. Channels-last inputs use the NHWC view directly (still
  two GEMMs, output stays channels-last). The blur is linear, so in training a custom autograd
  function runs the transposed product ``B_h @ dy @ B_w^T`` as its backward (same layout rules) and
  saves only the two cached bands, no activation. Traced graphs (``torch.jit.trace``, the legacy
  ONNX exporter) take the bands as constants and use plain ops. One caveat of the dense band: an ``inf``/``nan`` input
  spreads along its whole row/column (``0 * inf``); finite inputs are exact up to rounding.
* ``blur_slices``: pad + separable sum of strided slices; what ``torch.compile`` fuses into a loop.
* ``dense_max``: stride-1 max-pool as separable ``torch.maximum`` of shifted slices, 5-10x faster
  than ``max_pool2d(k, stride=1)`` on CPU. In eager NCHW training ``dense_max_recomputing`` adds a
  backward that saves only the input and recomputes each window's first maximum (``max_pool2d``'s
  gradients, ties included). Same values; differentiated through ``torch.compile``, exact ties
  share the gradient instead of giving it to one input (both are valid subgradients).

Which kernel runs is decided in one place, :func:`zoo.layers.blur.blur_downsample`'s dispatch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "PAD_MODES",
    "band_matrix",
    "banded_product",
    "binomial_filter",
    "blur_matmul",
    "blur_padding",
    "blur_reference",
    "blur_slices",
    "check_filter_size",
    "dense_max",
    "dense_max_recomputing",
    "max_blur_slices",
    "normalize_pad_mode",
    "pad",
    "records_autograd",
    "resolve_pad_mode",
    "source_index",
    "static_chw",
    "static_int",
    "traced_constant",
    "traced_pad",
    "untraced",
    "use_fast_kernels",
]

PAD_MODES: tuple[str, ...] = ("reflect", "replicate", "zero", "circular")
_PAD_ALIASES = {"refl": "reflect", "repl": "replicate", "zeros": "zero", "constant": "zero"}


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


def resolve_pad_mode(pad_mode: str, pads: tuple[int, int, int, int], h: int, w: int) -> str:
    """The padding actually applied: ``replicate`` when the map is too small for reflect/circular."""
    biggest = max(pads)
    if pad_mode == "reflect" and (biggest >= h or biggest >= w):
        return "replicate"
    if pad_mode == "circular" and (biggest > h or biggest > w):
        return "replicate"
    return pad_mode


def pad(x: Tensor, pads: tuple[int, int, int, int], mode: str) -> Tensor:
    """``F.pad`` with a resolved blur pad mode (``zero`` is constant 0)."""
    if mode == "zero":
        return F.pad(x, pads, mode="constant", value=0.0)
    return F.pad(x, pads, mode=mode)


def source_index(pos: Tensor, n: int, mode: str) -> tuple[Tensor, Tensor]:
    """The padding rule as an index map: positions ``pos`` of the padded axis (``0..n-1`` inside) -> source
    positions in ``0..n-1``, and whether each one is inside the map (``False`` only for zero-padded taps)."""
    inside = (pos >= 0) & (pos < n)
    if mode == "reflect":
        pos = pos.abs()
        pos = torch.where(pos >= n, 2 * (n - 1) - pos, pos)
    elif mode == "circular":
        pos = torch.remainder(pos, n)
    else:  # replicate, and zero (whose outside taps are masked by the caller)
        pos = pos.clamp(0, n - 1)
    return pos, inside if mode == "zero" else torch.ones_like(inside)


def _build_band(n: int, taps: Tensor, stride: int, lo: int, hi: int, mode: str) -> Tensor:
    """``(n, n_out)`` matrix of "pad (lo, hi) with ``mode``, correlate with ``taps``, subsample"."""
    k = taps.shape[0]
    n_out = (n + lo + hi - k) // stride + 1
    cols = torch.arange(n_out, device=taps.device).unsqueeze(1).expand(n_out, k)
    pos = cols * stride - lo + torch.arange(k, device=taps.device).unsqueeze(0)
    weight = taps.unsqueeze(0).expand(n_out, k)
    pos, inside = source_index(pos, n, mode)
    weight = torch.where(inside, weight, torch.zeros_like(weight))
    band = torch.zeros(n, n_out, dtype=taps.dtype, device=taps.device)
    return band.index_put_((pos.reshape(-1), cols.reshape(-1)), weight.reshape(-1), accumulate=True)


@lru_cache(maxsize=512)
def _cached_band(
    n: int, taps: tuple[float, ...], stride: int, lo: int, hi: int, mode: str, dtype: torch.dtype, device: str
) -> Tensor:
    # a normal tensor even when first built under inference_mode, so autograd can use it later
    with torch.inference_mode(False), torch.no_grad():
        taps_t = torch.tensor(taps, dtype=torch.float64)
        return _build_band(n, taps_t, stride, lo, hi, mode).to(dtype=dtype, device=device)


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """Suspend ``torch.jit.trace`` recording (also the legacy ONNX exporter's tracer) in this block.

    What is computed inside becomes a constant of the traced graph instead of a chain of ops.
    """
    state = torch._C._get_tracing_state()
    if state is None:
        yield
        return
    torch._C._set_tracing_state(None)
    try:
        yield
    finally:
        torch._C._set_tracing_state(state)


def traced_constant(t: Tensor) -> Tensor:
    """A copy of ``t`` that a trace records as a constant (not as the ops that computed it)."""
    with untraced():
        return t.detach().clone()


def static_int(size: int | Tensor) -> int:
    """A size as a Python int; while tracing, sizes can be traced 0-dim tensors and the graph is specialised."""
    if isinstance(size, int):
        return size
    with untraced():
        return int(size)


def traced_pad(x: Tensor, pads: tuple[int, int, int, int], mode: str, h: int, w: int) -> Tensor:
    """``F.pad`` as constant-index gathers (zero padding: plus a constant mask), for traced graphs.

    The legacy ONNX exporter loses the padded map's size through its ``Pad`` op (a later
    ``adaptive_avg_pool2d`` then cannot be exported); ``Gather`` with constant indices keeps every
    shape static. Same values as ``F.pad`` (``mode`` is resolved).
    """
    with untraced():  # constants of the traced graph
        idx_h, in_h = source_index(torch.arange(-pads[2], h + pads[3]), h, mode)
        idx_w, in_w = source_index(torch.arange(-pads[0], w + pads[1]), w, mode)
        outside = ~(in_h[:, None] & in_w[None, :])
        idx_h, idx_w, outside = idx_h.to(x.device), idx_w.to(x.device), outside.to(x.device)
    x = x.index_select(2, idx_h).index_select(3, idx_w)
    return x.masked_fill(outside, 0.0) if mode == "zero" else x


def _eager_band(
    n: int | Tensor, taps: Tensor, stride: int, lo: int, hi: int, mode: str, dtype: torch.dtype, device: torch.device
) -> Tensor:
    with untraced():  # a constant of a traced graph (never rebuilt in-graph by index_put_)
        return _cached_band(static_int(n), tuple(taps.tolist()), stride, lo, hi, mode, dtype, str(device))


def band_matrix(
    n: int, taps: Tensor, stride: int, lo: int, hi: int, mode: str, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Banded matrix of one blur axis (cached in eager mode and while tracing, built on the fly in TorchScript)."""
    if torch.jit.is_scripting():
        return _build_band(n, taps.to(torch.float64), stride, lo, hi, mode).to(dtype=dtype, device=device)
    return _eager_band(n, taps, stride, lo, hi, mode, dtype, device)


def _taps(filt: Tensor) -> tuple[Tensor, Tensor]:
    """1-D taps of a separable, normalised ``1x1xkxk`` filter (exact for binomial filters)."""
    f2 = filt[0, 0].to(torch.float64)
    return f2.sum(1), f2.sum(0)


def banded_product(x: Tensor, band_h: Tensor, band_w: Tensor) -> Tensor:
    """``band_h^T @ x @ band_w`` over the last two axes of an NCHW tensor, in its own memory layout.

    Channels-last inputs use the NHWC view (two GEMMs, output stays channels-last); anything else
    the NCHW form. With ``band_h.t(), band_w.t()`` this is the transposed product (the backward).
    """
    n, c, h, w = x.shape
    ho, wo = band_h.shape[1], band_w.shape[1]
    if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return torch.matmul(band_h.t(), x) @ band_w
    nhwc = x.permute(0, 2, 3, 1)  # contiguous view
    y = torch.matmul(band_w.t(), nhwc.reshape(n * h, w, c))  # (N*H, Wo, C)
    y = torch.matmul(band_h.t(), y.reshape(n, h, wo * c))  # (N, Ho, Wo*C)
    return y.reshape(n, ho, wo, c).permute(0, 3, 1, 2)


class _BandedBlur(torch.autograd.Function):
    """The blur is linear: its backward is the transposed banded product and saves no activation."""

    @staticmethod
    def forward(x: Tensor, band_h: Tensor, band_w: Tensor) -> Tensor:
        return banded_product(x, band_h, band_w)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
        ctx.save_for_backward(inputs[1], inputs[2])  # the cached constant bands, not the input

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[no-untyped-def]
        band_h, band_w = ctx.saved_tensors
        return banded_product(grad, band_h.t(), band_w.t()), None, None


def records_autograd(x: Tensor) -> bool:
    """Whether eager autograd records an op on ``x`` (never while tracing: traced graphs take one fixed path)."""
    if torch.jit.is_scripting():
        return x.requires_grad and torch.is_grad_enabled()
    return x.requires_grad and torch.is_grad_enabled() and not torch.jit.is_tracing()


def blur_matmul(x: Tensor, filt: Tensor, stride: tuple[int, int], pads: tuple[int, int, int, int], mode: str) -> Tensor:
    """Blur + subsample as ``B_h^T @ x @ B_w`` (padding folded into the bands); ``mode`` is resolved."""
    taps_h, taps_w = _taps(filt)
    h, w = x.shape[-2], x.shape[-1]
    band_h = band_matrix(h, taps_h, stride[0], pads[2], pads[3], mode, x.dtype, x.device)
    band_w = band_matrix(w, taps_w, stride[1], pads[0], pads[1], mode, x.dtype, x.device)
    if not torch.jit.is_scripting():  # noqa: SIM102 (TorchScript skips only a bare is_scripting() branch)
        if records_autograd(x):
            return _BandedBlur.apply(x, band_h, band_w)
    return banded_product(x, band_h, band_w)


def blur_slices(x: Tensor, filt: Tensor, stride: tuple[int, int], pads: tuple[int, int, int, int], mode: str) -> Tensor:
    """Pad, then separable sum of strided slices (vertical pass first); ``mode`` is resolved."""
    x = pad(x, pads, mode)
    taps_h, taps_w = _taps(filt)
    taps_h, taps_w = taps_h.to(x.dtype), taps_w.to(x.dtype)
    kh, kw = filt.shape[-2], filt.shape[-1]
    sh, sw = stride
    ho = (x.shape[-2] - kh) // sh + 1
    wo = (x.shape[-1] - kw) // sw + 1
    y = x[:, :, 0 : (ho - 1) * sh + 1 : sh, :] * taps_h[0]
    for i in range(1, kh):
        y = y + x[:, :, i : i + (ho - 1) * sh + 1 : sh, :] * taps_h[i]
    out = y[:, :, :, 0 : (wo - 1) * sw + 1 : sw] * taps_w[0]
    for j in range(1, kw):
        out = out + y[:, :, :, j : j + (wo - 1) * sw + 1 : sw] * taps_w[j]
    return out


def _pad_axis(x: Tensor, dim: int, before: int, after: int | None = None, value: float = float("-inf")) -> Tensor:
    """``x`` padded on axis ``dim`` (2 or 3) by ``before``/``after`` (default: the same) with ``value``;
    ``-inf`` is how ``max_pool2d`` pads."""
    after = before if after is None else after
    if not before and not after:
        return x
    pads = [0, 0, 0, 0]
    pads[2 * (3 - dim)] = before
    pads[2 * (3 - dim) + 1] = after
    return F.pad(x, pads, mode="constant", value=value)


def _max_along(x: Tensor, dim: int, kernel: int, padding: int) -> Tensor:
    if kernel == 1 and padding == 0:
        return x
    x = _pad_axis(x, dim, padding)
    n_out = x.shape[dim] - kernel + 1
    out = torch.maximum(x.narrow(dim, 0, n_out), x.narrow(dim, 1, n_out))
    for i in range(2, kernel):
        out = torch.maximum(out, x.narrow(dim, i, n_out))
    return out


def dense_max(x: Tensor, kernel: int, padding: int) -> Tensor:
    """``max_pool2d(x, kernel, stride=1, padding)`` as separable maxima of shifted slices."""
    return _max_along(_max_along(x, 3, kernel, padding), 2, kernel, padding)


def _wins_along(x: Tensor, dim: int, kernel: int) -> list[Tensor]:
    """Along ``dim`` of a padded ``x``, for taps ``1..k-1``: 1.0 where the tap beats every earlier tap of its
    window (strictly). A window's first maximum is its last such tap, or tap 0."""
    n_out = x.shape[dim] - kernel + 1
    best = x.narrow(dim, 0, n_out)
    wins = []
    for t in range(1, kernel):
        tap = x.narrow(dim, t, n_out)
        wins.append(torch.gt(tap, best, out=tap.new_empty(tap.shape)))  # float out: 3x faster than bool + cast
        if t < kernel - 1:
            best = torch.maximum(best, tap)
    return wins


def _scatter_along(dy: Tensor, wins: list[Tensor], dim: int, size: int, padding: int) -> Tensor:
    """Backward of one axis: each window's gradient goes to its first maximum; the padding's share is dropped.

    Every tap's share is either the window's whole gradient or 0, so the subtractions are exact.
    """
    n_out = dy.shape[dim]
    grad = _pad_axis(dy, dim, 0, len(wins), 0.0)  # all to tap 0, then moved to the winning taps
    rest = dy
    for t in range(len(wins), 0, -1):
        part = rest * wins[t - 1]
        grad.narrow(dim, 0, n_out).sub_(part)
        grad.narrow(dim, t, n_out).add_(part)
        if t > 1:
            rest = rest - part
    return grad.narrow(dim, padding, size) if padding else grad


class _DenseMax(torch.autograd.Function):
    """Dense max-pool whose backward recomputes the winners from the input: it saves only ``x``.

    Each window's gradient goes to its first maximum in row-major order, as in ``max_pool2d``
    (the W pass keeps each row's first maximum, the H pass the first such row), so exact ties give
    the same gradients. ``max_pool2d`` also saves int64 argmax indices, and its NCHW stride-1
    forward is several times slower than the slices. The backward holds at most two full-size
    temporaries besides its input and output.
    """

    @staticmethod
    def forward(x: Tensor, kernel: int, padding: int) -> Tensor:
        return dense_max(x, kernel, padding)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
        ctx.save_for_backward(inputs[0])
        ctx.kernel, ctx.padding = inputs[1], inputs[2]

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[no-untyped-def]
        (x,) = ctx.saved_tensors
        k, p = ctx.kernel, ctx.padding
        rows = _max_along(x, 3, k, p)  # the W pass of the forward
        wins_h = _wins_along(_pad_axis(rows, 2, p), 2, k)
        del rows
        d_rows = _scatter_along(dy, wins_h, 2, x.shape[2], p)
        del wins_h
        wins_w = _wins_along(_pad_axis(x, 3, p), 3, k)
        return _scatter_along(d_rows, wins_w, 3, x.shape[3], p), None, None


def dense_max_recomputing(x: Tensor, kernel: int, padding: int) -> Tensor:
    """``dense_max`` with a custom backward that saves only ``x`` (see ``_DenseMax``); for eager autograd."""
    if kernel == 1 and padding == 0:
        return x
    return _DenseMax.apply(x, kernel, padding)


def max_blur_slices(
    x: Tensor,
    kernel: int,
    padding: int,
    filt: Tensor,
    stride: tuple[int, int],
    pads: tuple[int, int, int, int],
    pad_mode: str,
) -> Tensor:
    """Dense max then blur, as one function for ``torch.compile`` to fuse."""
    x = dense_max(x, kernel, padding)
    mode = resolve_pad_mode(pad_mode, pads, x.shape[-2], x.shape[-1])
    return blur_slices(x, filt, stride, pads, mode)


def use_fast_kernels(x: Tensor) -> bool:
    """Whether the banded-GEMM / dense-max kernels apply: CPU float32/float64 NCHW-shaped input."""
    return x.device.type == "cpu" and (x.dtype == torch.float32 or x.dtype == torch.float64) and x.dim() == 4


def static_chw(x: Tensor) -> tuple[int, int, int]:
    """``(C, H, W)`` of ``x`` as ints, also under ``torch.jit.trace`` and the legacy ONNX exporter.

    There sizes can be traced 0-dim tensors; the blur depends on them (bands, padding fallback,
    group count), so the traced graph is specialised to the traced C, H, W (the batch stays free).
    """
    c, h, w = x.shape[-3], x.shape[-2], x.shape[-1]
    if not torch.jit.is_scripting():  # noqa: SIM102 (TorchScript skips only a bare is_scripting() branch)
        if torch.jit.is_tracing():
            c, h, w = static_int(c), static_int(h), static_int(w)
    return c, h, w


def blur_reference(
    x: Tensor, filt: Tensor, stride: tuple[int, int], pads: tuple[int, int, int, int], pad_mode: str
) -> Tensor:
    """The straightforward implementation: pad, then depthwise ``conv2d`` with ``filt`` at ``stride``."""
    sh, sw = stride
    if pads == (0, 0, 0, 0):  # filter size 1 (the pads, static ints, encode k: lo + hi = k - 1)
        return x[:, :, ::sh, ::sw]
    channels, h, w = static_chw(x)
    mode = resolve_pad_mode(pad_mode, pads, h, w)
    weight = filt.to(dtype=x.dtype).expand(channels, 1, pads[2] + pads[3] + 1, pads[0] + pads[1] + 1)
    if not torch.jit.is_scripting():  # noqa: SIM102 (TorchScript skips only a bare is_scripting() branch)
        if torch.jit.is_tracing():  # constant weight and pad indices: the legacy ONNX exporter keeps static shapes
            weight = traced_constant(weight)
            return F.conv2d(traced_pad(x, pads, mode, h, w), weight, stride=stride, groups=channels)
    return F.conv2d(pad(x, pads, mode), weight, stride=stride, groups=channels)
