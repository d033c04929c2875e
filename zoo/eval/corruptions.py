"""Corruption robustness (ImageNet-C protocol, Hendrycks & Dietterich, ICLR 2019).

Each image is corrupted in memory by the 15 standard corruptions at severities 1-5 with the
``imagecorruptions`` package (optional extra ``corruptions``; the 4 held-out extras on request), or
the corrupted images are read from an ImageNet-C folder (``root/<corruption>/<severity>/<class>/<img>``).
Error = top-1 error against the label, or, on unlabelled data, disagreement with the model's own
clean prediction. CE and mCE are normalised by a reference model measured on the same images
(:func:`normalise`), or by AlexNet's published errors (real ImageNet-C data only).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from zoo.distributed import gather_records
from zoo.eval._batches import evaluating, iter_batches, model_device, run_chunked
from zoo.eval._corrupt import COMMON, EXTRA, GROUPS, corrupt
from zoo.eval._reference import mean_defined, undefined_note
from zoo.eval.consistency import _check_labels, group_list
from zoo.eval.plots import plot_corruptions
from zoo.eval.registry import Context, Metric, Paired, centre, register
from zoo.eval.results import OPTIONAL, PerImage, Result, optional_with
from zoo.stats import mean_ci, proportion_ci

__all__ = [
    "ALEXNET_ERRORS",
    "COMMON",
    "EXTRA",
    "GROUPS",
    "CorruptionResult",
    "corruption_errors",
    "imagenet_c_errors",
    "normalise",
]

# AlexNet's published top-1 errors on ImageNet-C (mean over the 5 severities), in COMMON's order:
# valid only for the released ImageNet-C images (Hendrycks & Dietterich 2019).
ALEXNET_ERRORS: dict[str, float] = dict(
    zip(
        COMMON,
        (
            0.886428,
            0.894468,
            0.922640,
            0.819880,
            0.826268,
            0.785948,
            0.798360,
            0.866816,
            0.826572,
            0.819324,
            0.564592,
            0.853204,
            0.646056,
            0.717840,
            0.606500,
        ),
    )
)


@dataclass(kw_only=True)
class CorruptionResult(Result):
    """:func:`corruption_errors` / :func:`imagenet_c_errors` (errors as fractions); the scores relative to a
    reference model (percent) are set by :func:`normalise`."""

    clean_error: float | None  # None: ImageNet-C without clean images
    clean_error_ci95: list[float | None]
    errors: dict[str, list[float]]  # per severity
    mean_error: dict[str, float]
    error_ci95: dict[str, list[float]]
    overall_error: float
    overall_error_ci95: list[float]
    reference: str  # "label" | "clean_prediction"
    n: int
    n_eff: int
    corruptions: list[str]
    severities: list[int]
    per_image: PerImage  # index, error (mean over all (c, s)), clean_error
    note: str | None = field(default=None, metadata=OPTIONAL)
    source: str | None = field(default=None, metadata=OPTIONAL)  # the ImageNet-C folder read
    size: int | None = field(default=None, metadata=OPTIONAL)  # the image size (set by ``zoo eval``)
    reference_model: str | None = field(default=None, metadata=OPTIONAL)
    ce: dict[str, float | None] | None = field(default=None, metadata=optional_with("reference_model"))
    mce: float | None = field(default=None, metadata=optional_with("reference_model"))  # each table, then its mean
    relative_ce: dict[str, float | None] | None = field(default=None, metadata=optional_with("reference_model"))
    relative_mce: float | None = field(default=None, metadata=optional_with("reference_model"))
    mce_note: str | None = field(default=None, metadata=OPTIONAL)


def _to_uint8(image: Tensor) -> np.ndarray:
    return (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def corruption_errors(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    corruptions: Sequence[str] = COMMON,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
    groups: Mapping[int, Hashable] | None = None,
    cache: dict[Any, np.ndarray] | None = None,
    chunk: int = 64,
    device: str | torch.device | None = None,
) -> CorruptionResult:
    """Top-1 error of ``model`` on every (corruption, severity) of each image, generated in memory.

    Args:
        batches: ``(images, labels_or_None[, indices])`` of **unnormalised** images in [0, 1] (H, W >= 32).
        mean, std: the model's input normalisation (applied after corrupting).
        corruptions: names from :data:`COMMON` / :data:`EXTRA`; ``"identity"`` is the uncorrupted image
            (a check: its error is the clean error).
        cache: a dict shared between models so each corrupted image is generated once.

    Returns a :class:`CorruptionResult`: ``clean_error``, ``errors`` {c: [error per severity]},
    ``mean_error`` {c: mean over severities}, ``error_ci95`` {c: [low, high]}, ``reference`` ("label" |
    "clean_prediction"), ``n``, ``n_eff``, ``corruptions``, ``severities``, ``per_image`` (``index``,
    ``error``: mean over all (c, s), ``clean_error``); errors as fractions. CE/mCE are added by :func:`normalise`.
    """
    bad = [c for c in corruptions if c not in COMMON + EXTRA + ("identity",)]
    if bad:
        raise ValueError(f"unknown corruption(s) {bad}; valid: {', '.join(COMMON + EXTRA)} (and identity)")
    if not corruptions or any(s not in (1, 2, 3, 4, 5) for s in severities) or not severities:
        raise ValueError(f"severities must be a non-empty subset of 1..5, got {list(severities)}")
    dev = model_device(model, device)
    m = torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
    s_ = torch.tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
    keys = [(c, s) for c in corruptions for s in severities]
    records: dict[int, tuple[int, np.ndarray]] = {}
    reference = "clean_prediction"
    cache = {} if cache is None else cache
    with evaluating(model, dev):
        for images, labels, indices in iter_batches(batches, dev):
            if float(images.min()) < -1e-6 or float(images.max()) > 1 + 1e-6:
                raise ValueError("corruption_errors needs unnormalised images in [0, 1]")
            for k, (image, index) in enumerate(zip(images, indices.tolist())):
                clean = _to_uint8(image)
                views = [clean]
                for c, sev in keys:
                    key = (seed, index, c, sev, clean.shape)
                    if key not in cache:
                        cache[key] = clean if c == "identity" else corrupt(clean, c, sev, seed=seed, index=index)
                    views.append(cache[key])
                x = torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2).float().div(255)
                logits = run_chunked(model, ((x - m) / s_).to(dev), chunk)
                pred = logits.argmax(1)
                if labels is not None:
                    _check_labels(labels, logits.shape[1])
                    target, reference = int(labels[k]), "label"
                else:
                    target = int(pred[0])
                wrong = (pred != target).cpu().numpy().astype(np.int64)
                records[index] = (int(wrong[0]), wrong[1:].reshape(len(corruptions), len(severities)))
    records = gather_records(records)
    return _summary(records, corruptions, severities, reference, groups)


def _summary(
    records: dict[int, tuple[int, np.ndarray]],
    corruptions: Sequence[str],
    severities: Sequence[int],
    reference: str,
    groups: Mapping[int, Hashable] | None,
) -> CorruptionResult:
    index = list(records)
    clusters = group_list(groups, index)
    if not index:
        raise ValueError("no images to corrupt")
    clean = np.array([r[0] for r in records.values()], dtype=np.float64)
    wrong = np.stack([r[1] for r in records.values()]).astype(np.float64)  # (n, C, S)
    errors, mean_err, ci = {}, {}, {}
    for j, c in enumerate(corruptions):
        errors[c] = wrong[:, j].mean(0).tolist()
        prop = proportion_ci(wrong[:, j].sum(1), np.full(len(index), float(len(severities))), clusters)
        mean_err[c], ci[c] = prop["p"], prop["ci95"]
    clean_prop = proportion_ci(clean, np.ones(len(index)), clusters)
    per_image_err = wrong.mean((1, 2))
    overall, low, high = mean_ci(per_image_err, groups=clusters)
    return CorruptionResult(
        clean_error=clean_prop["p"],
        clean_error_ci95=clean_prop["ci95"],
        errors=errors,
        mean_error=mean_err,
        error_ci95=ci,
        overall_error=float(overall),
        overall_error_ci95=[float(low), float(high)],
        reference=reference,
        n=len(index),
        n_eff=len(set(clusters or index)),
        corruptions=list(corruptions),
        severities=list(severities),
        per_image={"index": index, "error": per_image_err.tolist(), "clean_error": clean.tolist()},
    )


def imagenet_c_errors(
    model: nn.Module,
    root: str | Path,
    transform: Any,
    *,
    corruptions: Sequence[str] = COMMON,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    clean_batches: Iterable[Any] | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    limit: int | None = None,
    device: str | torch.device | None = None,
) -> CorruptionResult:
    """Errors on the released ImageNet-C images: ``root/<corruption>/<severity>/<wnid>/<image>``.

    ``transform`` is the model's eval preprocessing of the 224 px files (e.g. ToTensor + Normalize).
    Every (corruption, severity) folder must list the same files (as the release does): image k of
    each is the same source image. ``clean_batches`` (normalised, labelled) gives the clean error.
    """
    from zoo.eval.data import FolderSource, stream_batches

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ImageNet-C folder {root} not found (expected root/<corruption>/<severity>/...)")
    missing = [f"{c}/{s}" for c in corruptions for s in severities if not (root / c / str(s)).is_dir()]
    if missing:
        raise FileNotFoundError(f"{root}: missing ImageNet-C folder(s) {', '.join(missing[:5])}")
    dev = model_device(model, device)
    per: dict[int, np.ndarray] = {}
    with evaluating(model, dev):
        for j, c in enumerate(corruptions):
            for t, sev in enumerate(severities):
                source = FolderSource(root / c / str(sev))
                stream = stream_batches(
                    source, transform, batch_size=batch_size, limit=limit, shuffle=False, num_workers=num_workers
                )
                for images, labels, indices in iter_batches(stream, dev):
                    if labels is None:
                        raise ValueError(f"{root / c / str(sev)}: ImageNet-C folders need class sub-folders")
                    wrong = (model(images).argmax(1) != labels).cpu().numpy()
                    for i, w in zip(indices.tolist(), wrong):
                        per.setdefault(i, np.zeros((len(corruptions), len(severities)), dtype=np.int64))[j, t] = w
        clean: dict[int, int] = {}
        for images, labels, indices in iter_batches(clean_batches or [], dev):
            if labels is None:
                raise ValueError("the clean images of ImageNet-C need labels")
            for i, w in zip(indices.tolist(), (model(images).argmax(1) != labels).tolist()):
                clean[i] = int(w)
    records = {i: (clean.get(i, 0), w) for i, w in sorted(per.items())}
    out = _summary(records, corruptions, severities, "label", None)
    if not clean:
        out.clean_error, out.clean_error_ci95 = None, [None, None]
        out.note = "no clean images given: relative mCE is unavailable"
    out.source = str(root)
    return out


def normalise(by_model: dict[str, CorruptionResult], reference: str | None) -> None:
    """Add CE, mCE and relative mCE (percent) to every model's corruption result, in place.

    ``reference``: a model name among ``by_model`` (default: the first), or ``"alexnet_published"``
    (AlexNet's published ImageNet-C errors; only for results read from the real ImageNet-C folders).
    CE_c = sum over severities of E_{c,s} / the reference's; relative CE_c = sum (E_{c,s} - E_clean) /
    the reference's; mCE = mean of CE_c over the corruptions (100 = as robust as the reference).
    """
    if not by_model:
        return
    ref_name = reference or next(iter(by_model))
    if ref_name == "alexnet_published":
        if any(r.source is None for r in by_model.values()):
            raise ValueError(
                "corruptions.reference=alexnet_published: AlexNet's published errors hold only for the released "
                "ImageNet-C images (corruptions.imagenet_c=PATH); name one of the evaluated models instead"
            )
        ref_err: dict[str, list[float]] = {c: [ALEXNET_ERRORS[c]] for c in ALEXNET_ERRORS}
        ref_clean: float | None = None
    else:
        if ref_name not in by_model:
            raise ValueError(
                f"corruptions.reference {ref_name!r} is not an evaluated model; valid: {', '.join(by_model)}"
            )
        ref_err, ref_clean = by_model[ref_name].errors, by_model[ref_name].clean_error
    for r in by_model.values():
        ce: dict[str, float | None] = {}
        rel: dict[str, float | None] = {}
        for c, errs in r.errors.items():
            ref = ref_err.get(c)
            if ref is None:
                continue
            e, e_ref = float(np.mean(errs)), float(np.mean(ref))
            ce[c] = 100.0 * e / e_ref if e_ref > 0 else None
            if ref_clean is not None and r.clean_error is not None:
                d_ref = e_ref - ref_clean
                rel[c] = 100.0 * (e - r.clean_error) / d_ref if d_ref > 0 else None
            else:
                rel[c] = None
        r.reference_model, r.ce, r.relative_ce = ref_name, ce, rel
        r.mce, r.relative_mce = mean_defined(ce), mean_defined(rel)
        r.mce_note = undefined_note(ce, "reference has zero error on {}: left out of mCE")


def _names(spec: Any) -> tuple[str, ...]:
    if spec == "common":
        return COMMON
    if spec == "all":
        return COMMON + EXTRA
    if isinstance(spec, (list, tuple)) and spec:
        return tuple(spec)
    raise ValueError(f"corruptions.corruptions must be common, all or a list of names, got {spec!r}")


def _run(ctx: Context, model: Any) -> CorruptionResult:
    cfg = ctx.config["corruptions"]
    names = _names(cfg["corruptions"])
    if cfg["imagenet_c"]:
        from zoo.eval.data import eval_transform

        clean = ctx.batches(model, ctx.config["resize"], ctx.config["crop"], "corruptions", "clean", True)
        return imagenet_c_errors(
            model.module,
            cfg["imagenet_c"],
            eval_transform(cfg["size"], cfg["size"], model.mean, model.std),
            corruptions=names,
            severities=cfg["severities"],
            clean_batches=centre(clean, cfg["size"]),
            batch_size=ctx.config["batch_size"],
            num_workers=ctx.config["num_workers"],
            limit=ctx.limit("corruptions"),
            device=ctx.device,
        )
    batches = ctx.batches(
        model, cfg["size"], cfg["size"], "corruptions", "corruptions", ctx.use_labels(model), normalize=False
    )
    out = corruption_errors(
        model.module,
        batches,
        mean=model.mean,
        std=model.std,
        corruptions=names,
        severities=cfg["severities"],
        seed=ctx.config["seed"],
        groups=ctx.groups("corruptions"),
        cache=ctx.cache.setdefault("corruptions", {}),
        device=ctx.device,
    )
    out.size = cfg["size"]
    return out


def _finalize(by_model: dict[str, CorruptionResult], config: dict[str, Any]) -> None:
    normalise(by_model, config["corruptions"]["reference"])


def _headline(r: CorruptionResult) -> str:
    mce = "n/a" if r.mce is None else f"{r.mce:.1f}"
    rel = "n/a" if r.relative_mce is None else f"{r.relative_mce:.1f}"
    clean = "n/a" if r.clean_error is None else f"{100 * r.clean_error:.1f}%"
    return (
        f"mCE {mce}, relative mCE {rel} (100 = {r.reference_model or '?'}); mean error {100 * r.overall_error:.1f}%, "
        f"clean {clean} (error vs {r.reference}, n={r.n}, {r.n_eff} photos)"
    )


def _rows(model: str, r: CorruptionResult) -> Iterator[dict[str, Any]]:
    for c in r.corruptions:
        for k, sev in enumerate(r.severities):
            yield {
                "model": model,
                "corruption": c,
                "severity": sev,
                "error": r.errors[c][k],
                "ce": (r.ce or {}).get(c),
                "relative_ce": (r.relative_ce or {}).get(c),
                "clean_error": r.clean_error,
                "reference_model": r.reference_model,
                "n": r.n,
            }


def _paired(r: CorruptionResult) -> Paired:
    index, error = r.per_image["index"], r.per_image["error"]
    return {"corruption error (mean over corruptions and severities)": ("continuous", dict(zip(index, error)))}


register(
    Metric(
        "corruptions",
        _run,
        "classifier",
        headline=_headline,
        rows=_rows,
        plot=plot_corruptions,
        finalize=_finalize,
        paired=_paired,
    )
)
