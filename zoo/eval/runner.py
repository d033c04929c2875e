"""``run_eval``: every requested metric for every model over one data source (what ``zoo eval`` runs)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml
from torch import nn

from zoo.config import PRETRAINED_POLICIES
from zoo.constants import IMAGENET_MEAN, IMAGENET_STD
from zoo.distributed import is_main, rank_world
from zoo.eval import consistency as _consistency
from zoo.eval import report as _report
from zoo.eval.consistency import ConsistencyResult, DiagonalResult
from zoo.eval.data import ImageSource, open_source
from zoo.eval.deformation import DeformationResult, SmoothnessResult, deformation_sensitivity, filter_smoothness
from zoo.eval.features import FeatureResult, feature_distance
from zoo.eval.generation import GenerationResult, generation_stability
from zoo.eval.registry import METRICS, Context, Metric, Paired, centre, register
from zoo.eval.results import Result
from zoo.eval.sensitivity import SensitivityResult, shift_sensitivity

__all__ = [
    "DEFAULTS_PATH",
    "EvalModel",
    "load_eval_config",
    "load_models",
    "run_eval",
]

DEFAULTS_PATH = Path(__file__).with_name("defaults.yaml")
R = TypeVar("R", bound=Result)
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


def _run_consistency(ctx: Context, model: EvalModel) -> dict[str, ConsistencyResult]:
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
        out[protocol] = _consistency.shift_consistency(
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


class _Restream:
    """A re-iterable stream: every ``iter()`` starts the data stream again (for multi-pass protocols)."""

    def __init__(self, make: Callable[[], Iterable[Any]]) -> None:
        self.make = make

    def __iter__(self) -> Iterator[Any]:
        return iter(self.make())


def _run_diagonal(ctx: Context, model: EvalModel) -> DiagonalResult:
    batches = ctx.batches(
        model, ctx.config["resize"], ctx.config["crop"], "diagonal", "diagonal", ctx.use_labels(model)
    )
    return _consistency.diagonal_shift_curve(
        model.module,
        batches,
        max_shift=ctx.config["diagonal"]["max_shift"],
        groups=ctx.groups("diagonal"),
        device=ctx.device,
    )


def _run_on_squares(
    ctx: Context, model: EvalModel, name: str, fn: Callable[..., R], keys: Sequence[str], **extra: Any
) -> R:
    """``fn`` on ``config[name]["size"]``-pixel squares, with the settings ``keys`` of ``config[name]``."""
    cfg = ctx.config[name]
    batches = ctx.batches(model, cfg["size"], cfg["size"], name, name)
    settings = {key: cfg[key] for key in keys}
    return fn(model.module, batches, **settings, **extra, groups=ctx.groups(name), device=ctx.device)


def _run_features(ctx: Context, model: EvalModel) -> FeatureResult:
    return _run_on_squares(ctx, model, "features", feature_distance, ("layers", "shifts", "on_grid", "fractional"))


def _run_sensitivity(ctx: Context, model: EvalModel) -> dict[str, SensitivityResult]:
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


def _run_deformation(ctx: Context, model: EvalModel) -> DeformationResult:
    keys = ("strengths", "grid", "layers", "bootstrap")
    return _run_on_squares(ctx, model, "deformation", deformation_sensitivity, keys, seed=ctx.config["seed"])


def _run_smoothness(ctx: Context, model: EvalModel) -> SmoothnessResult:
    return filter_smoothness(model.module)


def generator_range(cfg: dict[str, Any]) -> tuple[float, float, float]:
    """``(low, high, data_range)`` of a generator's pixels from ``generation.input_range`` / ``data_range``."""
    rng = cfg["input_range"]
    if not (isinstance(rng, (list, tuple)) and len(rng) == 2 and all(isinstance(v, (int, float)) for v in rng)):
        raise ValueError(f"generation.input_range must be [low, high], e.g. [-1, 1] or [0, 1], got {rng!r}")
    low, high = float(rng[0]), float(rng[1])
    if not high > low:
        raise ValueError(f"generation.input_range needs low < high, got {rng!r}")
    data_range = cfg["data_range"] if cfg["data_range"] is not None else high - low
    return low, high, float(data_range)


def _run_generation(ctx: Context, model: EvalModel) -> GenerationResult:
    cfg = ctx.config["generation"]
    low, high, data_range = generator_range(cfg)
    # pixels in [0, 1] -> (x - mean) / std in [low, high]
    model = copy.copy(model)
    model.mean, model.std = (-low / (high - low),) * 3, (1.0 / (high - low),) * 3
    batches = ctx.batches(model, cfg["size"], cfg["size"], "generation", "generation")
    out = generation_stability(
        model.module,
        batches,
        max_shift=cfg["max_shift"],
        data_range=data_range,
        seed=ctx.config["seed"],
        device=ctx.device,
    )
    out.input_range = [low, high]
    return out


def _register_builtin() -> None:
    from zoo.eval.plots import PLOTTERS

    def table(name: str) -> Any:
        return _report.TABLES[name]

    def plot(name: str) -> Any:
        return PLOTTERS[name]

    specs: list[tuple[str, Callable[[Context, EvalModel], Any], str]] = [
        ("consistency", _run_consistency, "classifier"),
        ("diagonal", _run_diagonal, "classifier"),
        ("features", _run_features, "classifier"),
        ("sensitivity", _run_sensitivity, "classifier"),
        ("deformation", _run_deformation, "classifier"),
        ("smoothness", _run_smoothness, "classifier"),
        ("generation", _run_generation, "generator"),
    ]
    for name, run, kind in specs:
        register(
            Metric(
                name,
                run,
                kind,
                headline=_HEADLINES[name],
                rows=table(name),
                plot=PLOTTERS.get(name),
                paired=_PAIRED.get(name),
            )
        )


def _paired_consistency(r: dict[str, ConsistencyResult]) -> Paired:
    return {
        f"consistency {p}": ("binary", dict(zip(v.per_image["index"], v.per_image["agree"])))
        for p, v in r.items()
        if v.procedure != "official"
    }


def _paired_features(r: FeatureResult) -> Paired:
    index = r.per_image["index"]
    return {
        f"feature distance {k} (on-grid)": ("continuous", dict(zip(index, r.per_image[k])))
        for k in r.layers
        if k in r.per_image
    }


def _paired_sensitivity(r: dict[str, SensitivityResult]) -> Paired:
    return {
        f"P(top-1 change) {k}": ("continuous", dict(zip(v.per_image["index"], v.per_image["p_change"])))
        for k, v in r.items()
    }


_PAIRED: dict[str, Callable[[Any], Paired]] = {
    "consistency": _paired_consistency,
    "features": _paired_features,
    "sensitivity": _paired_sensitivity,
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


def _headline_consistency(r: dict[str, ConsistencyResult]) -> str:
    return ", ".join(
        f"{p} {v.consistency:.2f}% [{v.ci95[0]:.1f}, {v.ci95[1]:.1f}] (n={v.n}, {v.n_eff} photos)" for p, v in r.items()
    )


def _headline_features(r: FeatureResult) -> str:
    return "on-grid " + ", ".join(
        f"{k} {v.mean:.4f}" if v.mean is not None else f"{k} n/a" for k, v in r.layers.items()
    )


def _headline_deformation(r: DeformationResult) -> str:
    return ", ".join(f"{k} {v.sensitivity[-1]:.3f}@C={r.strengths[-1]}" for k, v in r.layers.items())


_HEADLINES: dict[str, Callable[[Any], str]] = {
    "consistency": _headline_consistency,
    "diagonal": lambda r: f"mean P over shifts {sum(r.prob) / max(1, len(r.prob)):.4f} (n={r.n})",
    "features": _headline_features,
    "sensitivity": lambda r: ", ".join(f"{k} {v.p_change:.3f}" for k, v in r.items()),
    "deformation": _headline_deformation,
    "smoothness": lambda r: f"mean TV/L1 {r.mean:.4f} over {r.filters} filters",
    "generation": lambda r: f"PSNR {r.psnr:.2f} dB (n={r.n})",
}


_register_builtin()
from zoo.eval import clean as _clean  # noqa: E402,F401  (each registers its metric)
from zoo.eval import corruptions as _corruptions  # noqa: E402,F401
from zoo.eval import flip as _flip  # noqa: E402,F401
