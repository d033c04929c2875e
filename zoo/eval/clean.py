"""Clean accuracy: top-1 / top-5 on the unshifted centre crop (the figure papers pair with consistency)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.distributed import gather_records
from zoo.eval._batches import evaluating, iter_batches, model_device
from zoo.eval.consistency import _check_labels, group_list
from zoo.eval.plots import plot_clean
from zoo.eval.registry import Context, Metric, Paired, centre, register
from zoo.eval.results import OPTIONAL, PerImage, Result
from zoo.stats import proportion_ci

__all__ = ["CleanResult", "clean_accuracy"]


@dataclass(kw_only=True)
class CleanResult(Result):
    """:func:`clean_accuracy` in % (``per_image``: ``index``, ``pred``; with labels ``correct1``, ``correct5``)."""

    n: int
    n_eff: int
    labelled: bool
    per_image: PerImage
    top1: float | None  # None without labels (see ``reason``)
    top1_ci95: list[float] | None = field(default=None, metadata=OPTIONAL)
    top5: float | None
    top5_ci95: list[float] | None = field(default=None, metadata=OPTIONAL)
    reason: str | None = field(default=None, metadata=OPTIONAL)
    size: int | None = field(default=None, metadata=OPTIONAL)  # the centre crop (set by ``zoo eval``)


def clean_accuracy(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    groups: Mapping[int, Hashable] | None = None,
    device: str | torch.device | None = None,
) -> CleanResult:
    """Top-1 / top-5 accuracy (%) of ``model`` on the images as given (no shift).

    Without labels there is no accuracy: ``top1``/``top5`` are ``None`` with a ``reason``.

    Returns a :class:`CleanResult`: ``top1``, ``top1_ci95``, ``top5``, ``top5_ci95`` (Wilson, cluster design
    effect), ``n``, ``n_eff``, ``labelled``, ``per_image`` (``index``, ``correct1``, ``correct5``, ``pred``).
    """
    dev = model_device(model, device)
    records: dict[int, tuple[int, int, int]] = {}
    labelled = None
    with evaluating(model, dev):
        for images, labels, indices in iter_batches(batches, dev):
            if labelled is not None and labelled != (labels is not None):
                raise ValueError("either every batch has labels or none has")
            labelled = labels is not None
            logits = model(images)
            _check_labels(labels, logits.shape[1])
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            pred = top[:, 0].tolist()
            c1 = (top[:, 0] == labels).tolist() if labels is not None else [0] * len(pred)
            c5 = (top == labels[:, None]).any(1).tolist() if labels is not None else [0] * len(pred)
            for i, p, a, b in zip(indices.tolist(), pred, c1, c5):
                records[i] = (int(p), int(a), int(b))
    records = gather_records(records)
    index = list(records)
    table = np.array(list(records.values()), dtype=np.int64).reshape(-1, 3)
    out = CleanResult(
        n=len(index),
        n_eff=len(set(group_list(groups, index) or index)),
        labelled=bool(labelled),
        per_image={"index": index, "pred": table[:, 0].tolist()},
        top1=None,
        top5=None,
    )
    if not labelled:
        out.reason = "no labels (the source has none, or its classes are not the model's)"
        return out

    def percent(col: int) -> tuple[float, list[float]]:
        prop = proportion_ci(table[:, col], np.ones(len(table)), group_list(groups, index))
        return 100.0 * prop["p"], [100.0 * prop["ci95"][0], 100.0 * prop["ci95"][1]]

    (out.top1, out.top1_ci95), (out.top5, out.top5_ci95) = percent(1), percent(2)
    out.per_image.update({"correct1": table[:, 1].tolist(), "correct5": table[:, 2].tolist()})
    return out


def _run(ctx: Context, model: Any) -> CleanResult:
    cfg = ctx.config
    size = cfg["clean"]["size"] or cfg["crop"] - cfg["consistency"]["max_shift"]
    batches = ctx.batches(model, cfg["resize"], cfg["crop"], "clean", "clean", ctx.use_labels(model))
    out = clean_accuracy(model.module, centre(batches, size), groups=ctx.groups("clean"), device=ctx.device)
    out.size = size
    return out


def _headline(r: CleanResult) -> str:
    if r.top1 is None or r.top1_ci95 is None:
        return f"no labels: accuracy undefined (n={r.n})"
    lo, hi = r.top1_ci95
    return f"top-1 {r.top1:.2f}% [{lo:.1f}, {hi:.1f}], top-5 {r.top5:.2f}% (n={r.n}, {r.n_eff} photos)"


def _rows(model: str, r: CleanResult) -> Iterator[dict[str, Any]]:
    low, high = r.top1_ci95 or (None, None)
    yield {
        "model": model,
        "top1": r.top1,
        "top1_ci95_low": low,
        "top1_ci95_high": high,
        "top5": r.top5,
        "n": r.n,
        "n_eff": r.n_eff,
        "size": r.size,
    }


def _paired(r: CleanResult) -> Paired:
    if not r.labelled:
        return {}
    index = r.per_image["index"]
    return {
        "clean top-1": ("binary", dict(zip(index, r.per_image["correct1"]))),
        "clean top-5": ("binary", dict(zip(index, r.per_image["correct5"]))),
    }


register(Metric("clean", _run, "classifier", headline=_headline, rows=_rows, plot=plot_clean, paired=_paired))
