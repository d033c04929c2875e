"""Interleaved, paired timing: each round runs every candidate once, in a rotating order."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

from tqdm import tqdm


def time_interleaved(
    fns: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    desc: str = "",
    sync: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each function, ``repeats`` rounds after ``warmup`` untimed rounds.

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called before starting and stopping each clock.
    """
    sync = sync or (lambda: None)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in tqdm(range(repeats), desc=desc or "timing", leave=False):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            sync()
            start = time.perf_counter()
            fns[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def paired_summary(times: Mapping[str, list[float]], baseline: str) -> dict[str, dict[str, float]]:
    """Median milliseconds and median of per-round ratios to ``baseline`` for every candidate."""
    if baseline not in times:
        raise KeyError(f"baseline {baseline!r} not among {sorted(times)}")
    base = times[baseline]
    return {
        name: {
            "median_ms": statistics.median(ts) * 1e3,
            "ratio": statistics.median(t / b for t, b in zip(ts, base)),
        }
        for name, ts in times.items()
    }
