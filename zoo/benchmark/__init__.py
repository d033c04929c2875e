"""Side-by-side benchmark of anti-aliased models and blur layers (``zoo bench``, ``scripts/benchmark.py``).

Every implementation runs in ONE process with interleaved repeats; the figures are medians of
per-round (paired) ratios to a baseline, which cancels most of the drift of a shared machine.
"""

from zoo.benchmark.run import BenchConfig, run_benchmark

__all__ = ["BenchConfig", "run_benchmark"]
