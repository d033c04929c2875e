"""Internal feature distance under circular shifts (Zhang 2019, Sec. 5: internal shift-equivariance).

For a layer ``l`` with accumulated stride ``s`` and an input shift ``Δ = (Δh, Δw)`` pixels:
``d_l(Δ) = 1 - cos(roll(F_l(x), Δ / s), F_l(roll(x, Δ)))``. When ``Δ`` is a multiple of ``s`` the
feature map is rolled by whole pixels; otherwise (``fractional="fourier"``) it is shifted by the
fraction ``Δ / s`` with an ideal band-limited (Fourier phase) shift, the shift a perfectly
anti-aliased layer would make, or left out (``fractional="skip"``: NaN in the heat-map).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from zoo.eval._batches import evaluating, iter_batches, model_device
from zoo.eval._dist import gather_records
from zoo.eval._distance import cosine_distance
from zoo.eval._layers import capture, resolve_layers
from zoo.eval._stats import mean_ci, quiet_nan

__all__ = ["FRACTIONAL", "feature_distance", "fourier_shift", "shift_features"]

FRACTIONAL = ("fourier", "skip")


def fourier_shift(x: Tensor, dh: float, dw: float, spectrum: Tensor | None = None) -> Tensor:
    """Circularly shift ``x`` (..., H, W) by a possibly fractional (dh, dw) via the Fourier phase.

    ``spectrum`` may pass a precomputed ``torch.fft.fft2(x)`` (saves the forward transform).
    """
    h, w = x.shape[-2:]
    real = torch.float64 if x.dtype == torch.float64 else torch.float32
    fy = torch.fft.fftfreq(h, dtype=real, device=x.device)[:, None]
    fx = torch.fft.fftfreq(w, dtype=real, device=x.device)[None, :]
    phase = torch.polar(torch.ones((), dtype=real, device=x.device), -2 * math.pi * (fy * dh + fx * dw))
    spectrum = torch.fft.fft2(x) if spectrum is None else spectrum
    return torch.fft.ifft2(spectrum * phase).real.to(x.dtype)


class _Shifter:
    """Expected feature maps of one reference map after input shifts (caches its spectrum)."""

    def __init__(self, feat: Tensor, stride: int, fractional: str) -> None:
        self.feat, self.stride, self.fractional = feat, stride, fractional
        self._spectrum: Tensor | None = None

    def __call__(self, dh: int, dw: int) -> Tensor | None:
        s = self.stride
        if dh % s == 0 and dw % s == 0:
            return torch.roll(self.feat, shifts=(dh // s, dw // s), dims=(-2, -1))
        if self.fractional == "skip":
            return None
        if self._spectrum is None:
            self._spectrum = torch.fft.fft2(self.feat.float())
        return fourier_shift(self.feat, dh / s, dw / s, self._spectrum)


def shift_features(feat: Tensor, dh: int, dw: int, stride: int, fractional: str) -> Tensor | None:
    """The feature map expected after an input shift of (dh, dw) pixels (None when skipped)."""
    return _Shifter(feat, stride, fractional)(dh, dw)


def _strides(sizes: dict[str, tuple[int, int]], image_hw: tuple[int, int]) -> dict[str, int]:
    strides = {}
    for name, (h, w) in sizes.items():
        sh, sw = image_hw[0] / h, image_hw[1] / w
        s = round(sh)
        if s < 1 or abs(sh - s) > 1e-9 or abs(sw - s) > 1e-9:
            raise ValueError(
                f"layer {name!r}: a {image_hw[0]}x{image_hw[1]} input gives a {h}x{w} map, not an integer "
                f"stride; use an image size that is a multiple of the network's total stride"
            )
        strides[name] = s
    return strides


def feature_distance(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    layers: Sequence[str] | None = None,
    shifts: int = 8,
    fractional: str = "fourier",
    chunk: int = 16,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Heat-maps of internal feature distance over input shifts (Δh, Δw) in [0, shifts)².

    Args:
        model: any ``nn.Module``; layers are named modules (hooks), by default the ``feature_info``
            modules of a zoo/timm model.
        batches: ``(images, labels_or_None[, indices])`` batches of normalized images (labels unused).
        layers: module names (``dict(model.named_modules())`` keys).
        shifts: the heat-map covers Δ = 0 .. shifts-1 pixels along each axis (shifts² forward passes
            per image).
        fractional: ``"fourier"`` or ``"skip"`` for shifts that are not a multiple of the stride.
        chunk: views per forward pass.

    Returns:
        ``{"shifts": [0..shifts-1], "n": images, "layers": {name: {"stride": s, "heatmap": (shifts x
        shifts) mean distance, "mean": mean over Δ != 0, "mean_ci95": [low, high], "mean_on_grid":
        mean over Δ != 0 multiples of s, "mean_off_grid": mean over the others}}}``.
    """
    if fractional not in FRACTIONAL:
        raise ValueError(f"fractional must be one of {', '.join(FRACTIONAL)}, got {fractional!r}")
    if not isinstance(shifts, int) or shifts < 1:
        raise ValueError(f"shifts must be an int >= 1, got {shifts!r}")
    dev = model_device(model, device)
    hooked = resolve_layers(model, layers)
    names = list(hooked)
    grid = [(dh, dw) for dh in range(shifts) for dw in range(shifts)]
    strides: dict[str, int] | None = None
    records: dict[int, np.ndarray] = {}
    with evaluating(model, dev), capture(hooked) as store:
        for images, _labels, indices in iter_batches(batches, dev):
            for image, index in zip(images, indices.tolist()):
                dist = np.full((len(names), len(grid)), np.nan)
                reference: dict[str, _Shifter] = {}
                for start in range(0, len(grid), chunk):
                    part = grid[start : start + chunk]
                    model(torch.stack([torch.roll(image, s, dims=(-2, -1)) for s in part]))
                    if strides is None:
                        missing = [n for n in names if n not in store]
                        if missing:
                            raise ValueError(f"layer(s) {missing} did not run in the model's forward pass")
                        strides = _strides({n: tuple(store[n].shape[-2:]) for n in names}, tuple(image.shape[-2:]))
                    if start == 0:
                        reference = {n: _Shifter(store[n][0], strides[n], fractional) for n in names}
                    for li, name in enumerate(names):
                        for j, (dh, dw) in enumerate(part):
                            target = reference[name](dh, dw)
                            if target is not None:
                                dist[li, start + j] = float(cosine_distance(target[None], store[name][j : j + 1]))
                records[index] = dist.reshape(len(names), shifts, shifts)
    records = gather_records(records)
    stack = np.stack(list(records.values())) if records else np.full((0, len(names), shifts, shifts), np.nan)
    out_layers: dict[str, Any] = {}
    on_grid_mask = np.zeros((shifts, shifts), dtype=bool)
    for li, name in enumerate(names):
        s = (strides or {}).get(name, 1)
        idx = np.arange(shifts)
        on_grid_mask[:] = (idx[:, None] % s == 0) & (idx[None, :] % s == 0)
        nonzero = np.ones((shifts, shifts), dtype=bool)
        nonzero[0, 0] = False
        per_image = stack[:, li]
        off_zero = np.where(nonzero, per_image, np.nan).reshape(len(stack), -1)
        with quiet_nan():
            mean_all, low, high = mean_ci(np.nanmean(off_zero, axis=1)) if len(stack) else (np.nan,) * 3
        with quiet_nan():
            heat = np.nanmean(per_image, axis=0) if len(stack) else np.full((shifts, shifts), np.nan)
        out_layers[name] = {
            "stride": s,
            "heatmap": _nan_to_none(heat),
            "mean": _num(mean_all),
            "mean_ci95": [_num(low), _num(high)],
            "mean_on_grid": _masked_mean(heat, on_grid_mask & nonzero),
            "mean_off_grid": _masked_mean(heat, ~on_grid_mask),
        }
    return {"shifts": list(range(shifts)), "n": len(records), "fractional": fractional, "layers": out_layers}


def _num(x: Any) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def _masked_mean(heat: np.ndarray, mask: np.ndarray) -> float | None:
    vals = heat[mask]
    vals = vals[~np.isnan(vals)]
    return float(vals.mean()) if vals.size else None


def _nan_to_none(a: np.ndarray) -> list[list[float | None]]:
    return [[_num(v) for v in row] for row in a]
