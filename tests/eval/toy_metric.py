"""A complete ``zoo eval`` metric in one module (the worked example of docs/contributing.md).

``class0``: the share of images whose top-1 prediction is class 0, with a 95% Wilson interval over photos.
Importing the module registers it; from then on ``run_eval``, the CSV/PNG/Markdown report and the paired
comparison of two models all include it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from zoo.distributed import gather_records
from zoo.eval.registry import Context, Metric, Paired, register
from zoo.eval.results import PerImage, Result
from zoo.io import atomic_path
from zoo.stats import proportion_ci


@dataclass(kw_only=True)
class Class0Result(Result):
    """The record the metric returns: ``results.json`` holds its fields (``to_dict()``)."""

    share: float  # % of images predicted as class 0
    ci95: list[float]
    n: int
    per_image: PerImage  # index, hit


@torch.no_grad()
def class0_share(module: torch.nn.Module, batches: Iterable[Any], groups: dict[int, Any] | None = None) -> Class0Result:
    """The metric itself: ``batches`` of ``(images, labels, global indices)`` -> share of class-0 predictions."""
    module.eval()
    records = {}
    for images, _labels, indices in batches:
        for index, top in zip(indices.tolist(), module(images).argmax(1).tolist()):
            records[index] = float(top == 0)
    records = gather_records(records)  # under torchrun: every rank's shard, in image order
    index, hit = list(records), np.array(list(records.values()))
    prop = proportion_ci(hit, np.ones(len(hit)), None if groups is None else [groups[i] for i in index])
    return Class0Result(
        share=100.0 * prop["p"],
        ci95=[100.0 * prop["ci95"][0], 100.0 * prop["ci95"][1]],
        n=len(hit),
        per_image={"index": index, "hit": hit.tolist()},
    )


def _run(ctx: Context, model: Any) -> Class0Result:
    cfg = ctx.config
    batches = ctx.batches(model, cfg["resize"], cfg["crop"], "class0", "class0")
    return class0_share(model.module, batches, ctx.groups("class0"))


def _headline(r: Class0Result) -> str:
    return f"class 0 on {r.share:.1f}% [{r.ci95[0]:.1f}, {r.ci95[1]:.1f}] of {r.n} images"


def _rows(model: str, r: Class0Result) -> Iterator[dict[str, Any]]:
    yield {"model": model, "share": r.share, "ci95_low": r.ci95[0], "ci95_high": r.ci95[1], "n": r.n}


def _plot(results: dict[str, Class0Result], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4, 3))
    names = list(results)
    ax.bar(names, [results[m].share for m in names])
    ax.set_ylabel("class-0 predictions (%)")
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)


def _paired(r: Class0Result) -> Paired:
    return {"class 0": ("binary", dict(zip(r.per_image["index"], r.per_image["hit"])))}


CLASS0 = register(Metric("class0", _run, "classifier", headline=_headline, rows=_rows, plot=_plot, paired=_paired))
