"""``run_eval``: every requested metric for every model over one data source (what ``zoo eval`` runs)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from zoo.config import PRETRAINED_POLICIES
from zoo.constants import IMAGENET_MEAN, IMAGENET_STD
from zoo.distributed import is_main, rank_world

# each metric module registers its metric(s) when imported (METRICS keeps registry.ORDER, whatever the order here)
from zoo.eval import clean as _clean  # noqa: F401
from zoo.eval import consistency as _consistency  # noqa: F401
from zoo.eval import corruptions as _corruptions  # noqa: F401
from zoo.eval import deformation as _deformation  # noqa: F401
from zoo.eval import features as _features  # noqa: F401
from zoo.eval import flip as _flip  # noqa: F401
from zoo.eval import generation as _generation  # noqa: F401
from zoo.eval import report as _report
from zoo.eval import sensitivity as _sensitivity  # noqa: F401
from zoo.eval.data import ImageSource, open_source
from zoo.eval.registry import METRICS, Context

__all__ = [
    "DEFAULTS_PATH",
    "EvalModel",
    "load_eval_config",
    "load_models",
    "run_eval",
]

DEFAULTS_PATH = Path(__file__).with_name("defaults.yaml")
PROTOCOLS = ("seeded", "official")
# protocol: official = the release's ImageNet script: Resize(256) + CenterCrop(256), two 224 crops at
# per-batch offsets in 0..31, 5 passes over the data
OFFICIAL = {"resize": 256, "crop": 256, ("consistency", "max_shift"): 32, ("consistency", "passes"): 5}
_INT_KEYS = {"batch_size": 1, "num_workers": 0, "seed": 0, "resize": 1, "crop": 1}


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


def _get(config: dict[str, Any], key: Any) -> Any:
    return config[key[0]][key[1]] if isinstance(key, tuple) else config[key]


def _set(config: dict[str, Any], key: Any, value: Any) -> None:
    if isinstance(key, tuple):
        config[key[0]][key[1]] = value
    else:
        config[key] = value


def _check_int(name: str, value: Any, low: int, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        valid = f"an integer >= {low}" + (" or null" if allow_none else "")
        raise ValueError(f"{name} must be {valid}, got {value!r}")


def load_eval_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults (``zoo/eval/defaults.yaml``) <- the YAML file ``path`` <- ``overrides``; unknown keys raise.

    ``protocol: official`` fixes the release's ImageNet settings (:data:`OFFICIAL`); setting one of
    them to another value as well is an error.
    """
    defaults = yaml.safe_load(DEFAULTS_PATH.read_text())
    config = defaults
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"eval config {path} not found")
        config = _merge(config, yaml.safe_load(path.read_text()) or {}, "")
    config = _merge(config, overrides or {}, "")
    valid = ", ".join(METRICS)
    if not isinstance(config["metrics"], list):
        raise ValueError(f"metrics must be a list of metric names ({valid}), got {config['metrics']!r}")
    unknown = [m for m in config["metrics"] if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; valid: {valid}")
    if config["labels"] not in ("auto", "ignore"):
        raise ValueError(f"labels must be 'auto' or 'ignore', got {config['labels']!r}")
    if config["protocol"] not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {config['protocol']!r}")
    if config["protocol"] == "official":
        for key, value in OFFICIAL.items():
            given = _get(config, key)
            if given != value and given != _get(defaults, key):
                name = ".".join(key) if isinstance(key, tuple) else key
                raise ValueError(
                    f"protocol: official fixes {name}={value}; drop {name}={given!r} or use protocol: seeded"
                )
            _set(config, key, value)
    for key, low in _INT_KEYS.items():
        _check_int(key, config[key], low)
    _check_int("limit", config["limit"], 1, allow_none=True)
    if config["crop"] > config["resize"]:
        raise ValueError(f"crop ({config['crop']}) must not exceed resize ({config['resize']})")
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

    if pretrained not in PRETRAINED_POLICIES:
        raise ValueError(f"pretrained must be one of {', '.join(PRETRAINED_POLICIES)}, got {pretrained!r}")
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
    config = config if config is not None else load_eval_config()
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
    ctx = Context(source, config, progress, device)
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
        for name in config["metrics"]:
            metric = METRICS[name]
            if metric.kind != model.kind:
                if is_main():
                    log(f"skip {name} for {model.name}: not a metric of {model.kind}s")
                continue
            entry[name] = metric.run(ctx, model)
            if is_main() and metric.headline is not None and metric.finalize is None:
                log(f"{model.name} {name}: {metric.headline(entry[name])}")
        results["models"][model.name] = entry
    for name in config["metrics"]:
        metric = METRICS[name]
        by_model = {m: e[name] for m, e in results["models"].items() if name in e}
        if metric.finalize is not None and by_model:
            metric.finalize(by_model, config)
            if is_main() and metric.headline is not None:
                for m, r in by_model.items():
                    log(f"{m} {name}: {metric.headline(r)}")
    results["comparison"] = compare(results, ctx)
    if is_main():
        for pair, items in results["comparison"].items():
            for label, v in items.items():
                log(f"{pair}: {label} {v.diff:+.4g} [{v.ci95[0]:+.4g}, {v.ci95[1]:+.4g}] p={v.p:.3g}")
    if out_dir is not None and is_main():
        for path in _report.write_report(results, Path(out_dir)):
            log(f"wrote {path}")
    return results


def compare(results: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """The paired comparison of every pair of models on every metric that exposes per-image outcomes."""
    from zoo.eval.compare import compare_models

    per_model: dict[str, dict[str, Any]] = {}
    for model, entry in results["models"].items():
        quantities: dict[str, Any] = {}
        for name in ctx.config["metrics"]:
            metric = METRICS[name]
            if name in entry and metric.paired is not None:
                quantities.update(metric.paired(entry[name]))
        per_model[model] = quantities
    groups = ctx.groups(None)
    cfg = ctx.config["compare"]
    return compare_models(per_model, groups, rounds=cfg["bootstrap"], seed=ctx.config["seed"])
