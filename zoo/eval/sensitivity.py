"""1-pixel shift sensitivity (Azulay & Weiss, JMLR 2019): how often a 1-pixel diagonal move changes
the prediction, under four ways of moving the image (definitions: docs/eval.md).

- ``crop``: a window moves by (1, 1) px per frame inside the larger image;
- ``black``: the image, shrunk to ``embed_size``, is pasted on a black canvas and moved;
- ``black_mean``: as ``black`` on a canvas of zeros in normalised space (the dataset's mean grey),
  the variant of Azulay & Weiss's published code;
- ``inpaint``: as ``black``, with the whole background filled from the image's border (a
  coarse-to-fine push-pull fill, then iterated blurring);
- ``scale``: the embedded image (black background, centred) grows by 1 px per frame.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.constants import IMAGENET_MEAN, IMAGENET_STD
from zoo.distributed import gather_records
from zoo.eval._batches import evaluating, iter_batches, model_device, run_chunked
from zoo.eval.consistency import group_list
from zoo.eval.plots import plot_sensitivity
from zoo.eval.registry import Context, Metric, Paired, register
from zoo.eval.report import Row, ci_columns, keyed
from zoo.eval.results import PerImage, Result
from zoo.stats import mean_ci, proportion_ci

__all__ = [
    "SENSITIVITY_PROTOCOLS",
    "FrameSpec",
    "SensitivityResult",
    "frame_sensitivity",
    "make_frames",
    "shift_sensitivity",
]

SENSITIVITY_PROTOCOLS = ("crop", "black", "black_mean", "inpaint", "scale")


@dataclass(kw_only=True)
class SensitivityResult(Result):
    """:func:`shift_sensitivity` of one protocol (``per_image``: ``index``, ``p_change``, ``mac``)."""

    p_change: float
    p_change_ci95: list[float]
    mac: float
    mac_ci95: list[float]
    n: int
    n_eff: int
    per_image: PerImage
    pairs: int
    protocol: str
    embed_size: int | None  # None for crop
    frames: int


def _resize(image: Tensor, size: int) -> Tensor:
    return F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def _push_pull(canvas: Tensor, weight: Tensor) -> Tensor:
    """Fill every pixel with weight 0 from a coarser level of the weighted image pyramid (recursive)."""
    if min(canvas.shape[-2:]) <= 1 or bool((weight > 0).all()):
        return canvas
    h, w = canvas.shape[-2:]
    ph, pw = h % 2, w % 2
    sums = F.avg_pool2d(F.pad((canvas * weight)[None], (0, pw, 0, ph)), 2, ceil_mode=True)[0]
    wsum = F.avg_pool2d(F.pad(weight[None], (0, pw, 0, ph)), 2, ceil_mode=True)[0]
    coarse = _push_pull(sums / wsum.clamp_min(1e-12), (wsum > 0).to(canvas.dtype))
    up = F.interpolate(coarse[None], scale_factor=2, mode="bilinear", align_corners=False)[0][..., :h, :w]
    return torch.where(weight > 0, canvas, up)


def inpaint_background(canvas: Tensor, known: Tensor, iterations: int = 60) -> Tensor:
    """Fill the pixels where ``known`` is False from the known ones, over the whole canvas.

    A push-pull fill (each unknown pixel takes the value of the nearest coarser pyramid level that
    has known pixels) extends the border colours to every corner; ``iterations`` steps of a 5x5 box
    blur (replicate padding, known pixels reset each step) then smooth the seams.
    """
    fill = _push_pull(canvas, known.to(canvas.dtype))
    for _ in range(iterations):
        blurred = F.avg_pool2d(F.pad(fill[None], (2, 2, 2, 2), mode="replicate"), 5, stride=1)[0]
        fill = torch.where(known, canvas, blurred)
    return fill


@dataclass(frozen=True)
class FrameSpec:
    """How :func:`make_frames` turns one image into ``frames`` views (checked once, when built).

    ``canvas`` defaults to ``H - frames + 1`` for ``crop`` and ``H`` otherwise; ``embed_size`` is the size of the
    pasted image (black/black_mean/inpaint/scale; None = half the canvas); ``inpaint_iterations`` the smoothing
    steps of the ``inpaint`` fill.
    """

    protocol: str
    frames: int = 8
    canvas: int | None = None
    embed_size: int | None = None
    inpaint_iterations: int = 60

    def __post_init__(self) -> None:
        if self.protocol not in SENSITIVITY_PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; valid: {', '.join(SENSITIVITY_PROTOCOLS)}")
        if self.frames < 2:
            raise ValueError(f"need at least 2 frames, got {self.frames}")


def make_frames(image: Tensor, spec: FrameSpec, background: Sequence[float] | Tensor = (0.0, 0.0, 0.0)) -> Tensor:
    """The ``spec.frames`` x (C, canvas, canvas) sequence of one normalized image (C, H, W).

    ``background`` is the per-channel value of black in normalized units (``black_mean`` always uses 0, the
    mean grey).
    """
    protocol, frames, canvas, embed_size = spec.protocol, spec.frames, spec.canvas, spec.embed_size
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
    if protocol == "black_mean":
        background = [0.0] * image.shape[0]
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
            board = inpaint_background(board, known, spec.inpaint_iterations)
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
    groups: Mapping[int, Hashable] | None = None,
    device: str | torch.device | None = None,
) -> SensitivityResult:
    """Azulay & Weiss sensitivity of ``model`` to 1-pixel moves (see :func:`make_frames`).

    ``mean``/``std`` are the normalization of the images (black = ``-mean / std``).

    Returns a :class:`SensitivityResult` (``p_change``, ``p_change_ci95``, ``mac``, ``mac_ci95``, ``n`` images,
    ``n_eff``, ``pairs``, ``protocol``, ``embed_size``, ``frames``, ``per_image``): ``p_change`` is the pooled
    rate over all frame pairs with a Wilson interval (cluster design effect; never [0, 0]); ``mac`` a mean with
    a Student-t interval over images (clusters with ``groups``).
    """
    spec = FrameSpec(protocol, frames, canvas, embed_size, inpaint_iterations)  # bad settings fail before any work
    dev = model_device(model, device)
    background = [-m / s for m, s in zip(mean, std)]
    records: dict[int, tuple[float, float]] = {}
    with evaluating(model, dev):
        for images, _labels, indices in iter_batches(batches, dev):
            for image, index in zip(images, indices.tolist()):
                seq = make_frames(image, spec, background[: image.shape[0]])
                records[index] = frame_sensitivity(model, seq, chunk)
    records = gather_records(records)
    table = np.array(list(records.values()), dtype=np.float64).reshape(-1, 2)
    index = list(records)
    clusters = group_list(groups, index)
    prop = proportion_ci(table[:, 0] * (frames - 1), np.full(len(table), frames - 1.0), clusters)
    m, m_lo, m_hi = mean_ci(table[:, 1], groups=clusters)
    return SensitivityResult(
        p_change=float(prop["p"]),
        p_change_ci95=prop["ci95"],
        mac=float(m),
        mac_ci95=[float(np.clip(m_lo, 0.0, 1.0)), float(np.clip(m_hi, 0.0, 1.0))],  # NaN stays NaN
        n=len(records),
        n_eff=len(set(clusters or index)),
        per_image={"index": index, "p_change": table[:, 0].tolist(), "mac": table[:, 1].tolist()},
        pairs=len(records) * (frames - 1),
        protocol=protocol,
        embed_size=None if protocol == "crop" else embed_size,
        frames=frames,
    )


def _run(ctx: Context, model: Any) -> dict[str, SensitivityResult]:
    cfg, out = ctx.config["sensitivity"], {}
    for protocol in cfg["protocols"]:
        for embed in [None] if protocol == "crop" else cfg["embed_sizes"]:
            key = protocol if embed is None else f"{protocol}@{embed}"
            batches = ctx.batches(model, ctx.config["resize"], ctx.config["crop"], "sensitivity", key)
            out[key] = shift_sensitivity(
                model.module,
                batches,
                protocol=protocol,
                frames=cfg["frames"],
                canvas=cfg["canvas"],
                embed_size=embed,
                mean=model.mean,
                std=model.std,
                inpaint_iterations=cfg["inpaint_iterations"],
                groups=ctx.groups("sensitivity"),
                device=ctx.device,
            )
    return out


def _headline(r: dict[str, SensitivityResult]) -> str:
    return ", ".join(f"{k} {v.p_change:.3f}" for k, v in r.items())


def _columns(v: SensitivityResult) -> Row:
    return {
        "protocol": v.protocol,
        "embed_size": v.embed_size,
        "p_change": v.p_change,
        **ci_columns(v.p_change_ci95, prefix="p_change_"),
        "mac": v.mac,
        **ci_columns(v.mac_ci95, prefix="mac_"),
        "n": v.n,
        "pairs": v.pairs,
    }


def _paired(r: dict[str, SensitivityResult]) -> Paired:
    return {
        f"P(top-1 change) {k}": ("continuous", dict(zip(v.per_image["index"], v.per_image["p_change"])))
        for k, v in r.items()
    }


_rows = keyed("setting", _columns)
register(
    Metric("sensitivity", _run, "classifier", headline=_headline, rows=_rows, plot=plot_sensitivity, paired=_paired)
)
