"""Statistics of the twin comparison: Student-t intervals across seeds, the paired t test over seeds and
McNemar's exact test on pooled per-image outcomes.

Small on purpose (scipy's t and binomial distributions do the numerics); ``zoo.eval`` has its own
paired tests for evaluation runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["mcnemar_exact", "paired_t", "t_interval"]


def t_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean of ``values`` with its two-sided Student-t interval (``n - 1`` degrees of freedom).

    ``{"mean", "low", "high", "sd", "n"}``; with one value the interval is undefined (``None``).
    """
    from scipy import stats

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
    from scipy import stats

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


def mcnemar_exact(x_correct: Sequence[bool], y_correct: Sequence[bool]) -> dict[str, Any]:
    """McNemar's exact test on paired binary outcomes (the same items scored for two models).

    ``{"x_only", "y_only", "n", "p"}``: ``x_only`` items right for ``x`` only, ``y_only`` for ``y`` only,
    ``p`` the two-sided exact binomial p-value of the discordant pairs (1 when there are none).
    """
    from scipy import stats

    a, b = np.asarray(x_correct, dtype=bool), np.asarray(y_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mcnemar_exact needs paired outcomes: got {a.shape} and {b.shape}")
    x_only, y_only = int((a & ~b).sum()), int((~a & b).sum())
    discordant = x_only + y_only
    p = 1.0 if discordant == 0 else float(stats.binomtest(x_only, discordant, 0.5).pvalue)
    return {"x_only": x_only, "y_only": y_only, "n": int(a.size), "p": min(1.0, p)}
