"""Deformation sensitivity per layer (Ruderman et al. 2018) and filter smoothness (Zhang 2019).

A deformation of strength ``C`` displaces each point of a ``grid x grid`` control lattice (spanning the
image) by a uniform random vector in [-C, C]² pixels; a thin-plate spline interpolates the dense
displacement field and the image is resampled bilinearly (border clamp). Sensitivity of layer ``l``
= E[d_cos(r_l(x), r_l(τ_C x))] / E[d_cos(r_l(x), r_l(y))] with ``y`` another image.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from zoo.distributed import gather_records
from zoo.eval._batches import evaluating, iter_batches, model_device
from zoo.eval._distance import cosine_distance
from zoo.eval._layers import capture, resolve_layers
from zoo.eval._seeding import image_rng
from zoo.eval.plots import plot_deformation, plot_smoothness
from zoo.eval.registry import Context, Metric, register, run_on_squares
from zoo.eval.report import Row, ci_columns
from zoo.eval.results import Result

__all__ = [
    "DeformationLayer",
    "DeformationResult",
    "SmoothnessResult",
    "deform",
    "deformation_sensitivity",
    "filter_smoothness",
    "tps_field",
]

OUTPUT = "output"  # pseudo-layer name: the model's output


@dataclass(kw_only=True)
class DeformationLayer(Result):
    """One layer of :func:`deformation_sensitivity`: one value per strength C."""

    sensitivity: list[float]
    ci95: list[list[float]]  # [[low per C], [high per C]]
    deformed: list[float]  # E d(x, tau x)
    pair: float  # E d(x, y)


@dataclass(kw_only=True)
class DeformationResult(Result):
    """:func:`deformation_sensitivity`: ``layers`` by name (``"output"``: the model's output)."""

    strengths: list[float]
    grid: int
    n: int
    pairs: int
    same_source_pairs: int
    layers: dict[str, DeformationLayer]


@dataclass(kw_only=True)
class SmoothnessResult(Result):
    """:func:`filter_smoothness`: mean TV/L1 per conv layer and over all filters."""

    layers: dict[str, float]
    mean: float
    filters: int


def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    """U(r) = r² log r written with r²: 0.5 r² log r² (0 at r = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r2 > 0, 0.5 * r2 * np.log(np.where(r2 > 0, r2, 1.0)), 0.0)


@functools.lru_cache(maxsize=16)
def _tps_basis(h: int, w: int, grid: int) -> np.ndarray:
    """(H*W, grid²) matrix mapping control-point displacements to the dense TPS field."""
    cy, cx = np.meshgrid(np.linspace(0, h - 1, grid), np.linspace(0, w - 1, grid), indexing="ij")
    ctrl = np.stack([cy.ravel(), cx.ravel()], 1)
    n = len(ctrl)
    poly = np.hstack([np.ones((n, 1)), ctrl])
    system = np.zeros((n + 3, n + 3))
    system[:n, :n] = _tps_kernel(((ctrl[:, None] - ctrl[None]) ** 2).sum(-1))
    system[:n, n:] = poly
    system[n:, :n] = poly.T
    solve = np.linalg.inv(system)[:, :n]  # [weights; affine] = solve @ values
    py, px = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pts = np.stack([py.ravel(), px.ravel()], 1).astype(np.float64)
    basis = np.hstack([_tps_kernel(((pts[:, None] - ctrl[None]) ** 2).sum(-1)), np.ones((len(pts), 1)), pts])
    return basis @ solve


def tps_field(displacements: np.ndarray, h: int, w: int) -> np.ndarray:
    """Dense (2, H, W) displacement (dy, dx) interpolating (grid, grid, 2) control displacements."""
    grid = displacements.shape[0]
    if displacements.shape != (grid, grid, 2):
        raise ValueError(f"control displacements must have shape (grid, grid, 2), got {displacements.shape}")
    dense = _tps_basis(h, w, grid) @ displacements.reshape(-1, 2)
    return dense.T.reshape(2, h, w)


def deform(image: Tensor, field: np.ndarray | Tensor) -> Tensor:
    """Bilinear resampling ``out(p) = image(p + field(p))`` (border clamp) of a (C, H, W) image.

    Exact for a zero field (weights 1 and 0 on the original pixels).
    """
    c, h, w = image.shape
    field = torch.as_tensor(field, dtype=torch.float64, device=image.device)
    py, px = torch.meshgrid(torch.arange(h, device=image.device), torch.arange(w, device=image.device), indexing="ij")
    y = (py + field[0]).clamp(0, h - 1)
    x = (px + field[1]).clamp(0, w - 1)
    y0, x0 = y.floor().long(), x.floor().long()
    y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
    fy, fx = (y - y0).to(image.dtype), (x - x0).to(image.dtype)
    flat = image.reshape(c, -1)

    def at(yy: Tensor, xx: Tensor) -> Tensor:
        return flat[:, (yy * w + xx).reshape(-1)].reshape(c, h, w)

    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return top * (1 - fy) + bottom * fy


def _features(model: nn.Module, store: dict[str, Tensor], names: list[str], x: Tensor) -> dict[str, Tensor]:
    out = model(x)
    return {n: (out if n == OUTPUT else store[n]) for n in names}


def deformation_sensitivity(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    strengths: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
    grid: int = 5,
    layers: Sequence[str] | None = None,
    include_output: bool = True,
    seed: int = 0,
    bootstrap: int = 1000,
    groups: Mapping[int, Hashable] | None = None,
    device: str | torch.device | None = None,
) -> DeformationResult:
    """Per-layer sensitivity to random smooth deformations of strength ``C`` in ``strengths`` (pixels).

    Images ``2j`` and ``2j+1`` (global indices) form the random pairs of the normaliser; a pair whose
    two images come from the same source (same ``groups`` label, e.g. two views of one photo) is left
    out of the denominator (``same_source_pairs``). The zoo's data order deals the photos round-robin,
    so consecutive images are distinct photos. Each image's control displacements are one seeded
    uniform draw in [-1, 1] scaled by every ``C`` (common random numbers across strengths).

    Returns a :class:`DeformationResult`: ``strengths`` [C], ``n`` images, ``pairs`` used, ``same_source_pairs``,
    ``layers`` {name: :class:`DeformationLayer` (``sensitivity`` [per C], ``ci95`` [[low], [high]] (bootstrap
    resampling the pairs (2j, 2j+1) with their numerator and denominator together), ``deformed`` [E d(x, τx)],
    ``pair`` E d(x, y))}.
    """
    if grid < 2:
        raise ValueError(f"grid must be >= 2 control points per side, got {grid}")
    if any(c < 0 for c in strengths) or not strengths:
        raise ValueError(f"strengths must be a non-empty list of C >= 0 pixels, got {list(strengths)}")
    dev = model_device(model, device)
    hooked = resolve_layers(model, layers) if layers or getattr(model, "feature_info", None) else {}
    names = list(hooked) + ([OUTPUT] if include_output else [])
    if not names:
        raise ValueError("no layers to measure: pass layers=[...] or include_output=True")
    records: dict[int, dict[str, Any]] = {}
    pending: dict[int, dict[str, Tensor]] = {}
    with evaluating(model, dev), capture(hooked) as store:
        for images, _labels, indices in iter_batches(batches, dev):
            for image, index in zip(images, indices.tolist()):
                h, w = image.shape[-2:]
                base = image_rng(seed, "deformation", index).uniform(-1.0, 1.0, size=(grid, grid, 2))
                views = [image] + [deform(image, tps_field(c * base, h, w)) for c in strengths]
                feats = _features(model, store, names, torch.stack(views))
                num = np.array(
                    [
                        [float(v) for v in cosine_distance(f[:1].expand_as(f[1:]), f[1:])]
                        for f in (feats[n] for n in names)
                    ]
                )
                record: dict[str, Any] = {"num": num, "den": None}
                partner = index ^ 1
                if partner in pending:
                    other = pending.pop(partner)
                    same = groups is not None and groups.get(index, index) == groups.get(partner, partner)
                    record["den"] = (
                        "same" if same else np.array([float(cosine_distance(feats[n][:1], other[n])) for n in names])
                    )
                else:
                    pending[index] = {n: feats[n][:1].clone() for n in names}
                records[index] = record
    records = gather_records(records)
    num = np.stack([r["num"] for r in records.values()]) if records else np.zeros((0, len(names), len(strengths)))
    same = sum(isinstance(r["den"], str) for r in records.values())
    dens = {i // 2: r["den"] for i, r in records.items() if isinstance(r["den"], np.ndarray)}
    if not dens:
        raise ValueError(
            "deformation sensitivity needs at least one pair of images (indices 2j, 2j+1) from distinct sources"
            + (f"; all {same} pairs were two views of one source (shuffle the data)" if same else "")
        )
    den = np.stack(list(dens.values()))
    unit_of_image = np.array([i // 2 for i in records])
    low, high = _bootstrap_ratio(num, den, unit_of_image, np.array(list(dens)), bootstrap, seed)
    out_layers = {}
    for li, name in enumerate(names):
        pair = float(den[:, li].mean())
        deformed = num[:, li].mean(0)
        out_layers[name] = DeformationLayer(
            sensitivity=(deformed / pair).tolist() if pair > 0 else [float("nan")] * len(strengths),
            ci95=[low[li].tolist(), high[li].tolist()],
            deformed=deformed.tolist(),
            pair=pair,
        )
    return DeformationResult(
        strengths=[float(c) for c in strengths],
        grid=grid,
        n=len(num),
        pairs=len(den),
        same_source_pairs=same,
        layers=out_layers,
    )


def _bootstrap_ratio(
    num: np.ndarray, den: np.ndarray, num_unit: np.ndarray, den_unit: np.ndarray, rounds: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap of mean(num) / mean(den), resampling the pairs (units): a drawn pair brings
    its images' numerators and its denominator together."""
    units = np.unique(np.concatenate([num_unit, den_unit]))
    if rounds <= 0 or len(units) < 2:
        nan = np.full(num.shape[1:], np.nan)
        return nan, nan
    pos = {u: k for k, u in enumerate(units)}
    num_sum = np.zeros((len(units), *num.shape[1:]))
    num_cnt = np.zeros(len(units))
    den_sum = np.zeros((len(units), den.shape[1]))
    den_cnt = np.zeros(len(units))
    for row, u in zip(num, num_unit):
        num_sum[pos[u]] += row
        num_cnt[pos[u]] += 1
    for row, u in zip(den, den_unit):
        den_sum[pos[u]] += row
        den_cnt[pos[u]] += 1
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    pick = rng.integers(0, len(units), size=(rounds, len(units)))
    with np.errstate(all="ignore"):
        n_mean = num_sum[pick].sum(1) / num_cnt[pick].sum(1)[:, None, None]
        d_mean = den_sum[pick].sum(1) / den_cnt[pick].sum(1)[:, None]
        ratios = n_mean / np.maximum(d_mean, 1e-300)[:, :, None]  # (rounds, L, C)
    ratios = np.where(den_cnt[pick].sum(1)[:, None, None] > 0, ratios, np.nan)
    alpha = (1 - 0.95) / 2
    return np.nanquantile(ratios, alpha, axis=0), np.nanquantile(ratios, 1 - alpha, axis=0)


def _smoothness(weight: Tensor) -> Tensor:
    w = weight.detach().double()
    tv = (w[..., 1:, :] - w[..., :-1, :]).abs().sum((1, 2, 3)) + (w[..., :, 1:] - w[..., :, :-1]).abs().sum((1, 2, 3))
    return tv / w.abs().sum((1, 2, 3)).clamp_min(1e-300)


def filter_smoothness(model: nn.Module) -> SmoothnessResult:
    """Total variation of each conv filter's neighbouring spatial weights over its L1 norm.

    For a filter ``w`` (in, kh, kw): ``(Σ|w[:, i+1, j] - w[:, i, j]| + Σ|w[:, i, j+1] - w[:, i, j]|) / Σ|w|``
    (lower = smoother; 0 for a constant filter). Convs with a 1x1 kernel are left out.

    Returns a :class:`SmoothnessResult`: ``layers`` {name: mean over filters}, ``mean`` over all filters,
    ``filters`` count.
    """
    per_layer: dict[str, float] = {}
    values = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and max(module.kernel_size) > 1:
            s = _smoothness(module.weight)
            per_layer[name] = float(s.mean())
            values.append(s)
    if not values:
        raise ValueError(f"{type(model).__name__} has no Conv2d with a spatial kernel (> 1x1)")
    every = torch.cat(values)
    return SmoothnessResult(layers=per_layer, mean=float(every.mean()), filters=int(every.numel()))


def _run_deformation(ctx: Context, model: Any) -> DeformationResult:
    keys = ("strengths", "grid", "layers", "bootstrap")
    return run_on_squares(ctx, model, "deformation", deformation_sensitivity, keys, seed=ctx.config["seed"])


def _headline_deformation(r: DeformationResult) -> str:
    return ", ".join(f"{k} {v.sensitivity[-1]:.3f}@C={r.strengths[-1]}" for k, v in r.layers.items())


def _rows_deformation(model: str, r: DeformationResult) -> Iterator[Row]:
    for layer, v in r.layers.items():
        for k, c in enumerate(r.strengths):
            yield {
                "model": model,
                "layer": layer,
                "C": c,
                "sensitivity": v.sensitivity[k],
                **ci_columns(v.ci95, k),
                "deformed": v.deformed[k],
                "pair": v.pair,
                "n": r.n,
                "pairs": r.pairs,
            }


def _run_smoothness(ctx: Context, model: Any) -> SmoothnessResult:
    return filter_smoothness(model.module)


def _headline_smoothness(r: SmoothnessResult) -> str:
    return f"mean TV/L1 {r.mean:.4f} over {r.filters} filters"


def _rows_smoothness(model: str, r: SmoothnessResult) -> Iterator[Row]:
    for layer, value in r.layers.items():
        yield {"model": model, "layer": layer, "tv_over_l1": value}


register(
    Metric(
        "deformation",
        _run_deformation,
        "classifier",
        headline=_headline_deformation,
        rows=_rows_deformation,
        plot=plot_deformation,
    )
)
register(
    Metric(
        "smoothness",
        _run_smoothness,
        "classifier",
        headline=_headline_smoothness,
        rows=_rows_smoothness,
        plot=plot_smoothness,
    )
)
