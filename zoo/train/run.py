"""``finetune(cfg)``: data -> model(s) -> run directory -> training -> logs, plots and the twin comparison.

Everything that can be wrong with the input (config, dataset, weights, resume checkpoint) is checked
before the run directory is created, so a failed start never overwrites or leaves anything.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import yaml

from zoo.builder import create
from zoo.distributed import DistContext, broadcast_object, setup
from zoo.io import atomic_write
from zoo.registry import get_entry
from zoo.train.checkpoint import STATE_NAME, CheckpointError, check_compatible, load_train_state
from zoo.train.common import (
    FinetuneInterrupted,
    FinetuneResult,
    check_output,
    init_model,
    new_root,
    norm_stats,
    twin_name,
)
from zoo.train.config import FinetuneConfig, config_to_dict, load_finetune_config
from zoo.train.data import build_data
from zoo.train.loop import ModelRun, fingerprint, train_model
from zoo.train.report import (
    comparison_rows,
    format_table,
    paired_comparison,
    paired_lines,
    plot_comparison,
    seed_rows,
)

__all__ = ["FinetuneInterrupted", "FinetuneResult", "finetune", "init_model", "twin_name"]


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


def _run_dir(root: Path, name: str, seed: int, seeds: int) -> Path:
    """Where one model of one seed lives: ``root/NAME`` (one seed) or ``root/seedS/NAME``."""
    return root / name if seeds == 1 else root / f"seed{seed}" / name


def _finished(state: dict[str, Any] | None, cfg: FinetuneConfig) -> bool:
    return bool(state and state.get("test") and (int(state["epoch"]) >= cfg.train.epochs or state.get("stopped_early")))


def _resume_states(
    cfg: FinetuneConfig, names: list[str], seeds: list[int], classes: list[str]
) -> tuple[Path, dict[tuple[int, str], tuple[Path, dict[str, Any] | None]]]:
    """``(root, {(seed, name): (run_dir, state or None)})`` of ``train.resume``; checked, nothing written.

    ``train.resume`` is the run directory (or, for one model and one seed, the model's own folder). A
    model without ``train_state.pt`` never started: it starts fresh. Raises when nothing is left to do.
    """
    resume = Path(cfg.train.resume or "")
    single = len(names) == 1 and len(seeds) == 1
    if single and (resume / STATE_NAME).is_file():
        root, dirs = resume.parent, {(seeds[0], names[0]): resume}
    else:
        root = resume
        dirs = {(s, n): _run_dir(root, n, s, len(seeds)) for s in seeds for n in names}
    if not root.is_dir():
        raise FileNotFoundError(
            f"no checkpoint to resume: {resume} does not exist (train.resume takes the run directory printed "
            "at the start, e.g. runs/digits)"
        )
    found = {key: (d / STATE_NAME).is_file() for key, d in dirs.items()}
    if not any(found.values()) and not (root / "config.yaml").is_file():
        raise FileNotFoundError(
            f"no checkpoint to resume: {resume} holds no {STATE_NAME} and is not a run directory "
            f"(expected {', '.join(str(d) for d in dirs.values())})"
        )
    out: dict[tuple[int, str], tuple[Path, dict[str, Any] | None]] = {}
    for (seed, name), d in dirs.items():
        state = load_train_state(d) if found[(seed, name)] else None
        if state is not None:
            check_compatible(state, fingerprint(cfg, name, classes), d)
            if state.get("seed", seed) != seed:
                raise CheckpointError(f"cannot resume from {d}: trained with seed {state['seed']}, this run {seed}")
        out[(seed, name)] = (d, state)
    if all(_finished(state, cfg) for _, state in out.values()):
        epochs = sorted({int(state["epoch"]) for _, state in out.values() if state})
        raise ValueError(
            f"{resume} has already trained {'/'.join(map(str, epochs))} of train.epochs={cfg.train.epochs} "
            "for every model (or stopped early); raise train.epochs to continue"
        )
    return root, out


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
    cfg = config if isinstance(config, FinetuneConfig) else load_finetune_config(config, overrides, **values)
    if isinstance(config, FinetuneConfig) and (overrides or values):
        raise ValueError("pass overrides with a config path, or edit the FinetuneConfig directly")
    _threads(cfg)
    if cfg.task == "segmentation":
        from zoo.train.segmentation import finetune_segmentation

        return finetune_segmentation(cfg)
    ctx = setup(cfg.train.device)
    try:
        return _finetune(cfg, ctx)
    finally:
        ctx.close()


def _init_kind(init: str) -> str:
    return "pretrained" if init.startswith("pretrained") else "random"


def _finetune(cfg: FinetuneConfig, ctx: DistContext) -> FinetuneResult:
    log = _Log(ctx)
    if cfg.distill.enabled:  # recovery by distillation: its own flow (zoo.train.distill_run)
        from zoo.train.distill_run import distill_finetune

        return distill_finetune(cfg, ctx, log)
    names = [cfg.model.name] + ([twin_name(cfg.model.name)] if cfg.model.twin else [])
    for name in names:
        get_entry(name)
    if cfg.train.resume is None:
        check_output(cfg)
    seeds = [cfg.train.seed + k for k in range(cfg.train.seeds)]
    probe = create(names[0], num_classes=1, in_chans=cfg.model.in_chans)
    mean, std = norm_stats(cfg, probe)
    bundle = build_data(cfg.data, cfg.model.in_chans, mean, std)
    log(f"data: {bundle.description}")
    if bundle.skipped:
        log(f"data: skipped {len(bundle.skipped)} unreadable image(s):")
        for path, reason in bundle.skipped[:20]:
            log(f"  {path}: {reason}")
        if len(bundle.skipped) > 20:
            log(f"  ... and {len(bundle.skipped) - 20} more (all listed in data_report.json)")
    resumed: dict[tuple[int, str], tuple[Path, dict[str, Any] | None]] = {}
    if cfg.train.resume is not None:
        root, resumed = _resume_states(cfg, names, seeds, bundle.classes)
    # the first seed's models now: missing weights and an initialisation mismatch fail before any write
    first = {name: init_model(cfg, name, bundle.num_classes, seeds[0]) for name in names}
    for name, (_, _, detail) in first.items():
        log(f"[{name}] {detail}")
    mismatch = len({_init_kind(init) for _, init, _ in first.values()}) > 1
    if mismatch:
        what = "; ".join(f"{n}: {detail}" for n, (_, _, detail) in first.items())
        if not cfg.model.allow_init_mismatch:
            raise ValueError(
                "the twins would start differently (one from pretrained weights, one from random "
                f"initialisation), so the comparison would measure the initialisation, not anti-aliasing ({what}); "
                "make both loadable, set model.pretrained=none, or set model.allow_init_mismatch=true to train anyway"
            )
        log(f"WARNING: model.allow_init_mismatch=true: the twins start differently ({what})")
    if cfg.train.resume is None:
        root = Path(broadcast_object(str(new_root(cfg)) if ctx.is_main else None, ctx))
    log.attach(root / "train.log")
    if ctx.is_main:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        atomic_write(
            root / ("config.yaml" if cfg.train.resume is None else f"config-resume-{stamp}.yaml"),
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
    current = ""
    try:
        for seed in seeds:
            for name in names:
                current = name if len(seeds) == 1 else f"{name} (seed {seed})"
                model, init, detail = (
                    first.pop(name) if seed == seeds[0] else init_model(cfg, name, bundle.num_classes, seed)
                )
                if seed != seeds[0]:
                    log(f"[{name} seed {seed}] {detail}")
                run_dir, state = resumed.get((seed, name), (_run_dir(root, name, seed, len(seeds)), None))
                if state is not None:
                    init = f"{init}, resumed at epoch {state['epoch']}"
                run = ModelRun(name, model, init, run_dir, state, seed)
                result = train_model(run, cfg, bundle, ctx, log, mean, std)
                results.runs.append(result)
                if not result.skipped:
                    log(f"[{name}] checkpoint: {run_dir}  (zoo.create({name!r}, pretrained={str(run_dir)!r}))")
    except KeyboardInterrupt:
        err = FinetuneInterrupted(_interrupted(root, names, seeds, cfg, current), root)
        log(f"interrupted: {err.message}")
        raise err from None
    _summarize(results, cfg, ctx, log, mismatch)
    return results


def _interrupted(root: Path, names: list[str], seeds: list[int], cfg: FinetuneConfig, current: str) -> str:
    """What an interrupted run has saved (the last complete epoch of each model) and how to resume it."""
    saved = []
    for seed in seeds:
        for name in names:
            label = name if len(seeds) == 1 else f"{name} seed {seed}"
            metrics = _run_dir(root, name, seed, len(seeds)) / "metrics.json"
            try:
                history = json.loads(metrics.read_text(encoding="utf-8"))["history"]
                saved.append(f"{label} epoch {history[-1]['epoch']}/{cfg.train.epochs}")
            except (OSError, ValueError, KeyError, IndexError):
                saved.append(f"{label} not started")
    return f"stopped while training {current}; saved in {root}: {', '.join(saved)} (each at its last complete epoch)"


def _summarize(results: FinetuneResult, cfg: FinetuneConfig, ctx: DistContext, log: _Log, mismatch: bool) -> None:
    runs = [r.as_dict() for r in results.runs]
    rows = comparison_rows(runs)
    per_seed = seed_rows(runs)
    results.paired = paired_comparison([{**r.as_dict(), "test": r.test} for r in results.runs])
    lines = paired_lines(results.paired)
    first = results.runs[0].test if results.runs else {}
    max_shift = first.get("max_shift")
    protocol = f"{cfg.eval.protocol} shifts up to {max_shift} px, seed {cfg.eval.seed}" if max_shift else "not measured"
    n_seeds = cfg.train.seeds
    interval = "Student t across seeds" if n_seeds > 1 else "one seed: Wilson over the test images (consistency only)"
    notes = [
        f"test split: {first.get('n', '-')} images, never used for a decision; each run's epoch is selected by "
        f"{cfg.train.monitor} on the validation split",
        f"consistency: {protocol}; 95% CI: {interval}",
    ]
    if mismatch:
        notes.append("WARNING: the twins started differently (model.allow_init_mismatch=true): see the init column")
    results.table = "\n".join([format_table(rows), *lines])
    log("")
    log(f"results on the test split ({len(runs)} run(s): {len(rows)} model(s) x {n_seeds} seed(s)):")
    if n_seeds > 1:
        log(format_table(per_seed))
        log("")
    log(results.table)
    for note in notes:
        log(f"  {note}")
    if ctx.is_main:
        md = [format_table(rows, markdown=True), "", *lines, "", *(f"- {n}" for n in notes), ""]
        md += ["Per run:", "", format_table(per_seed, markdown=True), ""]
        atomic_write(results.root / "comparison.md", "\n".join(md))
        atomic_write(
            results.root / "comparison.json",
            json.dumps(
                {"protocol": protocol, "notes": notes, "models": rows, "paired": results.paired, "runs": runs},
                indent=2,
                default=str,
            )
            + "\n",
        )
        if cfg.output.plots and len(runs) > 1:
            plot_comparison(results.root / "comparison.png", runs, f"{cfg.output.name}: same recipe, validation split")
            log(f"plots: {results.root / 'comparison.png'} and <run>/curves.png")
