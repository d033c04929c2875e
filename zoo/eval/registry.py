"""One registration per metric: how ``run_eval`` runs it, summarises it, tabulates, plots and pairs it.

A metric module calls :func:`register` once with a :class:`Metric`; ``zoo eval``'s metric list, the
CSV/PNG report and the paired model comparison all read this registry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from tqdm.auto import tqdm

from zoo.distributed import is_main, rank_world, shard_positions
from zoo.eval.data import ImageSource, eval_transform, image_order, position_groups, stream_batches
from zoo.eval.results import Result

__all__ = ["METRICS", "ORDER", "Context", "Metric", "Outcome", "Paired", "centre", "register", "run_on_squares"]

Row = dict[str, Any]
# label -> ("binary" | "continuous", {global image index: value}): what a paired comparison uses
Paired = dict[str, tuple[str, dict[int, float]]]
# what a metric's run returns: its record, or its records keyed by protocol / setting
Outcome = Result | Mapping[str, Result]
R = TypeVar("R", bound=Outcome)


@dataclass(frozen=True)
class Metric(Generic[R]):
    """A metric of ``zoo eval`` whose ``run`` returns an ``R`` (a :class:`~zoo.eval.results.Result` record,
    or ``{protocol: record}``).

    ``run(ctx, model) -> result``; ``headline(result) -> str`` (the log line); ``rows(model, result)``
    (CSV rows); ``plot({model: result}, path)``; ``finalize({model: result}, config)`` (figures that
    need every model, e.g. normalisation by a reference model; edits the results in place);
    ``paired(result) -> Paired`` (per-image outcomes for the paired comparison of two models).
    """

    name: str
    run: Callable[[Context, Any], R]
    kind: str = "classifier"
    headline: Callable[[R], str] | None = None
    rows: Callable[[str, R], Iterator[Row]] | None = None
    plot: Callable[[dict[str, R], Path], Path] | None = None
    finalize: Callable[[dict[str, R], dict[str, Any]], None] | None = None
    paired: Callable[[R], Paired] | None = None


METRICS: dict[str, Metric[Any]] = {}
# the order of the shipped metrics in METRICS (``zoo eval``'s metric list and help), whatever order their
# modules are imported in; a metric not named here comes after them, in the order it was registered
ORDER = (
    "clean",
    "corruptions",
    "flip",
    "consistency",
    "diagonal",
    "features",
    "sensitivity",
    "deformation",
    "smoothness",
    "generation",
)


def register(metric: Metric[R]) -> Metric[R]:
    """Add ``metric`` to :data:`METRICS` (a second metric of the same name is an error), in :data:`ORDER`."""
    if metric.name in METRICS and METRICS[metric.name] is not metric:
        raise ValueError(f"metric {metric.name!r} is registered twice")
    METRICS[metric.name] = metric
    ranked = sorted(METRICS.values(), key=lambda m: ORDER.index(m.name) if m.name in ORDER else len(ORDER))
    METRICS.clear()
    METRICS.update((m.name, m) for m in ranked)
    return metric


def centre(batches: Iterable[Any], size: int) -> Iterator[Any]:
    """The centre ``size`` x ``size`` crop of every batch ``(images, labels, indices)``."""
    for images, labels, indices in batches:
        top = (images.shape[-2] - size) // 2
        left = (images.shape[-1] - size) // 2
        yield images[..., top : top + size, left : left + size], labels, indices


@dataclass
class Context:
    """What a metric's ``run`` gets besides the model: the data, the config, progress and a cache."""

    source: ImageSource
    config: dict[str, Any]
    progress: bool
    device: str | None
    cache: dict[Any, Any] = field(default_factory=dict)  # shared by the models of one run

    def limit(self, metric: str | None = None) -> int | None:
        limits = [self.config["limit"]]
        if metric is not None:
            limits.append((self.config.get(metric) or {}).get("limit"))
        limits = [v for v in limits if v is not None]
        return min(limits) if limits else None

    def groups(self, metric: str | None = None) -> dict[int, Any] | None:
        """``{global index: cluster}`` of the images ``metric`` sees (views of one photo share one);
        ``None`` when the source has no clusters (every image independent)."""
        if getattr(self.source, "group", None) is None:
            return None
        cfg = self.config
        order = image_order(self.source, shuffle=cfg["shuffle"], seed=cfg["seed"], limit=self.limit(metric))
        return dict(enumerate(position_groups(self.source, order)))

    def progress_bar(self, iterable: Iterable[Any], total: int | None, desc: str) -> Iterable[Any]:
        return tqdm(
            iterable, total=total, desc=desc, unit="batch", leave=False, disable=not (self.progress and is_main())
        )

    def batches(
        self,
        model: Any,
        resize: int,
        crop: int,
        metric: str,
        desc: str,
        use_labels: bool = False,
        normalize: bool = True,
    ) -> Iterator[Any]:
        """Batches ``(images, labels_or_None, indices)`` of ``metric``'s images: Resize + CenterCrop,
        normalised with the model's mean/std (``normalize=False``: pixels in [0, 1])."""
        cfg = self.config
        limit = self.limit(metric)
        mean, std = (model.mean, model.std) if normalize else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        stream = stream_batches(
            self.source,
            eval_transform(resize, crop, mean, std),
            batch_size=cfg["batch_size"],
            limit=limit,
            shuffle=cfg["shuffle"],
            seed=cfg["seed"],
            num_workers=cfg["num_workers"],
        )
        n = min(len(self.source), limit or len(self.source))
        rank, world = rank_world()
        total = math.ceil(len(shard_positions(n, rank, world)) / cfg["batch_size"])
        for images, labels, indices in self.progress_bar(stream, total, f"{model.name} {desc}"):
            yield images, (labels if use_labels else None), indices

    def use_labels(self, model: Any) -> bool:
        """Labels are used when the source's class count equals the model's (``labels: auto``)."""
        if self.config["labels"] == "ignore":
            return False
        classes = getattr(self.source, "classes", None)
        return classes is not None and len(classes) == getattr(model.module, "num_classes", -1)


def run_on_squares(ctx: Context, model: Any, name: str, fn: Callable[..., R], keys: Sequence[str], **extra: Any) -> R:
    """``fn(model.module, batches, ...)`` on ``config[name]["size"]``-pixel squares, with the settings ``keys``
    of ``config[name]`` and ``extra`` (the ``run`` of a metric computed on squares, e.g. ``features``)."""
    cfg = ctx.config[name]
    batches = ctx.batches(model, cfg["size"], cfg["size"], name, name)
    settings = {key: cfg[key] for key in keys}
    return fn(model.module, batches, **settings, **extra, groups=ctx.groups(name), device=ctx.device)
