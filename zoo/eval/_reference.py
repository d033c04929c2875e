"""Scores relative to a reference model (mCE of the corruptions, mFR/mT5D of the flips)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

Scores = dict[str, "float | None"]


def mean_defined(values: Mapping[str, float | None]) -> float | None:
    """The mean of the finite values that are not ``None`` (``None`` when there are none)."""
    vals = [v for v in values.values() if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def store_relative(
    result: dict[str, Any],
    reference: str,
    tables: Mapping[str, tuple[Scores, str]],
    note: tuple[str, str],
) -> None:
    """Write a model's scores relative to ``reference`` into its ``result``, in place.

    ``tables`` maps a key to ``(per-item scores, key of their mean)``: each table is stored with its
    mean over the defined items. Items where the first table is undefined (``None``) are named in
    ``result[note[0]]`` as ``f"{note[1]} {items}: left out of ..."`` (``note[1]`` holds ``{}`` for them).
    """
    result["reference_model"] = reference
    result.update({key: scores for key, (scores, _) in tables.items()})
    for scores, mean_key in tables.values():
        result[mean_key] = mean_defined(scores)
    first = next(iter(tables.values()))[0]
    undefined = sorted(k for k, v in first.items() if v is None)
    if undefined:
        result[note[0]] = note[1].format(", ".join(undefined))
