"""Classification consistency under shifts (Zhang 2019 crop protocol, APS circular protocol) and
diagonal-shift curves. Definitions: docs/eval.md.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from zoo.distributed import gather_records, rank_world
from zoo.eval._batches import evaluating, iter_batches, model_device, run_chunked
from zoo.eval._seeding import image_rng, stream_id
from zoo.eval.plots import plot_consistency, plot_diagonal
from zoo.eval.registry import Context, Metric, Paired, centre, register
from zoo.eval.report import Row, ci_columns, keyed
from zoo.eval.results import OPTIONAL, PerImage, Result
from zoo.stats import mean_ci, proportion_ci

__all__ = [
    "PROCEDURES",
    "PROTOCOLS",
    "ConsistencyResult",
    "DiagonalResult",
    "diagonal_shift_curve",
    "shift_consistency",
    "shift_offsets",
]

PROTOCOLS = ("crop", "circular")
PROCEDURES = ("seeded", "official")


@dataclass(kw_only=True)
class ConsistencyResult(Result):
    """:func:`shift_consistency` of one protocol (percentages; ``per_image``: ``index``, ``agree``)."""

    consistency: float
    ci95: list[float]
    n: int
    n_eff: int
    agree: int
    protocol: str
    max_shift: int
    seed: int
    per_image: PerImage
    # with labels: the accuracy of the shifted views (crops: crop protocol, rolled: circular protocol)
    top1_crops: float | None = field(default=None, metadata=OPTIONAL)
    top5_crops: float | None = field(default=None, metadata=OPTIONAL)
    top1_rolled: float | None = field(default=None, metadata=OPTIONAL)
    top5_rolled: float | None = field(default=None, metadata=OPTIONAL)
    procedure: str | None = field(default=None, metadata=OPTIONAL)  # "official" (absent: seeded)
    passes: int | None = field(default=None, metadata=OPTIONAL)


@dataclass(kw_only=True)
class DiagonalResult(Result):
    """:func:`diagonal_shift_curve`: one value per shift ``d`` in ``shifts``."""

    n_eff: int
    shifts: list[int]
    prob: list[float]
    prob_ci95: list[list[float]]
    agree: list[float]
    reference: str
    n: int
    max_shift: int


def group_list(groups: Mapping[int, Hashable] | None, indices: Iterable[int]) -> list[Hashable] | None:
    """The cluster of each index (``None`` when no clusters are known: every image independent)."""
    return None if groups is None else [groups.get(int(i), int(i)) for i in indices]


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
    procedure: str = "seeded",
    passes: int = 5,
    groups: Mapping[int, Hashable] | None = None,
    device: str | torch.device | None = None,
) -> ConsistencyResult:
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
        procedure: ``"seeded"`` (offsets per image from ``(seed, index)``) or ``"official"`` (the
            release's ImageNet script: one pair of offsets in [0, max_shift) per *batch*, ``passes``
            passes over the data; crop protocol only; depends on the batch size, single process;
            ``batches`` is iterated once per pass when it is re-iterable, e.g. a ``DataLoader``).
        groups: ``{index: cluster}`` (e.g. the photo of each view): the interval and ``n_eff`` count
            clusters, not images.
        device: where to run; default the model's device.

    Returns:
        a :class:`ConsistencyResult`: ``consistency`` %, ``ci95`` [low %, high %] (Wilson, cluster design
        effect), ``n`` images, ``n_eff`` effective sample size, ``agree`` count, ``protocol``, ``max_shift``,
        ``seed``, ``per_image``; ``top1_crops``/``top5_crops`` (crop) or ``top1_rolled``/``top5_rolled`` (circular):
        %, accuracy of the shifted views (two per image), when labels are given. This is not clean
        accuracy (see :func:`zoo.eval.clean.clean_accuracy`). Under ``torch.distributed`` every rank
        passes its shard and gets the figures of all images.
    """
    if procedure not in PROCEDURES:
        raise ValueError(f"procedure must be one of {', '.join(PROCEDURES)}, got {procedure!r}")
    if procedure == "official":
        return _official_consistency(model, batches, protocol, max_shift, seed, passes, groups, device)
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
    return _summary(protocol, max_shift, seed, list(records), table[:, 0], np.ones(len(table)), table, labelled, groups)


def _summary(
    protocol: str,
    max_shift: int,
    seed: int,
    index: list[int],
    agree: np.ndarray,
    trials: np.ndarray,
    table: np.ndarray,
    labelled: bool | None,
    groups: Mapping[int, Hashable] | None,
) -> ConsistencyResult:
    n = len(index)
    prop = proportion_ci(agree, trials, group_list(groups, index))
    out = ConsistencyResult(
        consistency=100.0 * prop["p"] if n else float("nan"),
        ci95=[100.0 * prop["ci95"][0], 100.0 * prop["ci95"][1]],
        n=n,
        n_eff=len(set(group_list(groups, index) or index)),
        agree=int(agree.sum()),
        protocol=protocol,
        max_shift=max_shift,
        seed=seed,
        per_image={"index": index, "agree": (agree / np.maximum(trials, 1)).tolist()},
    )
    if labelled:
        views_seen = 2.0 * float(trials.sum())  # python floats: results are pickled/JSON-ed as plain types
        top1, top5 = (100.0 * float(table[:, k].sum()) / views_seen for k in (1, 2))
        if protocol == "crop":
            out.top1_crops, out.top5_crops = top1, top5
        else:
            out.top1_rolled, out.top5_rolled = top1, top5
    return out


def _official_consistency(
    model: nn.Module,
    batches: Iterable[Any],
    protocol: str,
    max_shift: int,
    seed: int,
    passes: int,
    groups: Mapping[int, Hashable] | None,
    device: str | torch.device | None,
) -> ConsistencyResult:
    """The release's procedure: per batch, offsets ``randint(0, max_shift, 2)`` twice; ``passes`` passes."""
    if protocol != "crop":
        raise ValueError("procedure='official' is the crop protocol of the release; use protocol='crop'")
    if not isinstance(passes, int) or passes < 1:
        raise ValueError(f"passes must be an int >= 1, got {passes!r}")
    if rank_world()[1] > 1:
        raise ValueError("procedure='official' draws offsets per batch and runs in one process; use 'seeded'")
    if iter(batches) is batches:  # a one-shot iterator: keep it for the passes (pass a re-iterable to stream)
        batches = list(batches)
    dev = model_device(model, device)
    counts: dict[int, list[int]] = {}
    labelled = None
    with evaluating(model, dev):
        for rep in range(passes):
            rng = np.random.default_rng(np.random.SeedSequence([seed, stream_id("consistency/official"), rep]))
            for images, labels, indices in iter_batches(batches, dev):
                _check_shift(images, protocol, max_shift)
                labelled = labels is not None
                size_h, size_w = images.shape[-2] - max_shift, images.shape[-1] - max_shift
                offs = [rng.integers(0, max_shift, size=2) for _ in range(2)]
                views = [images[..., o[0] : o[0] + size_h, o[1] : o[1] + size_w] for o in offs]
                logits = model(torch.cat(views))
                n = images.shape[0]
                _check_labels(labels, logits.shape[1])
                top = logits.topk(min(5, logits.shape[1]), dim=1).indices.view(2, n, -1)
                agree = (top[0, :, 0] == top[1, :, 0]).tolist()
                c1 = (top[:, :, 0] == labels).sum(0).tolist() if labels is not None else [0] * n
                c5 = (top == labels[None, :, None]).any(2).sum(0).tolist() if labels is not None else [0] * n
                for i, a, x1, x5 in zip(indices.tolist(), agree, c1, c5):
                    row = counts.setdefault(i, [0, 0, 0, 0])
                    row[0] += int(a)
                    row[1] += x1
                    row[2] += x5
                    row[3] += 1
    table = np.array([counts[i] for i in sorted(counts)], dtype=np.int64).reshape(-1, 4)
    out = _summary(protocol, max_shift, seed, sorted(counts), table[:, 0], table[:, 3], table, labelled, groups)
    out.procedure, out.passes = "official", passes
    return out


def diagonal_shift_curve(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    max_shift: int = 32,
    chunk: int = 64,
    groups: Mapping[int, Hashable] | None = None,
    device: str | torch.device | None = None,
) -> DiagonalResult:
    """Probability of the reference class along a diagonal shift (Zhang 2019, Fig. 1).

    Each image gives ``max_shift + 1`` crops of size (H - max_shift) at offsets (d, d), d = 0..max_shift.
    The reference class is the label when labels are given, else the class predicted at d = 0.

    Returns a :class:`DiagonalResult`: ``shifts`` [d], ``prob`` [mean P], ``prob_ci95`` [[low], [high]]
    (Student t over images, or over the clusters of ``groups``), ``n_eff``, ``agree`` [% of images whose
    top-1 equals the top-1 at d = 0], ``reference`` ("label" | "first_frame"), ``n`` images.
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
    mean, low, high = mean_ci(prob, groups=group_list(groups, records))
    return DiagonalResult(
        n_eff=len(set(group_list(groups, records) or records)),
        shifts=list(range(max_shift + 1)),
        prob=mean.tolist(),
        prob_ci95=[low.tolist(), high.tolist()],
        agree=(100.0 * agree.mean(axis=0)).tolist() if len(agree) else [],
        reference=reference,
        n=len(records),
        max_shift=max_shift,
    )


class _Restream:
    """A re-iterable stream: every ``iter()`` starts the data stream again (for multi-pass protocols)."""

    def __init__(self, make: Callable[[], Iterable[Any]]) -> None:
        self.make = make

    def __iter__(self) -> Iterator[Any]:
        return iter(self.make())


def _run_consistency(ctx: Context, model: Any) -> dict[str, ConsistencyResult]:
    cfg, out = ctx.config["consistency"], {}
    for protocol in cfg["protocols"]:
        batches: Any = _Restream(
            lambda p=protocol: ctx.batches(
                model, ctx.config["resize"], ctx.config["crop"], "consistency", p, ctx.use_labels(model)
            )
        )
        if protocol == "circular":
            batches = centre(batches, ctx.config["crop"] - cfg["max_shift"])
        official = ctx.config["protocol"] == "official" and protocol == "crop"
        out[protocol] = shift_consistency(
            model.module,
            batches,
            protocol=protocol,
            max_shift=cfg["max_shift"],
            seed=ctx.config["seed"],
            procedure="official" if official else "seeded",
            passes=cfg["passes"],
            groups=ctx.groups("consistency"),
            device=ctx.device,
        )
    return out


def _headline_consistency(r: dict[str, ConsistencyResult]) -> str:
    return ", ".join(
        f"{p} {v.consistency:.2f}% [{v.ci95[0]:.1f}, {v.ci95[1]:.1f}] (n={v.n}, {v.n_eff} photos)" for p, v in r.items()
    )


def _consistency_columns(v: ConsistencyResult) -> Row:
    views = {"top1_crops": v.top1_crops, "top5_crops": v.top5_crops}
    views.update(top1_rolled=v.top1_rolled, top5_rolled=v.top5_rolled)
    return {
        "consistency": v.consistency,
        **ci_columns(v.ci95),
        "n": v.n,
        "max_shift": v.max_shift,
        "seed": v.seed,
        "n_eff": v.n_eff,
        "procedure": v.procedure or "seeded",
        **{k: value for k, value in views.items() if value is not None},
    }


def _paired_consistency(r: dict[str, ConsistencyResult]) -> Paired:
    return {
        f"consistency {p}": ("binary", dict(zip(v.per_image["index"], v.per_image["agree"])))
        for p, v in r.items()
        if v.procedure != "official"
    }


def _run_diagonal(ctx: Context, model: Any) -> DiagonalResult:
    batches = ctx.batches(
        model, ctx.config["resize"], ctx.config["crop"], "diagonal", "diagonal", ctx.use_labels(model)
    )
    return diagonal_shift_curve(
        model.module,
        batches,
        max_shift=ctx.config["diagonal"]["max_shift"],
        groups=ctx.groups("diagonal"),
        device=ctx.device,
    )


def _headline_diagonal(r: DiagonalResult) -> str:
    return f"mean P over shifts {sum(r.prob) / max(1, len(r.prob)):.4f} (n={r.n})"


def _rows_diagonal(model: str, r: DiagonalResult) -> Iterator[Row]:
    for k, (d, prob, agree) in enumerate(zip(r.shifts, r.prob, r.agree)):
        yield {
            "model": model,
            "shift": d,
            "prob": prob,
            **ci_columns(r.prob_ci95, k),
            "agree_pct": agree,
            "reference": r.reference,
            "n": r.n,
        }


register(
    Metric(
        "consistency",
        _run_consistency,
        "classifier",
        headline=_headline_consistency,
        rows=keyed("protocol", _consistency_columns),
        plot=plot_consistency,
        paired=_paired_consistency,
    )
)
register(
    Metric(
        "diagonal", _run_diagonal, "classifier", headline=_headline_diagonal, rows=_rows_diagonal, plot=plot_diagonal
    )
)
