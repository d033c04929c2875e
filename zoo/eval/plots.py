"""PNG figures of evaluation results (matplotlib, Agg backend; files written atomically)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from zoo.io import atomic_path

if TYPE_CHECKING:  # the records, for the annotations (the metric modules import this one to plot)
    from zoo.eval.clean import CleanResult
    from zoo.eval.compare import PairComparison
    from zoo.eval.consistency import ConsistencyResult, DiagonalResult
    from zoo.eval.corruptions import CorruptionResult
    from zoo.eval.deformation import DeformationResult, SmoothnessResult
    from zoo.eval.features import FeatureResult
    from zoo.eval.flip import FlipResult
    from zoo.eval.sensitivity import SensitivityResult

__all__ = [
    "plot_clean",
    "plot_comparison",
    "plot_consistency",
    "plot_corruptions",
    "plot_deformation",
    "plot_diagonal",
    "plot_features",
    "plot_flip",
    "plot_sensitivity",
    "plot_smoothness",
]

R = TypeVar("R")
Results = dict[str, R]  # model name -> metric result


def _save(fig: plt.Figure, path: Path) -> Path:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def plot_consistency(results: Results[Mapping[str, ConsistencyResult]], path: Path) -> Path:
    """Grouped bars: consistency (%) per model and protocol, with the 95% Wilson interval."""
    models = list(results)
    protocols = sorted({p for r in results.values() for p in r})
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(models) * len(protocols)), 3.6))
    width = 0.8 / max(1, len(protocols))
    for j, proto in enumerate(protocols):
        xs, ys, errs = [], [], [[], []]
        for i, m in enumerate(models):
            r = results[m].get(proto)
            if r is None:
                continue
            xs.append(i + (j - (len(protocols) - 1) / 2) * width)
            ys.append(r.consistency)
            errs[0].append(r.consistency - r.ci95[0])
            errs[1].append(r.ci95[1] - r.consistency)
        bars = ax.bar(xs, ys, width, yerr=errs, capsize=4, label=proto)
        ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=8)
    ax.set_xticks(range(len(models)), models, rotation=15)
    ax.set_ylabel("consistency (%)")
    low = min((v.ci95[0] for r in results.values() for v in r.values()), default=0.0)
    ax.set_ylim(max(0.0, low - 10), 105)
    first = next((v for r in results.values() for v in r.values()), None)
    n, n_eff = (first.n, first.n_eff) if first is not None else (0, 0)
    ax.set_title(f"Shift consistency (95% Wilson interval, n={n} images of {n_eff} photos)", fontsize=10)
    ax.legend(title="protocol")
    return _save(fig, path)


def plot_diagonal(results: Results[DiagonalResult], path: Path) -> Path:
    """P(reference class) vs diagonal shift, one line per model with its 95% band."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for m, r in results.items():
        ax.plot(r.shifts, r.prob, marker=".", label=m)
        ax.fill_between(r.shifts, r.prob_ci95[0], r.prob_ci95[1], alpha=0.2)
    ref = next((r.reference for r in results.values()), "")
    ax.set_xlabel("diagonal shift d (pixels)")
    ax.set_ylabel("P(correct class)" if ref == "label" else "P(class at d = 0)")
    ax.set_title("Diagonal shift")
    ax.legend()
    return _save(fig, path)


def plot_features(results: Results[FeatureResult], path: Path) -> Path:
    """Grid of heat-maps: one row per model, one column per layer, colour = 1 - cosine similarity."""
    models = list(results)
    ncols = max(len(r.layers) for r in results.values())
    fig, axes = plt.subplots(len(models), ncols, figsize=(2.2 * ncols, 2.2 * len(models)), squeeze=False)
    vmax = max(
        (np.nanmax(np.array(v.heatmap, dtype=float)) for r in results.values() for v in r.layers.values()),
        default=1.0,
    )
    image = None
    for i, m in enumerate(models):
        for j in range(ncols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            layers = list(results[m].layers.items())
            if j >= len(layers):
                ax.axis("off")
                continue
            name, v = layers[j]
            heat = np.array(v.heatmap, dtype=float)
            image = ax.imshow(heat, cmap="magma", vmin=0.0, vmax=max(vmax, 1e-12))
            on = "n/a" if v.mean is None else f"{v.mean:.3f}"
            ax.set_title(f"{name} (s={v.stride})\non-grid {on}", fontsize=7)
            if j == 0:
                ax.set_ylabel(m, fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="feature distance")
    fig.suptitle(
        "Internal feature distance over shifts (Δh down, Δw across); cells off a layer's stride grid are the "
        "Fourier extension, 'on-grid' is Zhang's figure",
        fontsize=8,
    )
    return _save(fig, path)


def plot_sensitivity(results: Results[Mapping[str, SensitivityResult]], path: Path) -> Path:
    """Left: P(top-1 change) per protocol / embedding size, bars per model with 95% intervals.
    Right: the embedding-size sweep, P(top-1 change) vs embedded image size per protocol and model."""
    models = list(results)
    settings = list(dict.fromkeys(k for r in results.values() for k in r))
    fig, (ax, sweep) = plt.subplots(
        1,
        2,
        figsize=(min(12.0, max(6.0, 0.45 * len(settings) * len(models))) + 4, 3.8),
        gridspec_kw={"width_ratios": [2.5, 1]},
    )
    width = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        xs = [k + (i - (len(models) - 1) / 2) * width for k in range(len(settings))]
        rs = [results[m].get(s) for s in settings]
        ys = [r.p_change if r else np.nan for r in rs]
        err = [
            [y - r.p_change_ci95[0] if r else 0 for y, r in zip(ys, rs)],
            [r.p_change_ci95[1] - y if r else 0 for y, r in zip(ys, rs)],
        ]
        ax.bar(xs, ys, width, yerr=err, capsize=3, label=m)
        for j, proto in enumerate(dict.fromkeys(r.protocol for r in results[m].values() if r.embed_size)):
            pts = sorted((r.embed_size, r.p_change) for r in results[m].values() if r.protocol == proto)
            sweep.plot(*zip(*pts), marker="o", linestyle="-:"[i % 2], color=f"C{j}", label=f"{m} {proto}")
    ax.set_xticks(range(len(settings)), settings, rotation=30, fontsize=7)
    ax.set_ylabel("P(top-1 change)")
    ax.set_title("1-pixel shift sensitivity (Azulay & Weiss; 95% Wilson)")
    ax.legend()
    sweep.set_xlabel("embedded image size (px)")
    sweep.set_title("embedding-size sweep", fontsize=9)
    sweep.legend(fontsize=6)
    return _save(fig, path)


def plot_deformation(results: Results[DeformationResult], path: Path) -> Path:
    """Sensitivity vs deformation strength C: one panel per layer, one line per model (bootstrap band)."""
    layers = list(dict.fromkeys(k for r in results.values() for k in r.layers))
    fig, axes = plt.subplots(1, len(layers), figsize=(2.6 * len(layers), 2.8), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        for m, r in results.items():
            v = r.layers.get(layer)
            if v is None:
                continue
            ax.plot(r.strengths, v.sensitivity, marker="o", label=m)
            ax.fill_between(r.strengths, v.ci95[0], v.ci95[1], alpha=0.2)
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel("C (pixels)")
    axes[0][0].set_ylabel("sensitivity")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("Deformation sensitivity (Ruderman et al.)", y=1.05)
    return _save(fig, path)


def plot_smoothness(results: Results[SmoothnessResult], path: Path) -> Path:
    """Mean filter total variation (normalised) per model."""
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(results)), 3.2))
    bars = ax.bar(list(results), [r.mean for r in results.values()])
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_ylabel("TV / L1 (lower = smoother)")
    ax.set_title("Filter smoothness")
    return _save(fig, path)


def plot_clean(results: Results[CleanResult], path: Path) -> Path:
    """Top-1 / top-5 clean accuracy per model with Wilson intervals (a note when unlabelled)."""
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(results)), 3.4))
    models = list(results)
    labelled = [m for m in models if results[m].top1 is not None]
    for j, key in enumerate(("top1", "top5")):
        xs = [i + (j - 0.5) * 0.4 for i, m in enumerate(models) if m in labelled]
        acc = [(r.top1, r.top1_ci95) if key == "top1" else (r.top5, r.top5_ci95) for r in map(results.get, labelled)]
        ys = [y for y, _ in acc]
        err = [[y - ci[0] for y, ci in acc], [ci[1] - y for y, ci in acc]]
        ax.bar(xs, ys, 0.4, yerr=err, capsize=3, label=key)
    if not labelled:
        ax.text(0.5, 0.5, "no labels: clean accuracy undefined", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks(range(len(models)), models, rotation=15)
    ax.set_xlim(-0.6, len(models) - 0.4)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Clean accuracy (unshifted centre crop, 95% Wilson)")
    if labelled:
        ax.legend()
    return _save(fig, path)


def plot_corruptions(results: Results[CorruptionResult], path: Path) -> Path:
    """Left: error vs severity per corruption (one line per model); right: CE per corruption."""
    first = next(iter(results.values()))
    names = first.corruptions
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1, 1.3]})
    ax = axes[0]
    for m, r in results.items():
        errs = np.array([r.errors[c] for c in names], dtype=float)  # (C, S)
        ax.plot(r.severities, errs.mean(0), marker="o", label=f"{m} (mean over corruptions)")
        ax.axhline(r.clean_error, linestyle=":", color=ax.lines[-1].get_color())
    ax.set_xlabel("severity")
    ax.set_ylabel("error" if first.reference == "label" else "change of the clean top-1")
    ax.set_xticks(first.severities)
    ax.set_title(f"Corruption error (dotted: clean; n={first.n}, {first.n_eff} photos)", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    width = 0.8 / max(1, len(results))
    for i, (m, r) in enumerate(results.items()):
        ce = [(r.ce or {}).get(c) for c in names]
        ys = [v if v is not None else np.nan for v in ce]
        ax.bar(np.arange(len(names)) + (i - (len(results) - 1) / 2) * width, ys, width,
               label=f"{m}: mCE {r.mce or float('nan'):.1f}")  # fmt: skip
    ax.axhline(100, color="grey", linewidth=0.8)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(f"CE (% of {first.reference_model or 'reference'})")
    ax.set_title("Corruption error normalised by the reference model", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_flip(results: Results[FlipResult], path: Path) -> Path:
    """Flip probability per perturbation type (bars per model, Wilson intervals); mFR / mT5D in the legend."""
    first = next(iter(results.values()))
    kinds = first.perturbations
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(kinds) * len(results)), 3.6))
    width = 0.8 / max(1, len(results))
    for i, (m, r) in enumerate(results.items()):
        ys = [r.fp[k] for k in kinds]
        err = [[y - r.fp_ci95[k][0] for y, k in zip(ys, kinds)], [r.fp_ci95[k][1] - y for y, k in zip(ys, kinds)]]
        mfr, mt5 = r.mfr, r.mt5d
        label = f"{m}: mFR {mfr:.1f}, mT5D {mt5:.1f}" if mfr is not None and mt5 is not None else m
        ax.bar(np.arange(len(kinds)) + (i - (len(results) - 1) / 2) * width, ys, width, yerr=err, capsize=3,
               label=label)  # fmt: skip
    ax.set_xticks(range(len(kinds)), [f"{k}\n({first.comparison[k]})" for k in kinds], fontsize=7)
    ax.set_ylabel("flip probability")
    ax.set_title(
        f"Perturbation stability (ImageNet-P protocol, {first.frames} frames, n={first.n} images of "
        f"{first.n_eff} photos; 95% Wilson)"
    )
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_comparison(comparison: dict[str, dict[str, PairComparison]], path: Path) -> Path:
    """Paired differences B - A with 95% intervals, one row per (pair, quantity)."""
    rows = [(pair, label, v) for pair, items in comparison.items() for label, v in items.items()]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    for k, (_pair, _label, v) in enumerate(rows):
        lo, hi = v.ci95
        ax.plot([lo, hi], [k, k], color="C0")
        ax.plot([v.diff], [k], "o", color="C0")
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [f"{pair}: {label} (p={v.p:.3g})" for pair, label, v in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("difference B - A (95% paired interval)")
    ax.set_title("Paired comparison of models")
    return _save(fig, path)
