"""Generation stability of image-to-image models: PSNR between shift(G(x)) and G(shift(x))."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.distributed import gather_records
from zoo.eval._batches import evaluating, iter_batches, model_device
from zoo.eval._seeding import image_rng
from zoo.eval.results import OPTIONAL, Result
from zoo.stats import mean_ci

__all__ = ["GenerationResult", "generation_stability", "psnr"]


@dataclass(kw_only=True)
class GenerationResult(Result):
    """:func:`generation_stability` (PSNR in dB, ``inf`` when exact)."""

    psnr: float
    psnr_mean: float
    mse: float
    mse_ci95: list[float]
    exact: int
    n: int
    max_shift: int
    data_range: float
    input_range: list[float] | None = field(
        default=None, metadata=OPTIONAL
    )  # the generator's pixel range (set by ``zoo eval``)


def psnr(mse: float, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` for a zero error."""
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def generation_stability(
    generator: nn.Module,
    batches: Iterable[Any],
    *,
    max_shift: int = 8,
    data_range: float = 1.0,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> GenerationResult:
    """How well an image-to-image model ``G`` commutes with circular shifts.

    Each image gets one seeded offset (dh, dw) in [-max_shift, max_shift)²; the error is the mean
    squared difference between ``roll(G(x), (dh, dw))`` and ``G(roll(x, (dh, dw)))`` (outputs must have
    the input's spatial size). ``data_range`` is the peak-to-peak range of G's output pixels.

    Returns a :class:`GenerationResult`: ``psnr`` dB from the mean MSE over images (inf when exact),
    ``psnr_mean`` mean of the finite per-image PSNRs, ``mse`` mean, ``mse_ci95`` [low, high], ``exact``
    images with zero error, ``n`` images.
    """
    if data_range <= 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    if not isinstance(max_shift, int) or max_shift < 1:
        raise ValueError(f"max_shift must be an int >= 1, got {max_shift!r}")
    dev = model_device(generator, device)
    records: dict[int, float] = {}
    with evaluating(generator, dev):
        for images, _labels, indices in iter_batches(batches, dev):
            offsets = [
                tuple(int(v) for v in image_rng(seed, "generation", int(i)).integers(-max_shift, max_shift, 2))
                for i in indices
            ]
            shifted = torch.stack([torch.roll(x, s, dims=(-2, -1)) for x, s in zip(images, offsets)])
            out, out_shifted = generator(images), generator(shifted)
            if out.shape[-2:] != images.shape[-2:]:
                raise ValueError(
                    f"generator output {tuple(out.shape[-2:])} must have the input's spatial size "
                    f"{tuple(images.shape[-2:])} to compare shifts"
                )
            for k, (index, s) in enumerate(zip(indices.tolist(), offsets)):
                diff = torch.roll(out[k], s, dims=(-2, -1)).double() - out_shifted[k].double()
                records[index] = float(diff.pow(2).mean())
    records = gather_records(records)
    mse = np.array(list(records.values()), dtype=np.float64)
    mean, low, high = mean_ci(mse)
    finite = [psnr(m, data_range) for m in mse if m > 0]
    return GenerationResult(
        psnr=psnr(float(mean), data_range) if len(mse) else math.nan,
        psnr_mean=float(np.mean(finite)) if finite else math.inf,
        mse=float(mean),
        mse_ci95=[float(low), float(high)],
        exact=int((mse == 0).sum()),
        n=len(mse),
        max_shift=max_shift,
        data_range=data_range,
    )
