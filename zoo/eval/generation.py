"""Generation stability of image-to-image models: PSNR between shift(G(x)) and G(shift(x))."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.distributed import gather_records
from zoo.eval._batches import evaluating, iter_batches, model_device
from zoo.eval._seeding import image_rng
from zoo.eval.registry import Context, Metric, register
from zoo.eval.report import Row, ci_columns
from zoo.eval.results import OPTIONAL, Result
from zoo.stats import mean_ci

__all__ = ["GenerationResult", "generation_stability", "generator_range", "psnr"]


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


def generator_range(cfg: dict[str, Any]) -> tuple[float, float, float]:
    """``(low, high, data_range)`` of a generator's pixels from ``generation.input_range`` / ``data_range``."""
    rng = cfg["input_range"]
    if not (isinstance(rng, (list, tuple)) and len(rng) == 2 and all(isinstance(v, (int, float)) for v in rng)):
        raise ValueError(f"generation.input_range must be [low, high], e.g. [-1, 1] or [0, 1], got {rng!r}")
    low, high = float(rng[0]), float(rng[1])
    if not high > low:
        raise ValueError(f"generation.input_range needs low < high, got {rng!r}")
    data_range = cfg["data_range"] if cfg["data_range"] is not None else high - low
    return low, high, float(data_range)


def _run(ctx: Context, model: Any) -> GenerationResult:
    cfg = ctx.config["generation"]
    low, high, data_range = generator_range(cfg)
    # pixels in [0, 1] -> (x - mean) / std in [low, high]
    model = copy.copy(model)
    model.mean, model.std = (-low / (high - low),) * 3, (1.0 / (high - low),) * 3
    batches = ctx.batches(model, cfg["size"], cfg["size"], "generation", "generation")
    out = generation_stability(
        model.module,
        batches,
        max_shift=cfg["max_shift"],
        data_range=data_range,
        seed=ctx.config["seed"],
        device=ctx.device,
    )
    out.input_range = [low, high]
    return out


def _headline(r: GenerationResult) -> str:
    return f"PSNR {r.psnr:.2f} dB (n={r.n})"


def _rows(model: str, r: GenerationResult) -> Iterator[Row]:
    yield {
        "model": model,
        "psnr": r.psnr,
        "psnr_mean": r.psnr_mean,
        "mse": r.mse,
        "exact": r.exact,
        "n": r.n,
        "max_shift": r.max_shift,
        **ci_columns(r.mse_ci95, prefix="mse_"),
    }


register(Metric("generation", _run, "generator", headline=_headline, rows=_rows))
