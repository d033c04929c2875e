"""Per-image random streams: results depend on (seed, metric, image index) only.

Every random choice a metric makes for an image (shift offsets, deformations, ...) comes from a
generator keyed by ``(seed, stream, global image index)``, so figures do not change with the batch
size, the number of data-loader workers or the number of processes.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["image_rng", "stream_id"]


def stream_id(name: str) -> int:
    """A stable integer for a metric name (CRC32, identical across runs and machines)."""
    return zlib.crc32(name.encode("utf-8"))


def image_rng(seed: int, stream: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` for metric ``stream`` under ``seed``."""
    if int(seed) < 0 or int(index) < 0:
        raise ValueError(f"seed and image index must be >= 0, got seed={seed}, index={index}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream_id(stream), int(index)]))
