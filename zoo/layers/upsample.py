"""Anti-aliased upsampling: ``BlurUpsample2d`` (zero insertion by an integer factor, then a binomial blur).

Definition (per axis, scale ``s``, binomial filter ``f`` of size ``k`` summing to 1, official padding
``lo = floor((k-1)/2)``): the input ``x`` is extended beyond its border by ``pad_mode`` (reflect, replicate,
zero or circular, applied to the *low-resolution* map), zeros are inserted (``z[s*i] = x[i]``, 0 elsewhere)
and the output is ``y[m] = s * sum_t f[t] z[m + t - lo]`` for ``m`` in ``0..s*H-1``. In 2-D the gain is
``s^2``, which preserves the mean: for ``s = 2`` and ``k >= 2`` the even and odd taps of a binomial filter
each sum to 1/2, so a constant map stays exactly constant; for other scales the mean of a circular map is
preserved exactly (each input pixel spreads a total weight ``s^2`` over ``s^2`` output pixels). ``k = 1``
is plain zero insertion times ``s^2`` (use ``k >= s`` for interpolation). With circular padding the layer
commutes with circular shifts: ``up(roll(x, d)) == roll(up(x), s * d)``.

Implementations, equal up to float rounding: ``"reference"`` (pad, zero insertion, depthwise ``conv2d``)
and ``"fast"`` (default: pad, depthwise ``conv_transpose2d`` with stride ``s``, the polyphase form that
never multiplies the inserted zeros). The binomial filter is symmetric, so the transposed convolution with
``f`` is the correlation with ``f`` on the zero-inserted map, up to an offset of ``k - 1``.

Background: Zhang, "Making convolutional networks shift-invariant again", ICML 2019 (the low-pass filters);
the users of that release asked for an anti-aliased upsampling layer (github.com/adobe/antialiased-cnns
issues #21, #28, #47).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.layers.kernels import binomial_filter, check_filter_size, normalize_pad_mode, pad

__all__ = ["UPSAMPLE_IMPLS", "BlurUpsample2d", "blur_upsample"]

UPSAMPLE_IMPLS: tuple[str, ...] = ("fast", "reference")


def _check_scale(scale: int) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    return scale


def _low_res_pads(filter_size: int, scale: int) -> tuple[int, int]:
    """Low-resolution pixels needed on each side: ``ceil(lo / s)`` and ``ceil(hi / s)``."""
    lo, hi = (filter_size - 1) // 2, filter_size // 2
    return -(-lo // scale), -(-hi // scale)


def _pad_low_res(x: Tensor, pl: int, pr: int, mode: str) -> Tensor:
    h, w = x.shape[-2], x.shape[-1]
    if mode == "reflect" and max(pl, pr) >= min(h, w):
        mode = "replicate"  # reflection degenerates to replication on a map this small (as BlurPool2d does)
    if mode == "circular" and max(pl, pr) > min(h, w):
        mode = "replicate"
    return pad(x, (pl, pr, pl, pr), mode)


def blur_upsample(
    x: Tensor, scale: int = 2, filter_size: int = 4, pad_mode: str = "reflect", impl: str = "fast"
) -> Tensor:
    """Functional ``BlurUpsample2d``: ``(N, C, H, W) -> (N, C, scale*H, scale*W)``; see the module docstring."""
    if impl not in UPSAMPLE_IMPLS:
        raise ValueError(f"unknown upsample impl {impl!r}; valid: {', '.join(UPSAMPLE_IMPLS)}")
    if x.dim() != 4:
        raise ValueError(f"blur_upsample expects an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    s, k = _check_scale(scale), check_filter_size(filter_size)
    mode = normalize_pad_mode(pad_mode)
    filt = binomial_filter(k, torch.float64).to(dtype=x.dtype, device=x.device) * (s * s)
    return _upsample(x, filt, s, mode, impl)


def _upsample(x: Tensor, filt: Tensor, s: int, mode: str, impl: str) -> Tensor:
    n, c, h, w = x.shape
    k = filt.shape[-1]
    lo = (k - 1) // 2
    pl, pr = _low_res_pads(k, s)
    xp = _pad_low_res(x, pl, pr, mode)
    weight = filt.reshape(1, 1, k, k).expand(c, 1, k, k)
    start = s * pl - lo
    if impl == "reference":
        hp, wp = xp.shape[-2], xp.shape[-1]
        z = xp.new_zeros(n, c, hp * s, wp * s)
        z[:, :, ::s, ::s] = xp
        y = F.conv2d(z, weight, groups=c)
    else:
        start = start + k - 1
        # the transposed conv yields s*(Hp-1)+k rows; a small filter (k < s) needs up to s-1 more zero rows
        extra = max(0, start + s * h - (s * (xp.shape[-2] - 1) + k))
        extra_w = max(0, start + s * w - (s * (xp.shape[-1] - 1) + k))
        y = F.conv_transpose2d(xp, weight, stride=s, groups=c, output_padding=(extra, extra_w))
    return y[:, :, start : start + s * h, start : start + s * w]


class BlurUpsample2d(nn.Module):
    """Upsample by an integer ``scale`` (zero insertion), then blur with the binomial filter times ``scale^2``.

    Args:
        channels: informational only; the layer works with any channel count.
        scale: integer upsampling factor ``>= 1``.
        filter_size: binomial filter size ``k >= 1`` (4 = Tri-4, the zoo's default; for ``scale=2`` it is
            bilinear interpolation at the half-pixel-offset grid).
        pad_mode: ``reflect`` (default), ``replicate``, ``zero`` or ``circular`` (applied to the input map).
        impl: ``fast`` (transposed depthwise convolution) or ``reference`` (zero insertion + convolution).

    The filter is a non-persistent buffer: nothing is added to the state dict.
    """

    def __init__(
        self,
        channels: int | None = None,
        scale: int = 2,
        filter_size: int = 4,
        pad_mode: str = "reflect",
        impl: str = "fast",
    ) -> None:
        super().__init__()
        if impl not in UPSAMPLE_IMPLS:
            raise ValueError(f"unknown upsample impl {impl!r}; valid: {', '.join(UPSAMPLE_IMPLS)}")
        self.channels = channels
        self.scale = _check_scale(scale)
        self.filter_size = check_filter_size(filter_size)
        self.pad_mode = normalize_pad_mode(pad_mode)
        self.impl = impl
        filt = binomial_filter(self.filter_size) * float(self.scale * self.scale)
        self.register_buffer("filt", filt, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return _upsample(x, self.filt.to(x.dtype), self.scale, self.pad_mode, self.impl)

    def extra_repr(self) -> str:
        chans = f"channels={self.channels}, " if self.channels is not None else ""
        return (
            f"{chans}scale={self.scale}, filter_size={self.filter_size}, pad_mode={self.pad_mode!r}, impl={self.impl!r}"
        )
