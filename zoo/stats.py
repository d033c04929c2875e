"""Confidence intervals and paired tests, used by evaluation (docs/eval.md) and fine-tuning (docs/finetune.md).

Across seeds: Student-t intervals (:func:`t_interval`) and the paired t test (:func:`paired_t`).
Per image: images that are views of one photo are not independent, so the functions below take optional
``groups`` (one cluster label per value, e.g. the source photo). Means are then Student-t intervals over
the cluster means (effective sample size = number of clusters), proportions a Wilson interval on the
pooled trials deflated by the design effect, bootstraps resample clusters.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "Z95",
    "cluster_index",
    "mcnemar_exact",
    "mean_ci",
    "paired_bootstrap",
    "paired_t",
    "proportion_ci",
    "quiet_nan",
    "t_interval",
    "wilson_interval",
]

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion, as fractions in [0, 1].

    Unlike the normal (Wald) interval it stays inside [0, 1] and is sensible at 0% and 100% (0 of n
    gives [0, z²/(n + z²)], never [0, 0]). ``n == 0`` gives ``(nan, nan)``. ``successes`` and ``n`` may
    be fractional (an effective sample size).
    """
    if n < 0 or successes < 0 or successes > n + 1e-9:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    p = min(1.0, successes / n)
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if p <= 0 else max(0.0, centre - half)  # the bounds are exactly 0 / 1 there
    high = 1.0 if p >= 1 else min(1.0, centre + half)
    return (low, high)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean of ``values`` with its two-sided Student-t interval (``n - 1`` degrees of freedom).

    ``{"mean", "low", "high", "sd", "n"}``; with one value the interval is undefined (``None``).
    """
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "low": None, "high": None, "sd": None, "n": 1}
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "sd": sd, "n": n}


def paired_t(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Paired t test of ``x - y`` (e.g. anti-aliased minus baseline, one pair per seed).

    ``{"diff", "low", "high", "t", "p", "n"}``: the mean difference, its Student-t interval, the t
    statistic and the two-sided p-value. With one pair, or identical differences, ``t``/``p`` are
    ``None`` unless every difference is 0 (``p`` = 1) or they are identical and non-zero (``p`` = 0).
    """
    d = np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    if len(d) != len(np.asarray(y)):
        raise ValueError(f"paired_t needs pairs: got {len(d)} and {len(np.asarray(y))} values")
    ci = t_interval(d, confidence)
    out = {"diff": ci["mean"], "low": ci["low"], "high": ci["high"], "t": None, "p": None, "n": ci["n"]}
    if ci["n"] < 2:
        return out
    if ci["sd"] == 0.0:
        out["p"] = 1.0 if ci["mean"] == 0.0 else 0.0
        return out
    t = ci["mean"] / (ci["sd"] / math.sqrt(ci["n"]))
    out["t"], out["p"] = float(t), float(2.0 * stats.t.sf(abs(t), ci["n"] - 1))
    return out


def cluster_index(groups: Sequence[Hashable] | None, n: int) -> np.ndarray:
    """Integer cluster ids 0..G-1 for ``n`` values (each value its own cluster when ``groups`` is None)."""
    if groups is None:
        return np.arange(n)
    if len(groups) != n:
        raise ValueError(f"{len(groups)} group labels for {n} values")
    _, ids = np.unique(np.array([str(g) for g in groups]), return_inverse=True)
    return ids.reshape(-1)


def mean_ci(
    values: np.ndarray, axis: int = 0, groups: Sequence[Hashable] | None = None, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and Student-t interval along ``axis`` (axis 0 only when ``groups`` is given).

    Without ``groups`` each value is one observation: mean -/+ t(n-1) * sd / sqrt(n). With ``groups``
    the values are averaged per cluster first and the interval is over the G cluster means (t with
    G-1 degrees of freedom); the mean is still the mean over all values. Fewer than two observations
    give a NaN interval (no spread can be estimated); NaNs are ignored.
    """
    values = np.asarray(values, dtype=np.float64)
    with quiet_nan():
        mean = np.nanmean(values, axis=axis) if values.size else np.full(values.shape[1:], np.nan)
        if groups is not None:
            if axis != 0:
                raise ValueError("groups need axis=0")
            ids = cluster_index(groups, values.shape[0])
            units = _cluster_means(values, ids) if len(ids) else values
        else:
            units = np.moveaxis(values, axis, 0)
        n = np.sum(~np.isnan(units), axis=0)
        sd = np.nanstd(units, axis=0, ddof=1) if units.shape[0] > 1 else np.full(units.shape[1:], np.nan)
    t = stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1))
    half = np.where(n > 1, t * sd / np.sqrt(np.maximum(n, 1)), np.nan)
    return mean, mean - half, mean + half


def _cluster_means(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """NaN-ignoring mean of ``values`` (n, ...) per cluster id 0..G-1 (vectorised)."""
    flat = values.reshape(len(values), -1)
    ok = ~np.isnan(flat)
    sums = np.zeros((ids.max() + 1, flat.shape[1]))
    counts = np.zeros_like(sums)
    np.add.at(sums, ids, np.where(ok, flat, 0.0))
    np.add.at(counts, ids, ok)
    with quiet_nan():
        return (sums / counts).reshape(-1, *values.shape[1:])


def proportion_ci(
    successes: Sequence[float], trials: Sequence[float], groups: Sequence[Hashable] | None = None
) -> dict[str, Any]:
    """Pooled proportion sum(successes) / sum(trials) with a Wilson interval that respects clusters.

    Per unit (image) ``successes[i]`` of ``trials[i]``. With ``groups``, the cluster-robust variance of
    the ratio estimator gives a design effect ``deff`` (>= 1); the Wilson interval uses the effective
    number of trials ``N / deff``. An all-zero sample gives [0, upper > 0], never [0, 0].

    Returns ``{"p", "ci95": [low, high], "trials", "n_eff", "deff"}`` (fractions).
    """
    s = np.asarray(successes, dtype=np.float64)
    t = np.asarray(trials, dtype=np.float64)
    total = float(t.sum())
    if total <= 0:
        return {"p": math.nan, "ci95": [math.nan, math.nan], "trials": 0, "n_eff": 0.0, "deff": math.nan}
    p = float(s.sum()) / total
    deff = 1.0
    if groups is not None:
        ids = cluster_index(groups, len(s))
        g = np.unique(ids)
        if len(g) > 1:
            res = np.bincount(ids, weights=s - p * t)
            var = len(g) / (len(g) - 1) * float((res**2).sum()) / total**2
            srs = p * (1 - p) / total
            deff = max(1.0, var / srs) if srs > 0 else 1.0
        else:
            deff = total  # one cluster: the trials carry the information of one
    n_eff = total / deff
    low, high = wilson_interval(p * n_eff, n_eff)
    return {"p": p, "ci95": [low, high], "trials": round(total), "n_eff": n_eff, "deff": deff}


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> dict[str, Any]:
    """McNemar's exact test of paired binary outcomes ``a`` (model A) and ``b`` (model B).

    Discordant pairs: ``a_only`` (A right, B wrong) and ``b_only``; p = two-sided binomial test of
    ``b_only`` out of ``a_only + b_only`` at 1/2 (1 when there are no discordant pairs).
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes must have the same length, got {a.shape} and {b.shape}")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    k = a_only + b_only
    p = 1.0 if k == 0 else min(1.0, 2.0 * float(stats.binom.cdf(min(a_only, b_only), k, 0.5)))
    return {"a_only": a_only, "b_only": b_only, "p": p}


def paired_bootstrap(
    diffs: np.ndarray, groups: Sequence[Hashable] | None = None, rounds: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Mean of per-image paired differences: percentile bootstrap interval resampling clusters, and the
    p-value of a sign-flip (randomisation) test over clusters.

    Under the null hypothesis of no difference each cluster's summed difference is equally likely to
    have either sign; p = P(|mean under random signs| >= |observed mean|), exact (all 2^G sign patterns)
    for G <= 12 clusters, else from ``rounds`` random patterns as (k + 1) / (rounds + 1). With G
    clusters p can be no smaller than 2 / 2^G, so few clusters cannot give a small p-value. Fewer
    than 2 clusters: NaN interval and p.
    """
    d = np.asarray(diffs, dtype=np.float64)
    keep = ~np.isnan(d)
    d = d[keep]
    ids = cluster_index([g for g, k in zip(groups, keep) if k] if groups is not None else None, len(d))
    mean = float(d.mean()) if len(d) else math.nan
    uniq = np.unique(ids)
    out: dict[str, Any] = {"diff": mean, "n": len(d), "n_eff": len(uniq)}
    if len(uniq) < 2 or rounds <= 0:
        return {**out, "ci95": [math.nan, math.nan], "p": math.nan}
    sums = np.bincount(ids, weights=d)
    counts = np.bincount(ids).astype(np.float64)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    g = len(uniq)
    step = max(1, 2_000_000 // g)  # bounded memory for large data sets
    boot = np.concatenate(
        [
            (lambda pick: sums[pick].sum(1) / counts[pick].sum(1))(rng.integers(0, g, size=(min(step, rounds - r), g)))
            for r in range(0, rounds, step)
        ]
    )
    low, high = np.quantile(boot, [0.025, 0.975])
    observed = abs(float(sums.sum()))
    if g <= 12:
        signs = 1 - 2 * ((np.arange(2**g)[:, None] >> np.arange(g)[None]) & 1)
        p = float((np.abs(signs @ sums) >= observed - 1e-12).mean())
    else:
        hits = sum(
            int((np.abs(rng.choice([-1.0, 1.0], size=(min(step, rounds - r), g)) @ sums) >= observed - 1e-12).sum())
            for r in range(0, rounds, step)
        )
        p = (hits + 1) / (rounds + 1)
    return {**out, "ci95": [float(low), float(high)], "p": min(1.0, p)}


@contextlib.contextmanager
def quiet_nan() -> Iterator[None]:
    """Silence numpy's 'mean of empty slice' warnings: all-NaN cells stay NaN on purpose."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
