"""Confidence intervals used by the metrics (documented in docs/eval.md)."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator

import numpy as np

__all__ = ["Z95", "mean_ci", "quiet_nan", "wilson_interval"]

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion, as fractions in [0, 1].

    Unlike the normal (Wald) interval it stays inside [0, 1] and is sensible at 0% and 100%.
    ``n == 0`` gives ``(nan, nan)``.
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # the bounds are exactly 0 / 1 there
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def mean_ci(values: np.ndarray, axis: int = 0, z: float = Z95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and normal-approximation 95% interval (mean -/+ z * sd / sqrt(n)) along ``axis``.

    Values are per-image figures, so images are the independent units. One value gives a zero-width
    interval (no spread can be estimated); NaNs are ignored.
    """
    values = np.asarray(values, dtype=np.float64)
    n = np.sum(~np.isnan(values), axis=axis)
    with quiet_nan():
        mean = np.nanmean(values, axis=axis) if values.size else np.full(values.shape[1:], np.nan)
        sd = np.nanstd(values, axis=axis, ddof=1) if values.shape[axis] > 1 else np.zeros_like(mean)
    half = z * np.nan_to_num(sd) / np.sqrt(np.maximum(n, 1))
    return mean, mean - half, mean + half


@contextlib.contextmanager
def quiet_nan() -> Iterator[None]:
    """Silence numpy's 'mean of empty slice' warnings: all-NaN cells stay NaN on purpose."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
