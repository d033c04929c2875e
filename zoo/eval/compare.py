"""Paired comparison of models evaluated on the same images and offsets.

For every pair (A, B) of models, in the order given, and every per-image quantity a metric exposes
(:attr:`zoo.eval.registry.Metric.paired`): the difference B - A of the means, a 95% paired
bootstrap interval (resampling clusters of images, i.e. photos) and a p-value: McNemar's exact test
for binary outcomes (consistency agreement, clean top-1), a sign-flip randomisation test over the
clusters for continuous ones. Differences are in the unit of the per-image values (fractions for
binary outcomes and flip probabilities, cosine distance for features).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from zoo.eval.results import OPTIONAL, Result
from zoo.stats import mcnemar_exact, paired_bootstrap

__all__ = ["PairComparison", "compare_models", "compare_pair"]


@dataclass(kw_only=True)
class PairComparison(Result):
    """B - A on one per-image quantity of two models: the means ``a`` and ``b``, their difference with its
    95% paired interval, and a test (``p``; ``a_only``/``b_only``: the discordant images of McNemar's test)."""

    a: float
    b: float
    diff: float
    ci95: list[float]
    n: int
    n_eff: int
    p: float
    test: str
    a_only: int | None = field(default=None, metadata=OPTIONAL)  # binary outcomes: discordant images (McNemar)
    b_only: int | None = field(default=None, metadata=OPTIONAL)
    note: str | None = field(default=None, metadata=OPTIONAL)


def compare_pair(
    a: dict[int, float],
    b: dict[int, float],
    kind: str,
    groups: Mapping[int, Hashable] | None = None,
    rounds: int = 2000,
    seed: int = 0,
) -> PairComparison:
    """B - A over the images both have (a :class:`PairComparison`)."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two models share no evaluated image: nothing to compare")
    va = np.array([a[i] for i in common], dtype=np.float64)
    vb = np.array([b[i] for i in common], dtype=np.float64)
    clusters = None if groups is None else [groups.get(i, i) for i in common]
    boot = paired_bootstrap(vb - va, clusters, rounds=rounds, seed=seed)
    out = PairComparison(
        a=float(np.nanmean(va)),
        b=float(np.nanmean(vb)),
        diff=boot["diff"],
        ci95=boot["ci95"],
        n=boot["n"],
        n_eff=boot["n_eff"],
        p=boot["p"],
        test="sign-flip test over photos",
    )
    if kind == "binary":
        test = mcnemar_exact(va > 0.5, vb > 0.5)
        out.p, out.test, out.a_only, out.b_only = test["p"], "McNemar exact", test["a_only"], test["b_only"]
    if out.n_eff < 10:
        out.note = f"only {out.n_eff} independent photos: the interval is rough"
    return out


def compare_models(
    per_model: dict[str, dict[str, tuple[str, dict[int, float]]]],
    groups: Mapping[int, Hashable] | None = None,
    rounds: int = 2000,
    seed: int = 0,
) -> dict[str, dict[str, PairComparison]]:
    """``{"B vs A": {quantity: compare_pair(...)}}`` for every pair of models (A before B in the input).

    ``per_model`` maps a model to ``{quantity: (kind, {image index: value})}``; a quantity is
    compared when both models have it.
    """
    out: dict[str, dict[str, PairComparison]] = {}
    for name_a, name_b in combinations(per_model, 2):
        qa, qb = per_model[name_a], per_model[name_b]
        items = {}
        for label in qa:
            if label in qb and qa[label][0] == qb[label][0]:
                items[label] = compare_pair(qa[label][1], qb[label][1], qa[label][0], groups, rounds, seed)
        if items:
            out[f"{name_b} vs {name_a}"] = items
    return out
