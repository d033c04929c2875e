"""Perturbation stability (ImageNet-P protocol, Hendrycks & Dietterich, ICLR 2019), generated in memory.

Each image becomes one short sequence per perturbation type (:data:`PERTURBATIONS`). Flip
probability FP = mean over sequences of the fraction of frame pairs whose top-1 class differs:
each frame against the **first** frame for the noise types, against the **previous** frame for the
others. Top-5 distance T5D compares the top-5 rankings of the same pairs. FR / mFR and T5D / mT5D
are normalised by a reference model on the same sequences (:func:`normalise`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.distributed import gather_records
from zoo.eval._batches import evaluating, iter_batches, model_device, run_chunked
from zoo.eval._reference import mean_defined, undefined_note
from zoo.eval._seeding import image_rng
from zoo.eval.consistency import group_list
from zoo.eval.plots import plot_flip
from zoo.eval.registry import Context, Metric, Paired, register
from zoo.eval.results import OPTIONAL, PerImage, Result, optional_with
from zoo.stats import mean_ci, proportion_ci

__all__ = ["NOISE", "PERTURBATIONS", "FlipResult", "flip_rates", "make_sequence", "normalise", "top5_distance"]

PERTURBATIONS = ("translate", "gaussian_noise", "shot_noise", "gaussian_blur", "brightness", "scale")
NOISE = ("gaussian_noise", "shot_noise")  # compared with the first frame


@dataclass(kw_only=True)
class FlipResult(Result):
    """:func:`flip_rates`, per perturbation type; the relative scores are set by :func:`normalise`."""

    fp: dict[str, float]
    fp_ci95: dict[str, list[float]]
    t5d: dict[str, float]
    t5d_ci95: dict[str, list[float]]
    comparison: dict[str, str]  # "first" | "consecutive"
    n: int
    n_eff: int
    frames: int
    size: int | None
    perturbations: list[str]
    per_image: PerImage  # index, fp (mean over types)
    reference_model: str | None = field(default=None, metadata=OPTIONAL)
    fr: dict[str, float | None] | None = field(default=None, metadata=optional_with("reference_model"))
    t5d_ratio: dict[str, float | None] | None = field(default=None, metadata=optional_with("reference_model"))
    mfr: float | None = field(default=None, metadata=optional_with("reference_model"))
    mt5d: float | None = field(default=None, metadata=optional_with("reference_model"))
    mfr_note: str | None = field(default=None, metadata=OPTIONAL)


def _blur(x: Tensor, sigma: float) -> Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[0]
    y = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


def _zoom(x: Tensor, factor: float) -> Tensor:
    theta = torch.tensor([[1 / factor, 0, 0], [0, 1 / factor, 0]], dtype=x.dtype)[None]
    grid = F.affine_grid(theta, [1, *x.shape], align_corners=False)
    return F.grid_sample(x[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]


def make_sequence(image: Tensor, kind: str, frames: int, size: int, rng: np.random.Generator) -> Tensor:
    """The ``frames`` x (C, size, size) sequence of one unnormalised image (C, H, W) in [0, 1].

    - ``translate``: a ``size`` window moves 1 px per frame, in one seeded direction (right, left,
      down or up), inside the image (needs ``H, W >= size + frames - 1``);
    - ``gaussian_noise``: the centre crop plus fresh N(0, 0.05²) noise in every frame;
    - ``shot_noise``: Poisson noise with 60 photons per unit intensity, fresh in every frame;
    - ``gaussian_blur``: Gaussian blur whose sigma grows linearly from 0.4 to 1.6 px;
    - ``brightness``: HSV value raised by 0 .. 0.3 (hue and saturation kept);
    - ``scale``: zoom into the centre by a factor growing linearly from 1 to 1.25.
    """
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; valid: {', '.join(PERTURBATIONS)}")
    if frames < 2:
        raise ValueError(f"need at least 2 frames, got {frames}")
    h, w = image.shape[-2:]
    if kind == "translate":
        if min(h, w) < size + frames - 1:
            raise ValueError(f"translate: a {size} px window moved {frames - 1} px does not fit a {h}x{w} image")
        direction = int(rng.integers(4))  # right, left, down, up
        span = frames - 1
        out = []
        for t in range(frames):
            pos = t if direction in (0, 2) else span - t
            top, left = ((h - size) // 2, pos) if direction < 2 else (pos, (w - size) // 2)
            out.append(image[:, top : top + size, left : left + size])
        return torch.stack(out)
    top, left = (h - size) // 2, (w - size) // 2
    base = image[:, top : top + size, left : left + size]
    ts = np.linspace(0.0, 1.0, frames)
    if kind == "gaussian_noise":
        noise = torch.from_numpy(rng.normal(0.0, 0.05, size=(frames, *base.shape))).to(base.dtype)
        return (base[None] + noise).clamp(0, 1)
    if kind == "shot_noise":
        lam = 60.0
        counts = rng.poisson(base.double().numpy()[None] * lam, size=(frames, *base.shape))
        return torch.from_numpy(counts / lam).to(base.dtype).clamp(0, 1)
    if kind == "gaussian_blur":
        return torch.stack([_blur(base, 0.4 + 1.2 * t) for t in ts])
    if kind == "brightness":
        value = base.max(dim=0, keepdim=True).values
        return torch.stack([base * ((value + 0.3 * t).clamp(0, 1) / value.clamp_min(1e-6)) for t in ts]).clamp(0, 1)
    return torch.stack([_zoom(base, 1.0 + 0.25 * t) for t in ts])


def top5_distance(first: Tensor, second: Tensor) -> float:
    """ImageNet-P's top-5 distance between the class rankings of two frames (logits or probabilities).

    With ``r_i`` the 0-based rank in ``second`` of the i-th ranked class of ``first`` (i = 0..4):
    ``sum_i |i - min(r_i, 5)|`` (0 when the top-5 lists are identical and in the same order).
    """
    order1 = first.argsort(descending=True)[:5]
    rank2 = torch.empty_like(second, dtype=torch.long)
    rank2[second.argsort(descending=True)] = torch.arange(second.numel(), device=second.device)
    r = rank2[order1].clamp(max=5).cpu().numpy()
    return float(np.abs(np.arange(len(r)) - r).sum())


def flip_rates(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    perturbations: Sequence[str] = PERTURBATIONS,
    frames: int = 10,
    size: int | None = None,
    seed: int = 0,
    groups: Mapping[int, Hashable] | None = None,
    chunk: int = 64,
    device: str | torch.device | None = None,
) -> FlipResult:
    """Flip probability and top-5 distance of ``model`` per perturbation type.

    ``batches`` yields **unnormalised** images in [0, 1]; ``size`` is the network input (default: the
    image size minus ``frames - 1``, the room translation needs).

    Returns a :class:`FlipResult`: ``fp`` {type: FP}, ``fp_ci95`` {type: [low, high]} (Wilson on pooled
    frame pairs, cluster design effect), ``t5d`` {type: mean T5D}, ``t5d_ci95``, ``comparison`` {type:
    "first" | "consecutive"}, ``n``, ``n_eff``, ``frames``, ``size``, ``per_image`` (``index``, ``fp``: mean
    FP over types). FR / mFR and mT5D are added by :func:`normalise`.
    """
    bad = [p for p in perturbations if p not in PERTURBATIONS]
    if bad or not perturbations:
        raise ValueError(f"unknown perturbation(s) {bad}; valid: {', '.join(PERTURBATIONS)}")
    dev = model_device(model, device)
    m = torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
    records: dict[int, np.ndarray] = {}
    with evaluating(model, dev):
        for images, _labels, indices in iter_batches(batches, dev):
            if float(images.min()) < -1e-6 or float(images.max()) > 1 + 1e-6:
                raise ValueError("flip_rates needs unnormalised images in [0, 1]")
            for image, index in zip(images.cpu(), indices.tolist()):
                side = size or min(image.shape[-2:]) - frames + 1
                row = np.zeros((len(perturbations), 2))
                for j, kind in enumerate(perturbations):
                    rng = image_rng(seed, f"flip/{kind}", index)
                    seq = make_sequence(image.float(), kind, frames, side, rng)
                    logits = run_chunked(model, ((seq - m) / s).to(dev), chunk)
                    pairs = (
                        [(0, t) for t in range(1, frames)] if kind in NOISE else [(t - 1, t) for t in range(1, frames)]
                    )
                    top1 = logits.argmax(1)
                    row[j, 0] = float(np.mean([int(top1[a] != top1[b]) for a, b in pairs]))
                    row[j, 1] = float(np.mean([top5_distance(logits[a], logits[b]) for a, b in pairs]))
                records[index] = row
    records = gather_records(records)
    index = list(records)
    if not index:
        raise ValueError("no images for the flip metric")
    clusters = group_list(groups, index)
    table = np.stack(list(records.values()))  # (n, P, 2)
    fp, fp_ci, t5, t5_ci = {}, {}, {}, {}
    for j, kind in enumerate(perturbations):
        prop = proportion_ci(table[:, j, 0] * (frames - 1), np.full(len(index), frames - 1.0), clusters)
        fp[kind], fp_ci[kind] = prop["p"], prop["ci95"]
        mu, lo, hi = mean_ci(table[:, j, 1], groups=clusters)
        t5[kind], t5_ci[kind] = float(mu), [float(lo), float(hi)]
    return FlipResult(
        fp=fp,
        fp_ci95=fp_ci,
        t5d=t5,
        t5d_ci95=t5_ci,
        comparison={k: "first" if k in NOISE else "consecutive" for k in perturbations},
        n=len(index),
        n_eff=len(set(clusters or index)),
        frames=frames,
        size=size,
        perturbations=list(perturbations),
        per_image={"index": index, "fp": table[:, :, 0].mean(1).tolist()},
    )


def normalise(by_model: dict[str, FlipResult], reference: str | None) -> None:
    """Add FR, mFR, T5D ratio and mT5D (percent; 100 = the reference model) in place.

    ``reference``: a model name (default: the first model). A type on which the reference never
    flips has no FR (``None``) and is left out of the means (listed in ``mfr_note``).
    """
    if not by_model:
        return
    ref_name = reference or next(iter(by_model))
    if ref_name not in by_model:
        raise ValueError(f"flip.reference {ref_name!r} is not an evaluated model; valid: {', '.join(by_model)}")
    ref = by_model[ref_name]
    for r in by_model.values():
        r.reference_model = ref_name
        r.fr = {k: (100.0 * v / ref.fp[k] if ref.fp.get(k) else None) for k, v in r.fp.items()}
        r.t5d_ratio = {k: (100.0 * v / ref.t5d[k] if ref.t5d.get(k) else None) for k, v in r.t5d.items()}
        r.mfr, r.mt5d = mean_defined(r.fr), mean_defined(r.t5d_ratio)
        r.mfr_note = undefined_note(r.fr, "the reference never flips on {}: left out of mFR")


def _run(ctx: Context, model: Any) -> FlipResult:
    cfg = ctx.config["flip"]
    side = cfg["size"] + cfg["frames"] - 1  # room for the translation
    batches = ctx.batches(model, side, side, "flip", "flip", normalize=False)
    return flip_rates(
        model.module,
        batches,
        mean=model.mean,
        std=model.std,
        perturbations=cfg["perturbations"],
        frames=cfg["frames"],
        size=cfg["size"],
        seed=ctx.config["seed"],
        groups=ctx.groups("flip"),
        device=ctx.device,
    )


def _finalize(by_model: dict[str, FlipResult], config: dict[str, Any]) -> None:
    normalise(by_model, config["flip"]["reference"])


def _headline(r: FlipResult) -> str:
    mfr = "n/a" if r.mfr is None else f"{r.mfr:.1f}"
    mt5 = "n/a" if r.mt5d is None else f"{r.mt5d:.1f}"
    fps = ", ".join(f"{k} {v:.3f}" for k, v in r.fp.items())
    return f"mFR {mfr}, mT5D {mt5} (100 = {r.reference_model or '?'}); FP {fps} (n={r.n})"


def _paired(r: FlipResult) -> Paired:
    return {"flip probability (mean over types)": ("continuous", dict(zip(r.per_image["index"], r.per_image["fp"])))}


def _rows(model: str, r: FlipResult) -> Iterator[dict[str, Any]]:
    for k in r.perturbations:
        yield {
            "model": model,
            "perturbation": k,
            "comparison": r.comparison[k],
            "fp": r.fp[k],
            "fp_ci95_low": r.fp_ci95[k][0],
            "fp_ci95_high": r.fp_ci95[k][1],
            "t5d": r.t5d[k],
            "fr": (r.fr or {}).get(k),
            "t5d_ratio": (r.t5d_ratio or {}).get(k),
            "reference_model": r.reference_model,
            "n": r.n,
            "frames": r.frames,
        }


register(
    Metric(
        "flip", _run, "classifier", headline=_headline, rows=_rows, plot=plot_flip, finalize=_finalize, paired=_paired
    )
)
