"""Classification consistency under shifts (Zhang 2019 crop protocol, APS circular protocol) and
diagonal-shift curves. Definitions: REFERENCE.md section 4 / docs/eval.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from zoo.eval._batches import evaluating, iter_batches, model_device, run_chunked
from zoo.eval._dist import gather_records
from zoo.eval._seeding import image_rng
from zoo.eval._stats import mean_ci, wilson_interval

__all__ = ["PROTOCOLS", "diagonal_shift_curve", "shift_consistency", "shift_offsets"]

PROTOCOLS = ("crop", "circular")


def _check_shift(images: Tensor, protocol: str, max_shift: int) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    if not isinstance(max_shift, int) or max_shift < 1:
        raise ValueError(f"max_shift must be an int >= 1, got {max_shift!r}")
    h, w = images.shape[-2:]
    if protocol == "crop" and min(h, w) <= max_shift:
        raise ValueError(
            f"crop protocol: images of {h}x{w} leave no crop for max_shift={max_shift} "
            f"(crop size = size - max_shift); use larger images or a smaller max_shift"
        )


def shift_offsets(protocol: str, max_shift: int, seed: int, index: int) -> np.ndarray:
    """The two (dh, dw) offsets of image ``index``: shape (2, 2).

    ``"circular"``: integers in [-max_shift, max_shift); ``"crop"``: integers in [0, max_shift].
    """
    rng = image_rng(seed, f"consistency/{protocol}", index)
    if protocol == "circular":
        return rng.integers(-max_shift, max_shift, size=(2, 2))
    return rng.integers(0, max_shift + 1, size=(2, 2))


def _view(image: Tensor, protocol: str, offset: np.ndarray, max_shift: int) -> Tensor:
    dh, dw = int(offset[0]), int(offset[1])
    if protocol == "circular":
        return torch.roll(image, shifts=(dh, dw), dims=(-2, -1))
    h, w = image.shape[-2] - max_shift, image.shape[-1] - max_shift
    return image[..., dh : dh + h, dw : dw + w]


def _check_labels(labels: Tensor | None, num_classes: int) -> None:
    if labels is not None and labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must be class indices in [0, {num_classes}) for a model with {num_classes} outputs, "
            f"got values in [{int(labels.min())}, {int(labels.max())}]"
        )


def shift_consistency(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    protocol: str = "circular",
    max_shift: int = 32,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Percentage of images whose top-1 class is the same under two random shifts.

    Args:
        model: a classifier returning logits (N, K); put in eval mode under ``torch.no_grad()``
            (its previous train/eval mode is restored afterwards).
        batches: iterable of ``(images, labels_or_None)`` or ``(images, labels, indices)`` with
            normalized float images (N, C, H, W); indices are global image numbers (else counted).
        protocol: ``"circular"`` (APS): ``torch.roll`` of the whole image by two offsets (dh, dw) in
            [-max_shift, max_shift); ``"crop"`` (Zhang): two (H - max_shift) x (W - max_shift) crops
            at offsets in [0, max_shift]. Offsets are drawn per image from ``(seed, index)``.
        max_shift: largest shift in pixels (32 in the published protocols).
        seed: seed of the per-image offsets.
        device: where to run; default the model's device.

    Returns:
        ``{"consistency": %, "ci95": [low %, high %] (Wilson), "n": images, "agree": count,
        "protocol", "max_shift", "seed"}`` plus ``"top1"``/``"top5"`` (%, accuracy of the shifted
        views, two per image) when labels are given. Under ``torch.distributed`` every rank passes its
        shard and gets the figures of all images.
    """
    dev = model_device(model, device)
    records: dict[int, tuple[int, int, int]] = {}
    labelled = None
    with evaluating(model, dev):
        for images, labels, indices in iter_batches(batches, dev):
            _check_shift(images, protocol, max_shift)
            if labelled is not None and labelled != (labels is not None):
                raise ValueError("either every batch has labels or none has")
            labelled = labels is not None
            offsets = [shift_offsets(protocol, max_shift, seed, int(i)) for i in indices]
            views = [_view(img, protocol, off[v], max_shift) for v in (0, 1) for img, off in zip(images, offsets)]
            logits = model(torch.stack(views))
            n = images.shape[0]
            _check_labels(labels, logits.shape[1])
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices.view(2, n, -1)
            agree = (top[0, :, 0] == top[1, :, 0]).tolist()
            if labels is not None:
                c1 = (top[:, :, 0] == labels).sum(0).tolist()
                c5 = (top == labels[None, :, None]).any(2).sum(0).tolist()
            else:
                c1 = c5 = [0] * n
            for i, a, x1, x5 in zip(indices.tolist(), agree, c1, c5):
                records[i] = (int(a), int(x1), int(x5))
    records = gather_records(records)
    table = np.array(list(records.values()), dtype=np.int64).reshape(-1, 3)
    n = len(records)
    agree = int(table[:, 0].sum())
    low, high = wilson_interval(agree, n)
    out: dict[str, Any] = {
        "consistency": 100.0 * agree / n if n else float("nan"),
        "ci95": [100.0 * low, 100.0 * high],
        "n": n,
        "agree": agree,
        "protocol": protocol,
        "max_shift": max_shift,
        "seed": seed,
    }
    if labelled:
        out["top1"] = 100.0 * float(table[:, 1].sum()) / (2 * n)
        out["top5"] = 100.0 * float(table[:, 2].sum()) / (2 * n)
    return out


def diagonal_shift_curve(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    max_shift: int = 32,
    chunk: int = 64,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Probability of the reference class along a diagonal shift (Zhang 2019, Fig. 1).

    Each image gives ``max_shift + 1`` crops of size (H - max_shift) at offsets (d, d), d = 0..max_shift.
    The reference class is the label when labels are given, else the class predicted at d = 0.

    Returns ``{"shifts": [d], "prob": [mean P], "prob_ci95": [[low], [high]] (normal approximation over
    images), "agree": [% of images whose top-1 equals the top-1 at d = 0], "reference": "label" |
    "first_frame", "n": images}``.
    """
    if not isinstance(max_shift, int) or max_shift < 1:
        raise ValueError(f"max_shift must be an int >= 1, got {max_shift!r}")
    dev = model_device(model, device)
    records: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    reference = "first_frame"
    with evaluating(model, dev):
        for images, labels, indices in iter_batches(batches, dev):
            _check_shift(images, "crop", max_shift)
            h, w = images.shape[-2] - max_shift, images.shape[-1] - max_shift
            for k, image in enumerate(images):
                crops = torch.stack([image[:, d : d + h, d : d + w] for d in range(max_shift + 1)])
                probs = run_chunked(model, crops, chunk).softmax(dim=1)
                top = probs.argmax(dim=1)
                if labels is not None:
                    _check_labels(labels, probs.shape[1])
                    ref = int(labels[k])
                    reference = "label"
                else:
                    ref = int(top[0])
                records[int(indices[k])] = (
                    probs[:, ref].double().cpu().numpy(),
                    (top == top[0]).cpu().numpy(),
                )
    records = gather_records(records)
    prob = np.stack([r[0] for r in records.values()]) if records else np.zeros((0, max_shift + 1))
    agree = np.stack([r[1] for r in records.values()]) if records else np.zeros((0, max_shift + 1))
    mean, low, high = mean_ci(prob)
    return {
        "shifts": list(range(max_shift + 1)),
        "prob": mean.tolist(),
        "prob_ci95": [low.tolist(), high.tolist()],
        "agree": (100.0 * agree.mean(axis=0)).tolist() if len(agree) else [],
        "reference": reference,
        "n": len(records),
        "max_shift": max_shift,
    }
