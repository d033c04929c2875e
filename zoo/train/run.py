"""``finetune(cfg)``: data -> model(s) -> run directory -> training -> logs, plots and the twin comparison.

Everything that can be wrong with the input (config, dataset, weights, resume checkpoint) is checked
before the run directory is created, so a failed start never overwrites or leaves anything.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from zoo.builder import create
from zoo.registry import get_entry
from zoo.train.checkpoint import STATE_NAME, check_compatible, load_train_state
from zoo.train.config import FinetuneConfig, config_to_dict, load_config
from zoo.train.data import build_data
from zoo.train.distributed import DistContext, broadcast_object, setup
from zoo.train.loop import ModelRun, RunResult, fingerprint, train_model
from zoo.train.report import comparison_rows, format_table, plot_comparison
from zoo.weights.errors import WeightsUnavailableError
from zoo.weights.io import atomic_write

__all__ = ["FinetuneResult", "build_model", "finetune", "twin_name"]


@dataclass
class FinetuneResult:
    """The runs of one ``finetune`` call and where they were written."""

    root: Path
    runs: list[RunResult] = field(default_factory=list)
    table: str = ""

    def __getitem__(self, name: str) -> RunResult:
        for run in self.runs:
            if run.name == name:
                return run
        raise KeyError(f"no run named {name!r}; runs: {', '.join(r.name for r in self.runs)}")


class _Log:
    """Messages of rank 0: printed, and appended to ``train.log`` once the run directory exists."""

    def __init__(self, ctx: DistContext) -> None:
        self.ctx, self.lines, self.path = ctx, [], None

    def __call__(self, message: str) -> None:
        if not self.ctx.is_main:
            return
        print(message, flush=True)
        self.lines.append(message)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(message + "\n")

    def attach(self, path: Path) -> None:
        if self.ctx.is_main:
            self.path = path
            path.write_text("".join(line + "\n" for line in self.lines), encoding="utf-8")


def twin_name(name: str) -> str:
    """The other member of the pair: ``resnet18_aa4`` <-> ``resnet18``."""
    entry = get_entry(name)
    if entry.antialiased:
        return entry.arch
    raise ValueError(f"model.twin=true needs an anti-aliased model (e.g. {entry.arch}_aa4), got the baseline {name!r}")


def build_model(cfg: FinetuneConfig, name: str, num_classes: int) -> tuple[torch.nn.Module, str, str]:
    """``(model, init, detail)``: ``init`` is ``"pretrained"`` or ``"random"``, ``detail`` says why.

    ``model.pretrained=auto`` falls back to random initialisation when no weights are reachable.
    """
    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_chans": cfg.model.in_chans}
    if cfg.model.drop_rate:
        kwargs["drop_rate"] = cfg.model.drop_rate
    wanted = cfg.model.pretrained
    torch.manual_seed(cfg.train.seed)
    if wanted is False:
        return create(name, **kwargs), "random", "random initialisation (model.pretrained=false)"
    try:
        model = create(name, pretrained=True if wanted == "auto" else wanted, **kwargs)
    except (WeightsUnavailableError, ModuleNotFoundError) as err:
        if wanted != "auto":
            raise
        attempts = getattr(err, "attempts", [])
        reason = "; ".join(f"{src}: {why}" for src, why in attempts[:2]) or str(err).splitlines()[0]
        torch.manual_seed(cfg.train.seed)
        detail = f"PRETRAINED WEIGHTS UNREACHABLE, training from random initialisation ({reason})"
        return create(name, **kwargs), "random (no weights)", detail
    source = getattr(model, "pretrained_cfg", {}).get("tag") or wanted
    return model, "pretrained", f"pretrained weights loaded ({source})"


def _norm(cfg: FinetuneConfig, model: torch.nn.Module) -> tuple[list[float], list[float]]:
    if cfg.data.mean is not None:
        return [float(v) for v in cfg.data.mean], [float(v) for v in cfg.data.std]
    pcfg = getattr(model, "pretrained_cfg", {}) or {}
    mean, std = list(pcfg.get("mean", (0.485, 0.456, 0.406))), list(pcfg.get("std", (0.229, 0.224, 0.225)))
    c = cfg.model.in_chans
    if len(mean) != c:
        mean, std = [sum(mean) / len(mean)] * c, [sum(std) / len(std)] * c
    return mean, std


def _resume_dir(resume: Path, name: str, single: bool) -> Path:
    if single and (resume / STATE_NAME).is_file():
        return resume
    return resume / name


def _new_root(cfg: FinetuneConfig) -> Path:
    """``output.dir/output.name``, or ``-2``, ``-3``... when it exists already (never overwritten)."""
    base = Path(cfg.output.dir) / (cfg.output.name or "finetune")
    base.parent.mkdir(parents=True, exist_ok=True)
    for k in range(1, 10_000):
        root = base if k == 1 else base.with_name(f"{base.name}-{k}")
        try:
            root.mkdir()
            return root
        except FileExistsError:
            continue
    raise RuntimeError(f"no free run directory next to {base}")


def _threads(cfg: FinetuneConfig) -> None:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)


def finetune(
    config: FinetuneConfig | str | os.PathLike | None = None, overrides: Iterable[str] = (), **values: Any
) -> FinetuneResult:
    """Fine-tune the configured model (and its non-anti-aliased twin when ``model.twin``).

    ``config``: a ``FinetuneConfig`` or a YAML path; ``overrides``: ``"key=value"`` strings;
    ``values``: ``section__key=value`` keyword overrides. Under ``torchrun`` each process trains on its
    shard (DDP); only rank 0 writes files and prints.
    """
    cfg = config if isinstance(config, FinetuneConfig) else load_config(config, overrides, **values)
    if isinstance(config, FinetuneConfig) and (overrides or values):
        raise ValueError("pass overrides with a config path, or edit the FinetuneConfig directly")
    _threads(cfg)
    ctx = setup(cfg.train.device)
    try:
        return _finetune(cfg, ctx)
    finally:
        ctx.close()


def _finetune(cfg: FinetuneConfig, ctx: DistContext) -> FinetuneResult:
    log = _Log(ctx)
    names = [cfg.model.name] + ([twin_name(cfg.model.name)] if cfg.model.twin else [])
    for name in names:
        get_entry(name)
    probe = create(names[0], num_classes=1, in_chans=cfg.model.in_chans)
    mean, std = _norm(cfg, probe)
    bundle = build_data(cfg.data, cfg.model.in_chans, mean, std)
    log(f"data: {bundle.description}")
    if bundle.skipped:
        log(f"data: skipped {len(bundle.skipped)} unreadable image(s):")
        for path, reason in bundle.skipped[:20]:
            log(f"  {path}: {reason}")
        if len(bundle.skipped) > 20:
            log(f"  ... and {len(bundle.skipped) - 20} more (all listed in data_report.json)")
    runs: list[ModelRun] = []
    resume = Path(cfg.train.resume) if cfg.train.resume else None
    for name in names:
        model, init, detail = build_model(cfg, name, bundle.num_classes)
        log(f"[{name}] {detail}")
        state, run_dir = None, Path()
        if resume is not None:
            run_dir = _resume_dir(resume, name, len(names) == 1)
            state = load_train_state(run_dir)
            check_compatible(state, fingerprint(cfg, name, bundle.classes), run_dir)
            if int(state["epoch"]) >= cfg.train.epochs:
                raise ValueError(
                    f"{run_dir} has already trained {state['epoch']} of train.epochs={cfg.train.epochs}; "
                    "raise train.epochs to continue"
                )
            init = f"{init}, resumed at epoch {state['epoch']}"
        runs.append(ModelRun(name, model, init, run_dir, state))
    if resume is not None:
        root = runs[0].run_dir.parent
    else:
        root = Path(broadcast_object(str(_new_root(cfg)) if ctx.is_main else None, ctx))
        for run in runs:
            run.run_dir = root / run.name
    log.attach(root / "train.log")
    if ctx.is_main:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        atomic_write(
            root / ("config.yaml" if resume is None else f"config-resume-{stamp}.yaml"),
            yaml.safe_dump(config_to_dict(cfg), sort_keys=False),
        )
        atomic_write(
            root / "data_report.json",
            json.dumps(
                {"description": bundle.description, "classes": bundle.classes, "skipped": bundle.skipped}, indent=2
            )
            + "\n",
        )
    log(f"run directory: {root}")
    results = FinetuneResult(root)
    for run in runs:
        results.runs.append(train_model(run, cfg, bundle, ctx, log, mean, std))
        log(f"[{run.name}] checkpoint: {run.run_dir}  (zoo.create({run.name!r}, pretrained={str(run.run_dir)!r}))")
    _summarize(results, cfg, ctx, log)
    return results


def _summarize(results: FinetuneResult, cfg: FinetuneConfig, ctx: DistContext, log: _Log) -> None:
    runs = [r.as_dict() for r in results.runs]
    rows = comparison_rows(runs)
    results.table = format_table(rows)
    max_shift = results.runs[0].history[-1].get("max_shift") if results.runs and results.runs[0].history else None
    protocol = f"{cfg.eval.protocol} shifts up to {max_shift} px, seed {cfg.eval.seed}" if max_shift else "not measured"
    log("")
    log(f"results on the held-out set (consistency: {protocol}):")
    log(results.table)
    if ctx.is_main:
        atomic_write(results.root / "comparison.md", format_table(rows, markdown=True) + "\n")
        atomic_write(
            results.root / "comparison.json",
            json.dumps({"protocol": protocol, "runs": runs}, indent=2, default=str) + "\n",
        )
        if cfg.output.plots and len(runs) > 1:
            plot_comparison(results.root / "comparison.png", runs, f"{cfg.output.name}: same seed and recipe")
            log(f"plots: {results.root / 'comparison.png'} and <run>/curves.png")
