"""Scores relative to a reference model (mCE of the corruptions, mFR/mT5D of the flips)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

Scores = dict[str, "float | None"]


def mean_defined(values: Mapping[str, float | None]) -> float | None:
    """The mean of the finite values that are not ``None`` (``None`` when there are none)."""
    vals = [v for v in values.values() if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def undefined_note(scores: Mapping[str, float | None], template: str) -> str | None:
    """``template`` (holding ``{}``) filled with the items whose score is ``None``; ``None`` when every
    item has a score (the note of the items left out of the mean)."""
    undefined = sorted(k for k, v in scores.items() if v is None)
    return template.format(", ".join(undefined)) if undefined else None
