"""Orchestration of the benchmark: models, layers, memory; returns one JSON-able dict."""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from zoo.benchmark.cases import FRESH_COPY, MODEL_GROUPS, build_group, layer_cases
from zoo.benchmark.memory import cuda_step_peak, training_step_peak
from zoo.benchmark.timing import paired_summary, time_interleaved

PRECISIONS: tuple[str, ...] = ("fp32", "bf16")  # bf16 = torch.autocast(dtype=torch.bfloat16)


@dataclass
class BenchConfig:
    """Benchmark settings; ``quick()`` gives a short smoke run."""

    archs: list[str] = field(default_factory=lambda: list(MODEL_GROUPS))
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    train_batch_sizes: list[int] = field(default_factory=lambda: [8])
    image_size: int = 224
    threads: int = 2
    repeats: int = 5
    layer_repeats: int = 11
    channels_last: list[bool] = field(default_factory=lambda: [False, True])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    device: str = "cpu"
    memory: bool = True
    layers: bool = True
    models: bool = True
    quick_layers: bool = False

    @classmethod
    def quick(cls) -> BenchConfig:
        return cls(
            archs=["resnet18"],
            batch_sizes=[1],
            train_batch_sizes=[2],
            image_size=112,
            repeats=3,
            layer_repeats=5,
            quick_layers=True,
        )

    @property
    def train_batch(self) -> int:
        """The batch of the memory section (the first training batch)."""
        return self.train_batch_sizes[0]

    def validate(self) -> None:
        unknown = [a for a in self.archs if a not in MODEL_GROUPS]
        if unknown:
            raise ValueError(f"unknown archs {unknown}; valid: {', '.join(MODEL_GROUPS)}")
        for name in ("image_size", "threads", "repeats", "layer_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("batch_sizes", "train_batch_sizes"):
            values = getattr(self, name)
            if not values or min(values) < 1:
                raise ValueError(f"{name} must be a non-empty list of ints >= 1, got {values}")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise ValueError(f"unknown precisions {bad}; valid: {', '.join(PRECISIONS)}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")


def _fmt(cl: bool) -> torch.memory_format:
    return torch.channels_last if cl else torch.contiguous_format


@contextlib.contextmanager
def _precision(device: str, precision: str) -> Iterator[None]:
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        yield


def _infer_fn(model: nn.Module, x: torch.Tensor, device: str, precision: str) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode(), _precision(device, precision):
            return model(x)

    return run


def _train_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str, precision: str) -> Callable[[], object]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def run() -> object:
        opt.zero_grad(set_to_none=True)
        with _precision(device, precision):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return run


def _sync(device: str) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device == "cuda" else None


def bench_models(cfg: BenchConfig) -> list[dict]:
    rows = []
    dev = cfg.device
    for arch in cfg.archs:
        models = {src: m.to(dev) for src, m in build_group(arch).items()}
        x0 = torch.randn(1, 3, cfg.image_size, cfg.image_size, device=dev)
        with torch.inference_mode():
            same = (models["zoo"].eval()(x0) - models["official"].eval()(x0)).abs().max().item()
        for cl in cfg.channels_last:
            for m in models.values():
                m.to(memory_format=_fmt(cl))
            tasks = [("inference", b) for b in cfg.batch_sizes] + [("train", b) for b in cfg.train_batch_sizes]
            for precision in cfg.precisions:
                for task, batch in tasks:
                    x = torch.randn(batch, 3, cfg.image_size, cfg.image_size, device=dev)
                    x = x.contiguous(memory_format=_fmt(cl))
                    if task == "inference":
                        fns = {src: _infer_fn(m.eval(), x, dev, precision) for src, m in models.items()}
                    else:
                        y = torch.randint(0, 1000, (batch,), device=dev)
                        fns = {src: _train_fn(m.train(), x, y, dev, precision) for src, m in models.items()}
                    desc = f"{arch} {task} b{batch} {precision}{' CL' if cl else ''}"
                    times = time_interleaved(fns, cfg.repeats, warmup=1, desc=desc, sync=_sync(dev))
                    summary = paired_summary(times, "torchvision")
                    rows.append(
                        dict(arch=arch, task=task, batch=batch, channels_last=cl, precision=precision)
                        | {"zoo_vs_official_max_abs_diff": same, "results": summary, "names": MODEL_GROUPS[arch]}
                    )
    return rows


def _no_grad_call(layer: nn.Module, x: torch.Tensor) -> object:
    with torch.no_grad():
        return layer(x)


def _fwd_bwd_call(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> object:
    x.grad = None
    out = layer(x)
    out.backward(grad)
    return x.grad


def bench_layers(cfg: BenchConfig) -> list[dict]:
    """Every layer case in both directions: ``forward`` (no grad) and ``forward+backward``."""
    rows = []
    dev = cfg.device
    for case in layer_cases(cfg.quick_layers):
        for cl in cfg.channels_last:
            x = torch.randn(case.shape, device=dev).contiguous(memory_format=_fmt(cl))
            buf = torch.empty_like(x)
            layers = {name: build(case.shape[1]).to(dev) for name, build in case.candidates.items()}
            for task in ("forward", "forward+backward"):
                fns: dict[str, Callable[[], object]] = {"copy": lambda buf=buf, x=x: buf.copy_(x)}
                if task == "forward":
                    for name, layer in layers.items():
                        fns[name] = lambda layer=layer, x=x: _no_grad_call(layer, x)
                else:
                    fns[FRESH_COPY] = lambda x=x: x.clone()  # what writing a new input-size tensor (the dx) costs
                    xg = x.detach().clone().requires_grad_()
                    for name, layer in layers.items():
                        with torch.no_grad():  # per layer: timm's symmetric padding gives another shape
                            grad = torch.randn_like(layer(x))
                        fns[name] = lambda layer=layer, xg=xg, grad=grad: _fwd_bwd_call(layer, xg, grad)
                desc = f"{case.name} {task}{' CL' if cl else ''}"
                times = time_interleaved(fns, cfg.layer_repeats, warmup=1, desc=desc, sync=_sync(dev))
                factor = case.floor_factor * (2 if task == "forward+backward" else 1)
                vs_copy = paired_summary(times, "copy")
                vs_official = paired_summary(times, "official")
                results = {
                    name: {
                        "median_ms": vs_copy[name]["median_ms"],
                        "x_floor": vs_copy[name]["ratio"] / factor,
                        "x_official": vs_official[name]["ratio"],
                    }
                    for name in times
                }
                rows.append(
                    dict(layer=case.name, task=task, shape=list(case.shape), channels_last=cl)
                    | {"floor_ms": vs_copy["copy"]["median_ms"] * factor, "results": results}
                )
    return rows


def bench_memory(cfg: BenchConfig) -> list[dict]:
    rows = []
    for arch in cfg.archs:
        for src, name in MODEL_GROUPS[arch].items():
            if cfg.device == "cuda":
                res = cuda_step_peak(src, name, cfg.train_batch, cfg.image_size)
            else:
                res = training_step_peak(src, name, cfg.train_batch, cfg.image_size, cfg.threads)
            rows.append(dict(arch=arch, source=src, model=name) | res)
    return rows


def cpu_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU model (Linux ``/proc/cpuinfo``'s ``model name``), else what ``platform`` knows.

    Kernel speed ratios depend on it (BLAS and oneDNN pick code paths per CPU), so results record it.
    """
    with contextlib.suppress(OSError), open(cpuinfo, encoding="utf-8", errors="replace") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or platform.machine()


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
            "processor": cpu_name(),
            "threads": torch.get_num_threads(),
            "device": cfg.device if cfg.device == "cpu" else torch.cuda.get_device_name(),
            "dtype": "float32",
        },
    }
    out["models"] = bench_models(cfg) if cfg.models else []
    out["layers"] = bench_layers(cfg) if cfg.layers else []
    out["memory"] = bench_memory(cfg) if cfg.memory else []
    return out
