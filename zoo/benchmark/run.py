"""Orchestration of the benchmark: models, layers, memory; returns one JSON-able dict."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from zoo.benchmark.cases import MODEL_GROUPS, build_group, layer_cases
from zoo.benchmark.memory import training_step_peak
from zoo.benchmark.timing import paired_summary, time_interleaved


@dataclass
class BenchConfig:
    """Benchmark settings; ``quick()`` gives a short smoke run."""

    archs: list[str] = field(default_factory=lambda: list(MODEL_GROUPS))
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    train_batch: int = 8
    image_size: int = 224
    threads: int = 2
    repeats: int = 5
    layer_repeats: int = 15
    channels_last: list[bool] = field(default_factory=lambda: [False, True])
    memory: bool = True
    layers: bool = True
    models: bool = True
    quick_layers: bool = False

    @classmethod
    def quick(cls) -> BenchConfig:
        return cls(
            archs=["resnet18"],
            batch_sizes=[1],
            train_batch=2,
            image_size=112,
            repeats=3,
            layer_repeats=5,
            quick_layers=True,
        )

    def validate(self) -> None:
        unknown = [a for a in self.archs if a not in MODEL_GROUPS]
        if unknown:
            raise ValueError(f"unknown archs {unknown}; valid: {', '.join(MODEL_GROUPS)}")
        for name in ("train_batch", "image_size", "threads", "repeats", "layer_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"batch_sizes must be a non-empty list of ints >= 1, got {self.batch_sizes}")


def _fmt(cl: bool) -> torch.memory_format:
    return torch.channels_last if cl else torch.contiguous_format


def _infer_fn(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            return model(x)

    return run


def _train_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], object]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def run() -> object:
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return run


def bench_models(cfg: BenchConfig) -> list[dict]:
    rows = []
    for arch in cfg.archs:
        models = build_group(arch)
        x0 = torch.randn(1, 3, cfg.image_size, cfg.image_size)
        with torch.inference_mode():
            same = (models["zoo"].eval()(x0) - models["official"].eval()(x0)).abs().max().item()
        for cl in cfg.channels_last:
            for m in models.values():
                m.to(memory_format=_fmt(cl))
            tasks = [("inference", b) for b in cfg.batch_sizes] + [("train", cfg.train_batch)]
            for task, batch in tasks:
                x = torch.randn(batch, 3, cfg.image_size, cfg.image_size).contiguous(memory_format=_fmt(cl))
                if task == "inference":
                    fns = {src: _infer_fn(m.eval(), x) for src, m in models.items()}
                else:
                    y = torch.randint(0, 1000, (batch,))
                    fns = {src: _train_fn(m.train(), x, y) for src, m in models.items()}
                desc = f"{arch} {task} b{batch}{' CL' if cl else ''}"
                times = time_interleaved(fns, cfg.repeats, warmup=1, desc=desc)
                summary = paired_summary(times, "torchvision")
                rows.append(
                    dict(arch=arch, task=task, batch=batch, channels_last=cl, zoo_vs_official_max_abs_diff=same)
                    | {"results": summary, "names": MODEL_GROUPS[arch]}
                )
    return rows


def bench_layers(cfg: BenchConfig) -> list[dict]:
    rows = []
    for case in layer_cases(cfg.quick_layers):
        for cl in cfg.channels_last:
            x = torch.randn(case.shape).contiguous(memory_format=_fmt(cl))
            buf = torch.empty_like(x)
            layers = {name: build(case.shape[1]) for name, build in case.candidates.items()}
            fns: dict[str, Callable[[], object]] = {"copy": lambda buf=buf, x=x: buf.copy_(x)}
            for name, layer in layers.items():
                fns[name] = lambda layer=layer, x=x: _no_grad_call(layer, x)
            times = time_interleaved(fns, cfg.layer_repeats, warmup=1, desc=f"{case.name}{' CL' if cl else ''}")
            vs_copy = paired_summary(times, "copy")
            vs_official = paired_summary(times, "official")
            results = {
                name: {
                    "median_ms": vs_copy[name]["median_ms"],
                    "x_floor": vs_copy[name]["ratio"] / case.floor_factor,
                    "x_official": vs_official[name]["ratio"],
                }
                for name in times
            }
            floor_ms = vs_copy["copy"]["median_ms"] * case.floor_factor
            rows.append(
                dict(layer=case.name, shape=list(case.shape), channels_last=cl, floor_ms=floor_ms)
                | {"results": results}
            )
    return rows


def _no_grad_call(layer: nn.Module, x: torch.Tensor) -> object:
    with torch.no_grad():
        return layer(x)


def bench_memory(cfg: BenchConfig) -> list[dict]:
    rows = []
    for arch in cfg.archs:
        for src, name in MODEL_GROUPS[arch].items():
            res = training_step_peak(src, name, cfg.train_batch, cfg.image_size, cfg.threads)
            rows.append(dict(arch=arch, source=src, model=name) | res)
    return rows


def run_benchmark(cfg: BenchConfig) -> dict:
    """Run every section enabled in ``cfg`` and return the results (see ``report`` for output)."""
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(0)
    out: dict = {
        "config": asdict(cfg),
        "env": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "threads": torch.get_num_threads(),
            "dtype": "float32",
        },
    }
    out["models"] = bench_models(cfg) if cfg.models else []
    out["layers"] = bench_layers(cfg) if cfg.layers else []
    out["memory"] = bench_memory(cfg) if cfg.memory else []
    return out
