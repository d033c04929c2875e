"""``run_eval``: every requested metric for every model over one data source (what ``zoo eval`` runs)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from tqdm.auto import tqdm

from zoo.eval import consistency as _consistency
from zoo.eval._dist import is_main, rank_world, shard_positions
from zoo.eval.data import ImageSource, eval_transform, open_source, stream_batches
from zoo.eval.deformation import deformation_sensitivity, filter_smoothness
from zoo.eval.features import feature_distance
from zoo.eval.generation import generation_stability
from zoo.eval.sensitivity import IMAGENET_MEAN, IMAGENET_STD, shift_sensitivity

__all__ = [
    "CLASSIFIER_METRICS",
    "DEFAULTS_PATH",
    "GENERATOR_METRICS",
    "EvalModel",
    "load_config",
    "load_models",
    "run_eval",
]

DEFAULTS_PATH = Path(__file__).with_name("defaults.yaml")
CLASSIFIER_METRICS = ("consistency", "diagonal", "features", "sensitivity", "deformation", "smoothness")
GENERATOR_METRICS = ("generation",)
PRETRAINED_MODES = ("auto", "required", "none")


@dataclass
class EvalModel:
    """A model to evaluate: ``kind`` is ``"classifier"`` or ``"generator"`` (image-to-image)."""

    name: str
    module: nn.Module
    weights: str = "given"
    kind: str = "classifier"
    mean: Sequence[float] = field(default=IMAGENET_MEAN)
    std: Sequence[float] = field(default=IMAGENET_STD)


def _merge(base: dict[str, Any], over: dict[str, Any], where: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key not in base:
            raise ValueError(f"unknown config key {where}{key!r}; valid: {', '.join(base)}")
        if isinstance(base[key], dict) and isinstance(value, dict):
            out[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults (``zoo/eval/defaults.yaml``) <- the YAML file ``path`` <- ``overrides``; unknown keys raise."""
    config = yaml.safe_load(DEFAULTS_PATH.read_text())
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"eval config {path} not found")
        config = _merge(config, yaml.safe_load(path.read_text()) or {}, "")
    config = _merge(config, overrides or {}, "")
    unknown = [m for m in config["metrics"] if m not in CLASSIFIER_METRICS + GENERATOR_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; valid: {', '.join(CLASSIFIER_METRICS + GENERATOR_METRICS)}")
    if config["labels"] not in ("auto", "ignore"):
        raise ValueError(f"labels must be 'auto' or 'ignore', got {config['labels']!r}")
    return config


def _weights_error() -> type[Exception]:
    try:
        from zoo.weights import WeightsUnavailableError
    except ImportError:  # weights subsystem not installed: any RuntimeError means "no weights"
        return RuntimeError
    return WeightsUnavailableError


def load_models(
    names: Sequence[str],
    pretrained: str = "auto",
    weights: dict[str, str] | None = None,
    log: Callable[[str], None] = print,
    init_seed: int = 0,
) -> list[EvalModel]:
    """Zoo models by name. ``pretrained``: ``auto`` (weights if obtainable, else random init with a
    notice), ``required`` (fail without weights) or ``none`` (random init). ``weights`` maps a name to a
    checkpoint (``.safetensors`` / directory / ``hf-hub:``) passed as ``pretrained=``; its errors propagate.
    Random initialisation is seeded with ``init_seed`` (the same weights in every process and every run).
    """
    import zoo

    if pretrained not in PRETRAINED_MODES:
        raise ValueError(f"pretrained must be one of {', '.join(PRETRAINED_MODES)}, got {pretrained!r}")
    weights = weights or {}
    stray = sorted(set(weights) - set(names))
    if stray:
        raise ValueError(f"--weights given for {stray}, which are not in --models ({', '.join(names)})")
    unavailable = _weights_error()
    models = []
    for name in names:
        torch.manual_seed(init_seed)
        if name in weights:
            model, how = zoo.create(name, pretrained=weights[name]), f"checkpoint {weights[name]}"
        elif pretrained == "none":
            model, how = zoo.create(name), f"random init (--pretrained none, seed {init_seed})"
        else:
            try:
                model, how = zoo.create(name, pretrained=True), "pretrained"
            except unavailable as err:
                if pretrained == "required":
                    raise RuntimeError(f"{name}: pretrained weights required but unavailable: {err}") from err
                detail = "\n    ".join(str(err).splitlines())
                log(
                    f"NOTE {name}: pretrained weights unavailable, using RANDOM INIT (figures of a random "
                    f"network say nothing about the published model; --pretrained required makes this an error):"
                    f"\n    {detail}"
                )
                model, how = zoo.create(name), f"random init (weights unavailable, seed {init_seed})"
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        models.append(
            EvalModel(name, model, how, "classifier", cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD))
        )
    return models


@dataclass
class _Context:
    source: ImageSource
    config: dict[str, Any]
    progress: bool
    device: str | None

    def limit(self, metric: str | None = None) -> int | None:
        limits = [self.config["limit"]]
        if metric is not None:
            limits.append(self.config[metric].get("limit"))
        limits = [v for v in limits if v is not None]
        return min(limits) if limits else None

    def batches(
        self, model: EvalModel, resize: int, crop: int, metric: str, desc: str, use_labels: bool = False
    ) -> Iterator[Any]:
        cfg = self.config
        limit = self.limit(metric)
        stream = stream_batches(
            self.source,
            eval_transform(resize, crop, model.mean, model.std),
            batch_size=cfg["batch_size"],
            limit=limit,
            shuffle=cfg["shuffle"],
            seed=cfg["seed"],
            num_workers=cfg["num_workers"],
        )
        n = min(len(self.source), limit or len(self.source))
        rank, world = rank_world()
        total = math.ceil(len(shard_positions(n, rank, world)) / cfg["batch_size"])
        bar = tqdm(
            stream,
            total=total,
            desc=f"{model.name} {desc}",
            unit="batch",
            leave=False,
            disable=not (self.progress and is_main()),
        )
        for images, labels, indices in bar:
            yield images, (labels if use_labels else None), indices


def _centre(batches: Iterable[Any], size: int) -> Iterator[Any]:
    for images, labels, indices in batches:
        top = (images.shape[-2] - size) // 2
        left = (images.shape[-1] - size) // 2
        yield images[..., top : top + size, left : left + size], labels, indices


def _use_labels(ctx: _Context, model: EvalModel) -> bool:
    if ctx.config["labels"] == "ignore":
        return False
    classes = getattr(ctx.source, "classes", None)
    return classes is not None and len(classes) == getattr(model.module, "num_classes", -1)


def _run_consistency(ctx: _Context, model: EvalModel) -> dict[str, Any]:
    cfg, out = ctx.config["consistency"], {}
    for protocol in cfg["protocols"]:
        batches = ctx.batches(
            model, ctx.config["resize"], ctx.config["crop"], "consistency", protocol, _use_labels(ctx, model)
        )
        if protocol == "circular":
            batches = _centre(batches, ctx.config["crop"] - cfg["max_shift"])
        out[protocol] = _consistency.shift_consistency(
            model.module,
            batches,
            protocol=protocol,
            max_shift=cfg["max_shift"],
            seed=ctx.config["seed"],
            device=ctx.device,
        )
    return out


def _run_diagonal(ctx: _Context, model: EvalModel) -> dict[str, Any]:
    batches = ctx.batches(
        model, ctx.config["resize"], ctx.config["crop"], "diagonal", "diagonal", _use_labels(ctx, model)
    )
    return _consistency.diagonal_shift_curve(
        model.module, batches, max_shift=ctx.config["diagonal"]["max_shift"], device=ctx.device
    )


def _run_features(ctx: _Context, model: EvalModel) -> dict[str, Any]:
    cfg = ctx.config["features"]
    batches = ctx.batches(model, cfg["size"], cfg["size"], "features", "features")
    return feature_distance(
        model.module,
        batches,
        layers=cfg["layers"],
        shifts=cfg["shifts"],
        fractional=cfg["fractional"],
        device=ctx.device,
    )


def _run_sensitivity(ctx: _Context, model: EvalModel) -> dict[str, Any]:
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
                device=ctx.device,
            )
    return out


def _run_deformation(ctx: _Context, model: EvalModel) -> dict[str, Any]:
    cfg = ctx.config["deformation"]
    batches = ctx.batches(model, cfg["size"], cfg["size"], "deformation", "deformation")
    return deformation_sensitivity(
        model.module,
        batches,
        strengths=cfg["strengths"],
        grid=cfg["grid"],
        layers=cfg["layers"],
        seed=ctx.config["seed"],
        bootstrap=cfg["bootstrap"],
        device=ctx.device,
    )


def _run_smoothness(ctx: _Context, model: EvalModel) -> dict[str, Any]:
    return filter_smoothness(model.module)


def _run_generation(ctx: _Context, model: EvalModel) -> dict[str, Any]:
    cfg = ctx.config["generation"]
    batches = ctx.batches(model, cfg["size"], cfg["size"], "generation", "generation")
    return generation_stability(
        model.module,
        batches,
        max_shift=cfg["max_shift"],
        data_range=cfg["data_range"],
        seed=ctx.config["seed"],
        device=ctx.device,
    )


RUNNERS: dict[str, Callable[[_Context, EvalModel], dict[str, Any]]] = {
    "consistency": _run_consistency,
    "diagonal": _run_diagonal,
    "features": _run_features,
    "sensitivity": _run_sensitivity,
    "deformation": _run_deformation,
    "smoothness": _run_smoothness,
    "generation": _run_generation,
}


def run_eval(
    models: Sequence[EvalModel] | dict[str, nn.Module],
    config: dict[str, Any] | None = None,
    *,
    source: ImageSource | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    device: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``config["metrics"]`` on every model; write JSON/CSV/PNG to ``out_dir`` (rank 0) if given.

    ``models``: :class:`EvalModel` s or ``{name: classifier module}``. ``source`` overrides
    ``config["data"]``. Classifier metrics skip generators and vice versa (noted in the log).
    Returns ``{"config", "data": {"source", "images"}, "models": {name: {"weights", metric: result}}}``.
    """
    config = config if config is not None else load_config()
    if isinstance(models, dict):
        models = [EvalModel(name, module) for name, module in models.items()]
    if not models:
        raise ValueError("no models to evaluate")
    source = (
        source
        if source is not None
        else open_source(
            config["data"], split=config["split"], image_key=config["image_key"], label_key=config["label_key"]
        )
    )
    ctx = _Context(source, config, progress, device)
    results: dict[str, Any] = {
        "config": config,
        "data": {
            "source": getattr(source, "name", str(config["data"])),
            "images": len(source),
            "world_size": rank_world()[1],
        },
        "models": {},
    }
    for model in models:
        entry: dict[str, Any] = {"weights": model.weights, "kind": model.kind}
        for metric in config["metrics"]:
            applies = metric in (GENERATOR_METRICS if model.kind == "generator" else CLASSIFIER_METRICS)
            if not applies:
                if is_main():
                    log(f"skip {metric} for {model.name}: not a metric of {model.kind}s")
                continue
            entry[metric] = RUNNERS[metric](ctx, model)
            if is_main():
                log(f"{model.name} {metric}: {_headline(metric, entry[metric])}")
        results["models"][model.name] = entry
    if out_dir is not None and is_main():
        from zoo.eval.report import write_report

        for path in write_report(results, Path(out_dir)):
            log(f"wrote {path}")
    return results


def _headline(metric: str, r: dict[str, Any]) -> str:
    if metric == "consistency":
        return ", ".join(
            f"{p} {v['consistency']:.2f}% [{v['ci95'][0]:.1f}, {v['ci95'][1]:.1f}] (n={v['n']})" for p, v in r.items()
        )
    if metric == "diagonal":
        return f"mean P over shifts {sum(r['prob']) / max(1, len(r['prob'])):.4f} (n={r['n']})"
    if metric == "features":
        return ", ".join(f"{k} {v['mean']:.4f}" for k, v in r["layers"].items() if v["mean"] is not None)
    if metric == "sensitivity":
        return ", ".join(f"{k} {v['p_change']:.3f}" for k, v in r.items())
    if metric == "deformation":
        return ", ".join(f"{k} {v['sensitivity'][-1]:.3f}@C={r['strengths'][-1]}" for k, v in r["layers"].items())
    if metric == "smoothness":
        return f"mean TV/L1 {r['mean']:.4f} over {r['filters']} filters"
    if metric == "generation":
        return f"PSNR {r['psnr']:.2f} dB (n={r['n']})"
    return ""
