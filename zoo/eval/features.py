"""Internal feature distance under circular shifts (Zhang 2019, Sec. 5: internal shift-equivariance).

For a layer ``l`` with accumulated stride ``s`` and an input shift ``Δ = (Δh, Δw)`` pixels:
``d_l(Δ) = 1 - cos(roll(F_l(x), Δ / s), F_l(roll(x, Δ)))``. When ``Δ`` is a multiple of ``s`` the
feature map is rolled by whole pixels; otherwise (``fractional="fourier"``) it is shifted by the
fraction ``Δ / s`` with an ideal band-limited (Fourier phase) shift, the shift a perfectly
anti-aliased layer would make, or left out (``fractional="skip"``: NaN in the heat-map).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from zoo.distributed import gather_records
from zoo.eval._batches import evaluating, iter_batches, model_device
from zoo.eval._distance import cosine_distance
from zoo.eval._layers import capture, resolve_layers
from zoo.eval.consistency import group_list
from zoo.eval.plots import plot_features
from zoo.eval.registry import Context, Metric, Paired, register, run_on_squares
from zoo.eval.report import Row
from zoo.eval.results import OPTIONAL, PerImage, Result
from zoo.stats import mean_ci, quiet_nan

__all__ = [
    "FRACTIONAL",
    "FeatureExtension",
    "FeatureLayer",
    "FeatureResult",
    "feature_distance",
    "fourier_shift",
    "shift_features",
]

FRACTIONAL = ("fourier", "skip")
EXTENSION_NOTE = (
    "off-grid cells compare with an ideal band-limited (Fourier) shift of the map: an extension of Zhang's on-grid "
    "distance"
)


@dataclass(kw_only=True)
class FeatureExtension(Result):
    """The heat-map cells off a layer's stride grid (compared with the ideal band-limited shift)."""

    method: str  # FRACTIONAL
    mean_off_grid: float | None
    mean_all: float | None
    note: str = EXTENSION_NOTE


@dataclass(kw_only=True)
class FeatureLayer(Result):
    """One layer of :func:`feature_distance`: ``mean`` is Zhang's on-grid figure (``None`` + ``reason``)."""

    stride: int
    on_grid_cells: int
    mean: float | None
    mean_ci95: list[float | None]
    reason: str | None = field(default=None, metadata=OPTIONAL)
    heatmap: list[list[float | None]]
    extension: FeatureExtension


@dataclass(kw_only=True)
class FeatureResult(Result):
    """:func:`feature_distance` (``per_image``: ``index`` and each layer's on-grid mean)."""

    shifts: list[int]
    on_grid_shifts: list[list[int]]
    n: int
    n_eff: int
    fractional: str
    layers: dict[str, FeatureLayer]
    per_image: PerImage


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


def _grid_shifts(shifts: int, strides: dict[str, int], on_grid: int, hw: tuple[int, int]) -> list[tuple[int, int]]:
    """The heat-map shifts [0, shifts)² followed by the on-grid shifts (a s, b s), 0 <= a, b <= on_grid."""
    grid = [(dh, dw) for dh in range(shifts) for dw in range(shifts)]
    seen = set(grid)
    for s in sorted(set(strides.values())):
        for a in range(on_grid + 1):
            for b in range(on_grid + 1):
                d = (a * s, b * s)
                if d in seen or (d[0] % hw[0] == 0 and d[1] % hw[1] == 0):  # (0, 0) or a whole-image roll
                    continue
                seen.add(d)
                grid.append(d)
    return grid


def feature_distance(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    layers: Sequence[str] | None = None,
    shifts: int = 8,
    on_grid: int = 2,
    fractional: str = "fourier",
    chunk: int = 16,
    groups: Mapping[int, Hashable] | None = None,
    device: str | torch.device | None = None,
) -> FeatureResult:
    """Internal feature distance: Zhang's on-grid figure per layer, plus a heat-map over (Δh, Δw) in [0, shifts)².

    Zhang's distance is defined for input shifts that are whole multiples of the layer's stride ``s``
    (the feature map then moves by whole pixels). The **headline** ``mean`` of a layer is the mean over
    its on-grid shifts: the heat-map cells that are multiples of ``s`` and the extra shifts
    ``(a s, b s)``, ``0 <= a, b <= on_grid`` (so every layer has on-grid cells even when ``s >= shifts``).
    The other heat-map cells are an **extension** (``fractional="fourier"``: compared with the ideal
    band-limited shift of the map by Δ/s; ``"skip"``: left out as NaN).

    Args:
        model: any ``nn.Module``; layers are named modules (hooks), by default the ``feature_info``
            modules of a zoo/timm model.
        batches: ``(images, labels_or_None[, indices])`` batches of normalized images (labels unused).
        layers: module names (``dict(model.named_modules())`` keys).
        shifts: the heat-map covers Δ = 0 .. shifts-1 pixels along each axis.
        on_grid: multiples of each stride added as on-grid shifts (0: only the heat-map's).
        fractional: ``"fourier"`` or ``"skip"`` for heat-map shifts that are not a multiple of the stride.
        chunk: views per forward pass.
        groups: ``{index: cluster}``: intervals over clusters.

    Returns:
        a :class:`FeatureResult`: ``shifts``, ``on_grid_shifts`` [[dh, dw]], ``n``, ``n_eff``, ``layers``
        {name: :class:`FeatureLayer` (``stride``, ``mean``: on-grid headline or None, ``mean_ci95``: Student t,
        ``on_grid_cells``, ``reason`` when None, ``heatmap``, ``extension``: :class:`FeatureExtension`)},
        ``per_image`` (``index``, layer: [on-grid mean]).
    """
    if fractional not in FRACTIONAL:
        raise ValueError(f"fractional must be one of {', '.join(FRACTIONAL)}, got {fractional!r}")
    if not isinstance(shifts, int) or shifts < 1:
        raise ValueError(f"shifts must be an int >= 1, got {shifts!r}")
    if not isinstance(on_grid, int) or on_grid < 0:
        raise ValueError(f"on_grid must be an int >= 0, got {on_grid!r}")
    dev = model_device(model, device)
    hooked = resolve_layers(model, layers)
    names = list(hooked)
    strides: dict[str, int] | None = None
    grid: list[tuple[int, int]] = []
    records: dict[int, np.ndarray] = {}
    with evaluating(model, dev), capture(hooked) as store:
        for images, _labels, indices in iter_batches(batches, dev):
            for image, index in zip(images, indices.tolist()):
                if strides is None:
                    model(image[None])
                    missing = [n for n in names if n not in store]
                    if missing:
                        raise ValueError(f"layer(s) {missing} did not run in the model's forward pass")
                    strides = _strides({n: tuple(store[n].shape[-2:]) for n in names}, tuple(image.shape[-2:]))
                    grid = _grid_shifts(shifts, strides, on_grid, tuple(image.shape[-2:]))
                dist = np.full((len(names), len(grid)), np.nan)
                reference: dict[str, _Shifter] = {}
                for start in range(0, len(grid), chunk):
                    part = grid[start : start + chunk]
                    model(torch.stack([torch.roll(image, s, dims=(-2, -1)) for s in part]))
                    if start == 0:
                        reference = {n: _Shifter(store[n][0], strides[n], fractional) for n in names}
                    for li, name in enumerate(names):
                        s = strides[name]
                        for j, (dh, dw) in enumerate(part):
                            if start + j >= shifts * shifts and (dh % s or dw % s):
                                continue  # an extra shift off this layer's grid: not needed
                            target = reference[name](dh, dw)
                            if target is not None:
                                dist[li, start + j] = float(cosine_distance(target[None], store[name][j : j + 1]))
                records[index] = dist
    records = gather_records(records)
    index = list(records)
    stack = np.stack(list(records.values())) if records else np.full((0, len(names), len(grid)), np.nan)
    arr = np.array(grid, dtype=np.int64).reshape(-1, 2)
    nonzero = (arr[:, 0] != 0) | (arr[:, 1] != 0)
    in_heat = np.arange(len(grid)) < shifts * shifts
    clusters = group_list(groups, index)
    out_layers: dict[str, FeatureLayer] = {}
    per_image: PerImage = {"index": index}
    for li, name in enumerate(names):
        s = (strides or {}).get(name, 1)
        on = nonzero & (arr[:, 0] % s == 0) & (arr[:, 1] % s == 0)
        per = stack[:, li]
        with quiet_nan():
            on_img = np.nanmean(np.where(on[None], per, np.nan), axis=1) if len(stack) else np.zeros(0)
            heat = np.nanmean(per[:, in_heat], axis=0) if len(stack) else np.full(shifts * shifts, np.nan)
        heat = heat.reshape(shifts, shifts)
        off = in_heat & ~((arr[:, 0] % s == 0) & (arr[:, 1] % s == 0))
        with quiet_nan():
            cells = np.nanmean(per, axis=0) if len(stack) else np.full(len(grid), np.nan)
        extension = FeatureExtension(
            method=fractional,
            mean_off_grid=_masked_mean(cells, off),
            mean_all=_masked_mean(cells, in_heat & nonzero),
        )
        entry = FeatureLayer(
            stride=s,
            on_grid_cells=int(on.sum()),
            mean=None,
            mean_ci95=[None, None],
            heatmap=_nan_to_none(heat),
            extension=extension,
        )
        if on.any() and len(stack):
            mean, low, high = mean_ci(on_img, groups=clusters)
            entry.mean, entry.mean_ci95 = _num(mean), [_num(low), _num(high)]
            per_image[name] = on_img.tolist()
        else:
            entry.reason = (
                f"no on-grid shift: stride {s} and shifts {shifts}, on_grid {on_grid}" if len(stack) else "no images"
            )
        out_layers[name] = entry
    return FeatureResult(
        shifts=list(range(shifts)),
        on_grid_shifts=[list(d) for d in grid[shifts * shifts :]],
        n=len(records),
        n_eff=len(set(clusters or index)),
        fractional=fractional,
        layers=out_layers,
        per_image=per_image,
    )


def _num(x: Any) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def _masked_mean(heat: np.ndarray, mask: np.ndarray) -> float | None:
    vals = heat[mask]
    vals = vals[~np.isnan(vals)]
    return float(vals.mean()) if vals.size else None


def _nan_to_none(a: np.ndarray) -> list[list[float | None]]:
    return [[_num(v) for v in row] for row in a]


def _run(ctx: Context, model: Any) -> FeatureResult:
    return run_on_squares(ctx, model, "features", feature_distance, ("layers", "shifts", "on_grid", "fractional"))


def _headline(r: FeatureResult) -> str:
    return "on-grid " + ", ".join(
        f"{k} {v.mean:.4f}" if v.mean is not None else f"{k} n/a" for k, v in r.layers.items()
    )


def _rows(model: str, r: FeatureResult) -> Iterator[Row]:
    for layer, v in r.layers.items():
        for dh, row in enumerate(v.heatmap):
            for dw, value in enumerate(row):
                s = v.stride
                yield {
                    "model": model,
                    "layer": layer,
                    "stride": s,
                    "dh": dh,
                    "dw": dw,
                    "distance": value,
                    "on_grid": dh % s == 0 and dw % s == 0,
                    "layer_on_grid_mean": v.mean,
                    "n": r.n,
                }


def _paired(r: FeatureResult) -> Paired:
    index = r.per_image["index"]
    return {
        f"feature distance {k} (on-grid)": ("continuous", dict(zip(index, r.per_image[k])))
        for k in r.layers
        if k in r.per_image
    }


register(Metric("features", _run, "classifier", headline=_headline, rows=_rows, plot=plot_features, paired=_paired))
