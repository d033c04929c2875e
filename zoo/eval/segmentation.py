"""Dense evaluation of segmentation models: mIoU and dense shift consistency, with intervals and paired comparison.

* **mIoU**: the confusion matrix is summed over the data set; IoU_c = TP_c / (TP_c + FP_c + FN_c) for each class
  present in the masks or the predictions (union > 0), mIoU their mean. Pixels whose mask is ``ignore_index`` are
  not counted. The 95% interval resamples images (percentile bootstrap of the data-set mIoU, images as clusters),
  because mIoU is a ratio of sums and not a mean of per-image values.
* **Dense shift consistency** (the segmentation consistency of Rojas-Gomez et al., "Learnable polyphase sampling
  for shift invariant and equivariant convolutional networks", NeurIPS 2022): for each shift ``d`` the input is
  circularly shifted, the prediction re-aligned (shifted back) and compared with the prediction on the unshifted
  input; the score of an image is the fraction of pixels whose predicted class agrees, averaged over the shifts.
  An exactly shift-equivariant model (a pointwise model, a circular ``unet_*_aps``) scores 100%. Interval: Student
  t over the per-image scores (``zoo.stats.mean_ci``).
* **Paired comparison** of two models on the same images: per-image differences, bootstrap interval and sign-flip
  p-value (``zoo.stats.paired_bootstrap``); for mIoU the per-image IoU (mean over the classes of that image).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from zoo.eval.results import PerImage, Result
from zoo.stats import mean_ci, paired_bootstrap

__all__ = [
    "SegmentationResult",
    "confusion_matrices",
    "evaluate_segmentation",
    "iou_per_class",
    "miou",
    "miou_interval",
    "paired_segmentation",
    "shift_agreement",
]


@dataclass(kw_only=True)
class SegmentationResult(Result):
    """:func:`evaluate_segmentation` (fractions in [0, 1]; ``per_image``: ``iou``, ``consistency``)."""

    miou: float
    miou_ci95: list[float]
    iou_per_class: list[float | None]  # None: a class absent from masks and predictions
    consistency: float
    consistency_ci95: list[float]
    shifts: list[list[int]]
    n: int
    per_image: PerImage


def confusion_matrices(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """Per-image confusion matrices ``(N, C, C)`` (rows: true class, columns: predicted) of class maps ``(N, H, W)``."""
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(f"pred and target must be (N, H, W) class maps of one shape, got {list(pred.shape)} "
                         f"and {list(target.shape)}")  # fmt: skip
    n = pred.shape[0]
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        raise ValueError(f"mask values must be class ids 0..{num_classes - 1} or {ignore_index} (ignored), "
                         f"got {int(target[bad][0])}")  # fmt: skip
    image = torch.arange(n, device=pred.device).view(n, 1, 1).expand_as(pred)
    flat = (image * num_classes + target.long()) * num_classes + pred.long()
    counts = torch.bincount(flat[valid], minlength=n * num_classes * num_classes)
    return counts.view(n, num_classes, num_classes).cpu()


def iou_per_class(conf: Tensor | np.ndarray) -> np.ndarray:
    """IoU of each class from a ``(C, C)`` confusion matrix; NaN where the class is absent (union 0)."""
    c = np.asarray(conf, dtype=np.float64)
    tp = np.diag(c)
    union = c.sum(0) + c.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def miou(conf: Tensor | np.ndarray) -> float:
    """Mean IoU over the classes present (union > 0) of a ``(C, C)`` confusion matrix."""
    iou = iou_per_class(conf)
    return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else math.nan


def miou_interval(per_image: Tensor | np.ndarray, rounds: int = 1000, seed: int = 0) -> list[float]:
    """95% percentile-bootstrap interval of the data-set mIoU, resampling images (``per_image``: ``(N, C, C)``)."""
    conf = np.asarray(per_image, dtype=np.float64)
    n = len(conf)
    if n < 2:
        return [math.nan, math.nan]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 16]))
    boot = [miou(conf[rng.integers(0, n, n)].sum(0)) for _ in range(rounds)]
    low, high = np.nanquantile(boot, [0.025, 0.975])
    return [float(low), float(high)]


def _predict(model: nn.Module, x: Tensor) -> Tensor:
    return model(x).argmax(1)


def shift_agreement(model: nn.Module, images: Tensor, shifts: Sequence[tuple[int, int]]) -> Tensor:
    """Per-image dense consistency ``(N,)``: the fraction of pixels whose class agrees between
    ``f(x)`` re-aligned and ``f(roll(x, d))``, averaged over the circular ``shifts`` ``d = (dy, dx)``."""
    if not shifts:
        raise ValueError("shift consistency needs at least one shift (dy, dx)")
    base = _predict(model, images)
    total = torch.zeros(images.shape[0], dtype=torch.float64)
    for dy, dx in shifts:
        moved = _predict(model, torch.roll(images, (dy, dx), dims=(-2, -1)))
        agree = moved == torch.roll(base, (dy, dx), dims=(-2, -1))
        total += agree.flatten(1).double().mean(1).cpu()
    return total / len(shifts)


def random_shifts(count: int, max_shift: int, seed: int = 0) -> list[tuple[int, int]]:
    """``count`` non-zero shifts ``(dy, dx)`` with entries in ``[-max_shift, max_shift]`` (seeded)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 17]))
    out: list[tuple[int, int]] = []
    while len(out) < count:
        d = tuple(int(v) for v in rng.integers(-max_shift, max_shift + 1, 2))
        if d != (0, 0):
            out.append(d)  # type: ignore[arg-type]
    return out


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    num_classes: int,
    shifts: Sequence[tuple[int, int]] | None = None,
    ignore_index: int = 255,
    progress: bool = False,
    rounds: int = 1000,
) -> SegmentationResult:
    """mIoU and dense shift consistency of ``model`` on ``(images, masks)`` batches, with 95% intervals.

    Returns a :class:`SegmentationResult`: ``miou``, ``miou_ci95``, ``iou_per_class``, ``consistency``,
    ``consistency_ci95``, ``shifts``, ``n``, ``per_image`` (``iou``, ``consistency``); fractions in [0, 1].
    """
    model = model.eval()
    shifts = list(shifts) if shifts is not None else random_shifts(5, 8)
    confs: list[Tensor] = []
    agree: list[Tensor] = []
    for images, masks in tqdm(batches, desc="segmentation", disable=not progress, leave=False):
        pred = _predict(model, images)
        confs.append(confusion_matrices(pred, masks, num_classes, ignore_index))
        agree.append(shift_agreement(model, images, shifts))
    if not confs:
        raise ValueError("no images to evaluate")
    conf = torch.cat(confs).numpy()
    cons = torch.cat(agree).numpy()
    mean, low, high = mean_ci(cons)
    per_iou = [float(np.nanmean(v)) if np.any(~np.isnan(v := iou_per_class(c))) else math.nan for c in conf]
    return SegmentationResult(
        miou=miou(conf.sum(0)),
        miou_ci95=miou_interval(conf, rounds=rounds),
        iou_per_class=[None if math.isnan(v) else float(v) for v in iou_per_class(conf.sum(0))],
        consistency=float(mean),
        consistency_ci95=[float(low), float(high)],
        shifts=[list(d) for d in shifts],
        n=len(cons),
        per_image={"iou": per_iou, "consistency": cons.tolist()},
    )


def paired_segmentation(a: SegmentationResult, b: SegmentationResult, rounds: int = 2000) -> dict[str, Any]:
    """Paired comparison of two ``evaluate_segmentation`` results on the same images (B minus A):
    ``{"iou": ..., "consistency": ...}`` of ``zoo.stats.paired_bootstrap``."""
    out: dict[str, Any] = {}
    for key in ("iou", "consistency"):
        x, y = np.asarray(a.per_image[key], float), np.asarray(b.per_image[key], float)
        if x.shape != y.shape:
            raise ValueError(f"paired comparison needs the same images, got {len(x)} and {len(y)}")
        out[key] = paired_bootstrap(y - x, rounds=rounds)
    return out
