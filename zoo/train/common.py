"""What every fine-tuning flow shares: the result record, Ctrl-C, model initialisation, run folders.

``zoo.train.run`` (classification), ``zoo.train.distill_run`` and ``zoo.train.segmentation`` import from here,
so none of them imports another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zoo.builder import create
from zoo.config import pretrained_policy
from zoo.constants import IMAGENET_MEAN, IMAGENET_STD
from zoo.registry import get_entry
from zoo.train.config import FinetuneConfig
from zoo.train.loop import RunResult
from zoo.weights.errors import WeightsUnavailableError

__all__ = [
    "FinetuneInterrupted",
    "FinetuneResult",
    "check_output",
    "init_model",
    "new_root",
    "norm_stats",
    "twin_name",
]


class FinetuneInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during training: ``str()`` says what was saved; ``root`` is the run to resume."""

    def __init__(self, saved: str, root: Path) -> None:
        message = f"{saved}; resume with train.resume={root}"
        super().__init__(message)
        self.message, self.saved, self.root = message, saved, root

    def __str__(self) -> str:
        return self.message


@dataclass
class FinetuneResult:
    """The runs of one ``finetune`` call and where they were written."""

    root: Path
    runs: list[RunResult] = field(default_factory=list)
    table: str = ""
    paired: list[dict[str, Any]] = field(default_factory=list)  # twin comparison (paired t, McNemar)
    report: dict[str, Any] = field(default_factory=dict)  # task=segmentation: the zoo.eval.segmentation_task report

    def __getitem__(self, name: str) -> RunResult:
        for run in self.runs:
            if run.name == name:
                return run
        raise KeyError(f"no run named {name!r}; runs: {', '.join(r.name for r in self.runs)}")


def twin_name(name: str) -> str:
    """The other member of the pair: ``resnet18_aa4`` <-> ``resnet18``."""
    entry = get_entry(name)
    if entry.antialiased:
        return entry.arch
    raise ValueError(f"model.twin=true needs an anti-aliased model (e.g. {entry.arch}_aa4), got the baseline {name!r}")


def init_model(
    cfg: FinetuneConfig, name: str, num_classes: int, seed: int | None = None
) -> tuple[torch.nn.Module, str, str]:
    """``(model, init, detail)``: ``init`` is ``"pretrained"`` or ``"random"``, ``detail`` says why.

    ``model.pretrained=auto`` falls back to random initialisation when no weights are reachable. The
    random parts (all of it, or the new classifier) come from ``seed`` (default ``train.seed``).
    """
    seed = cfg.train.seed if seed is None else seed
    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_chans": cfg.model.in_chans}
    if cfg.model.drop_rate:
        kwargs["drop_rate"] = cfg.model.drop_rate
    wanted = pretrained_policy(cfg.model.pretrained, "model.pretrained", allow_source=True)
    torch.manual_seed(seed)
    if wanted == "none":
        return create(name, **kwargs), "random", "random initialisation (model.pretrained=none)"
    try:
        model = create(name, pretrained=True if wanted in ("auto", "required") else wanted, **kwargs)
    except (WeightsUnavailableError, ModuleNotFoundError) as err:
        if wanted != "auto":
            raise
        attempts = getattr(err, "attempts", [])
        reason = "; ".join(f"{src}: {why}" for src, why in attempts[:2]) or str(err).splitlines()[0]
        torch.manual_seed(seed)
        detail = f"PRETRAINED WEIGHTS UNREACHABLE, training from random initialisation ({reason})"
        return create(name, **kwargs), "random (no weights)", detail
    source = getattr(model, "pretrained_cfg", {}).get("tag") or wanted
    return model, "pretrained", f"pretrained weights loaded ({source})"


def norm_stats(cfg: FinetuneConfig, model: torch.nn.Module) -> tuple[list[float], list[float]]:
    """``data.mean``/``data.std``, else the model's pretrained config, else ImageNet's; one value per channel."""
    if cfg.data.mean is not None:
        return [float(v) for v in cfg.data.mean], [float(v) for v in cfg.data.std]
    pcfg = getattr(model, "pretrained_cfg", {}) or {}
    mean, std = list(pcfg.get("mean", IMAGENET_MEAN)), list(pcfg.get("std", IMAGENET_STD))
    c = cfg.model.in_chans
    if len(mean) != c:
        mean, std = [sum(mean) / len(mean)] * c, [sum(std) / len(std)] * c
    return mean, std


def check_output(cfg: FinetuneConfig) -> None:
    """``output.dir`` must be a folder (or not exist yet): a clear error before any work."""
    out = Path(cfg.output.dir)
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"output.dir={cfg.output.dir}: {parent} is a file, not a folder; set output.dir=DIR")
        if parent.exists():
            break


def new_root(cfg: FinetuneConfig) -> Path:
    """``output.dir/output.name``, or ``-2``, ``-3``... when it exists already (never overwritten)."""
    check_output(cfg)
    base = Path(cfg.output.dir) / (cfg.output.name or "finetune")
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"output.dir={cfg.output.dir} cannot be created: {err.strerror or err}") from err
    for k in range(1, 10_000):
        root = base if k == 1 else base.with_name(f"{base.name}-{k}")
        try:
            root.mkdir()
            return root
        except FileExistsError:
            continue
    raise RuntimeError(f"no free run directory next to {base}")
