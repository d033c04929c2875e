"""1-pixel shift sensitivity (Azulay & Weiss, JMLR 2019): how often a 1-pixel diagonal move changes
the prediction, under four ways of moving the image (REFERENCE.md section 4).

- ``crop``: a window moves by (1, 1) px per frame inside the larger image;
- ``black``: the image, shrunk to ``embed_size``, is pasted on a black canvas and moved;
- ``inpaint``: as ``black``, with the background filled by iterated blurring of the image's border;
- ``scale``: the embedded image (black background, centred) grows by 1 px per frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.eval._batches import evaluating, iter_batches, model_device, run_chunked
from zoo.eval._dist import gather_records
from zoo.eval._stats import mean_ci

__all__ = ["SENSITIVITY_PROTOCOLS", "frame_sensitivity", "make_frames", "shift_sensitivity"]

SENSITIVITY_PROTOCOLS = ("crop", "black", "inpaint", "scale")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _resize(image: Tensor, size: int) -> Tensor:
    return F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def inpaint_background(canvas: Tensor, known: Tensor, iterations: int = 60) -> Tensor:
    """Fill the pixels where ``known`` is False by iterated blurring (known pixels reset each step).

    Unknown pixels start at the mean colour of the known ones; each step blurs with a 5x5 box filter
    (replicate padding), so the border colours diffuse outwards.
    """
    mean = (canvas * known).sum((-2, -1), keepdim=True) / known.sum().clamp_min(1)
    fill = torch.where(known, canvas, mean.expand_as(canvas))
    for _ in range(iterations):
        blurred = F.avg_pool2d(F.pad(fill[None], (2, 2, 2, 2), mode="replicate"), 5, stride=1)[0]
        fill = torch.where(known, canvas, blurred)
    return fill


def make_frames(
    image: Tensor,
    protocol: str,
    frames: int,
    *,
    canvas: int | None = None,
    embed_size: int | None = None,
    background: Sequence[float] | Tensor = (0.0, 0.0, 0.0),
    inpaint_iterations: int = 60,
) -> Tensor:
    """The ``frames`` x (C, canvas, canvas) sequence of one normalized image (C, H, W).

    ``canvas`` defaults to ``H - frames + 1`` for ``crop`` and ``H`` otherwise; ``embed_size``
    (black/inpaint/scale; None = half the canvas). ``background`` is the per-channel value of
    black in normalized units.
    """
    if protocol not in SENSITIVITY_PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(SENSITIVITY_PROTOCOLS)}")
    if frames < 2:
        raise ValueError(f"need at least 2 frames, got {frames}")
    h = min(image.shape[-2:])
    if protocol == "crop":
        size = canvas or h - frames + 1
        if size < 1 or size + frames - 1 > h:
            raise ValueError(f"crop protocol: a {size} px window moved {frames - 1} px does not fit a {h} px image")
        return torch.stack([image[:, t : t + size, t : t + size] for t in range(frames)])
    size = canvas or h
    embed = embed_size or size // 2
    if embed < 1 or embed + frames - 1 > size:
        raise ValueError(
            f"{protocol} protocol: an image of {embed} px moved/grown {frames - 1} px does not fit a {size} px "
            f"canvas; valid embed sizes are 1..{size - frames + 1}"
        )
    bg = torch.as_tensor(background, dtype=image.dtype, device=image.device).reshape(-1, 1, 1)
    out = []
    small = _resize(image, embed)
    start = (size - embed - frames + 1) // 2
    for t in range(frames):
        board = bg.expand(image.shape[0], size, size).clone()
        known = torch.zeros((1, size, size), dtype=torch.bool, device=image.device)
        if protocol == "scale":
            piece = _resize(image, embed + t)
            y = (size - embed - t) // 2
        else:
            piece, y = small, start + t
        board[:, y : y + piece.shape[-2], y : y + piece.shape[-1]] = piece
        known[:, y : y + piece.shape[-2], y : y + piece.shape[-1]] = True
        if protocol == "inpaint":
            board = inpaint_background(board, known, inpaint_iterations)
        out.append(board)
    return torch.stack(out)


@torch.no_grad()
def frame_sensitivity(model: nn.Module, frames: Tensor, chunk: int = 64) -> tuple[float, float]:
    """``(P(top-1 change), mean absolute change)`` over the consecutive pairs of one frame sequence.

    The absolute change is ``|p_k(x_t) - p_k(x_t+1)|`` with ``k`` the top class of ``x_t``.
    """
    probs = run_chunked(model, frames, chunk).softmax(dim=1).double()
    top = probs.argmax(dim=1)
    changed = (top[1:] != top[:-1]).double().mean()
    k = top[:-1]
    steps = torch.arange(len(k), device=probs.device)
    mac = (probs[steps, k] - probs[steps + 1, k]).abs().mean()
    return float(changed), float(mac)


def shift_sensitivity(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    protocol: str = "crop",
    frames: int = 8,
    canvas: int | None = None,
    embed_size: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    inpaint_iterations: int = 60,
    chunk: int = 64,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Azulay & Weiss sensitivity of ``model`` to 1-pixel moves (see :func:`make_frames`).

    ``mean``/``std`` are the normalization of the images (black = ``-mean / std``).

    Returns ``{"p_change", "p_change_ci95", "mac", "mac_ci95", "n" (images), "pairs", "protocol",
    "embed_size", "frames"}``: means over images of the per-image rates, normal 95% intervals clipped to [0, 1].
    """
    dev = model_device(model, device)
    background = [-m / s for m, s in zip(mean, std)]
    records: dict[int, tuple[float, float]] = {}
    with evaluating(model, dev):
        for images, _labels, indices in iter_batches(batches, dev):
            for image, index in zip(images, indices.tolist()):
                seq = make_frames(
                    image,
                    protocol,
                    frames,
                    canvas=canvas,
                    embed_size=embed_size,
                    background=background[: image.shape[0]],
                    inpaint_iterations=inpaint_iterations,
                )
                records[index] = frame_sensitivity(model, seq, chunk)
    records = gather_records(records)
    table = np.array(list(records.values()), dtype=np.float64).reshape(-1, 2)
    p, p_lo, p_hi = mean_ci(table[:, 0])
    m, m_lo, m_hi = mean_ci(table[:, 1])
    return {
        "p_change": float(p),
        "p_change_ci95": [max(0.0, float(p_lo)), min(1.0, float(p_hi))],  # both are in [0, 1]
        "mac": float(m),
        "mac_ci95": [max(0.0, float(m_lo)), min(1.0, float(m_hi))],
        "n": len(records),
        "pairs": len(records) * (frames - 1),
        "protocol": protocol,
        "embed_size": None if protocol == "crop" else embed_size,
        "frames": frames,
    }
