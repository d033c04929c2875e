"""``zoo finetune distill.enabled=true``: recover a blurred network's accuracy by distillation.

The teacher is a model without blur: a zoo baseline with weights (``distill.teacher_weights``), a previous
``zoo finetune`` model folder (``distill.teacher=DIR``), or, when neither is given, a baseline trained here
first with labels (``root/teacher``; reused by ``train.resume``). The student is the teacher with blur
inserted (``zoo.train.distill.make_student``), trained on images without labels (``distill.images``, or the
training split whose labels are ignored unless ``distill.alpha_labels > 0``) to match the frozen teacher's
softened logits. ``original`` (the teacher), ``converted`` (the student before training) and ``distilled``
are measured on the test split and written to ``comparison.json`` / ``comparison.png``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from zoo.builder import create
from zoo.constants import IMAGE_EXTENSIONS
from zoo.data import image_files
from zoo.distributed import DistContext
from zoo.io import atomic_write
from zoo.pretrained import PretrainedCfg, to_timm_cfg
from zoo.stats import wilson_interval
from zoo.train.checkpoint import STATE_NAME, check_compatible, load_train_state, save_checkpoint
from zoo.train.common import FinetuneResult, init_model, new_root, norm_stats
from zoo.train.config import FinetuneConfig, config_to_dict
from zoo.train.data import DatasetError, FileImages, _check_image, _transforms, build_data
from zoo.train.distill import DistillConfig, distill_loss, freeze_teacher, make_student, teacher_source
from zoo.train.loop import (
    ModelRun,
    _autocast,
    _eval_loader,
    _seed_epoch,
    amp_dtype,
    default_max_shift,
    evaluate,
    fingerprint,
    train_model,
)
from zoo.train.optim import WarmupCosine, build_optimizer
from zoo.weights.io import load_state_dict_file

__all__ = ["distill_finetune", "unlabeled_images"]

STAGES = ("original", "converted", "distilled")


def unlabeled_images(folder: str | Path, mode: str, transform: Any) -> tuple[FileImages, list[tuple[str, str]]]:
    """Every readable image under ``folder`` (recursively, labels -1) and the ``(file, reason)`` skipped."""
    files, skipped = [], []
    for path in image_files(folder):
        reason = _check_image(path)
        if reason is None:
            files.append(path)
        else:
            skipped.append((str(path), reason))
    if not files:
        raise DatasetError(
            f"distill.images={folder} holds no readable images (scanned recursively; "
            f"extensions: {', '.join(IMAGE_EXTENSIONS)}; {len(skipped)} unreadable)"
        )
    return FileImages(files, [-1] * len(files), mode, transform), skipped


def _teacher(
    cfg: FinetuneConfig, name: str, folder: Path | None, bundle: Any, root: Path, ctx: DistContext, log: Any,
    mean: list[float], std: list[float],
) -> tuple[nn.Module, str]:  # fmt: skip
    """The teacher model and how it was obtained (loaded, or trained in ``root/teacher``)."""
    d = cfg.distill
    if folder is not None:
        return create(name, pretrained=str(folder)), f"loaded from {folder}"
    if d.teacher_weights is not None:
        return create(name, pretrained=d.teacher_weights, in_chans=cfg.model.in_chans), f"weights {d.teacher_weights}"
    tcfg = copy.deepcopy(cfg)
    tcfg.train.epochs = d.teacher_epochs
    run_dir = root / "teacher"
    state = load_train_state(run_dir) if (run_dir / STATE_NAME).is_file() else None
    if state is not None:
        check_compatible(state, fingerprint(tcfg, name, bundle.classes), run_dir)
    model, init, detail = init_model(tcfg, name, bundle.num_classes, cfg.train.seed)
    log(f"[teacher {name}] {detail}; trained with labels for {d.teacher_epochs} epoch(s) in {run_dir}")
    result = train_model(ModelRun(name, model, init, run_dir, state, cfg.train.seed), tcfg, bundle, ctx, log, mean, std)
    best = run_dir / "best" / "model.safetensors"
    if best.is_file():
        result.model.load_state_dict(load_state_dict_file(best))
    return result.model, f"trained here ({run_dir}, selected epoch {result.best.get('epoch')})"


def _measure(model: nn.Module, loader: DataLoader, cfg: FinetuneConfig, ctx: DistContext, dtype: Any) -> dict:
    """Top-1 (Wilson interval) and shift consistency (its interval) in percent on ``loader``."""
    r = evaluate(model, loader, cfg, ctx, dtype)
    low, high = wilson_interval(r["val_top1"] * r["n"] / 100, r["n"])
    return {
        "top1": r["val_top1"],
        "top1_ci95": [100 * low, 100 * high],
        "consistency": r["consistency"],
        "consistency_ci95": [r["consistency_low"], r["consistency_high"]],
        "n": r["n"],
    }


def _distill(
    student: nn.Module, teacher: nn.Module, dataset: Dataset, cfg: FinetuneConfig, ctx: DistContext, log: Any,
    run_dir: Path, name: str, val_loader: DataLoader, export_cfg: dict[str, Any],
) -> list[dict[str, Any]]:  # fmt: skip
    """``train.epochs`` epochs of distillation with a checkpoint after each; resumes from ``run_dir``."""
    d, dev = cfg.distill, ctx.device
    student.to(dev)
    teacher.to(dev)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, dataclasses.replace(cfg.optim, lr=d.student_lr or cfg.optim.lr))
    batch = min(cfg.data.batch_size, len(dataset))
    steps = max(1, len(dataset) // batch)
    o = cfg.optim
    schedule = WarmupCosine(
        optimizer, steps * cfg.train.epochs, round(o.warmup_epochs * steps), o.min_lr, o.warmup_start_factor
    )
    dtype = amp_dtype(cfg.train.amp, dev)
    fp = {"model": name, "num_classes": int(getattr(student, "num_classes", 0)), "in_chans": cfg.model.in_chans,
          "classes": [], "mode": "distill", "optimizer": o.name}  # fmt: skip
    history: list[dict[str, Any]] = []
    start = 0
    if (run_dir / STATE_NAME).is_file():
        state = load_train_state(run_dir)
        check_compatible(state, fp, run_dir)
        student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start, history = int(state["epoch"]), list(state["history"])
        log(f"[{name}] resumed from {run_dir} after epoch {start}")
    labels_used = d.alpha_labels > 0
    for epoch in range(start, cfg.train.epochs):
        t0 = time.time()
        _seed_epoch(cfg.train.seed, epoch, 0)
        gen = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + epoch)
        loader = DataLoader(
            dataset, batch, shuffle=True, drop_last=True, generator=gen, num_workers=cfg.data.num_workers
        )
        freeze_teacher(teacher)
        student.train()
        total, n, lr = 0.0, 0, schedule.lr
        desc = f"distill {name} {epoch + 1}/{cfg.train.epochs}"
        bar = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=not cfg.output.progress)
        for images, labels, _ in bar:
            images = images.to(dev)
            with _autocast(dev, dtype):
                with torch.no_grad():
                    target = teacher(images)
                logits = student(images)
            y = labels.to(dev) if labels_used else None
            loss = distill_loss(logits, target, d.temperature, y, d.alpha_labels)
            if not torch.isfinite(loss):
                raise RuntimeError(f"distillation diverged: loss is {float(loss)} at lr {schedule.lr:.4g}; lower it")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total, n = total + float(loss.detach()) * len(images), n + len(images)
            bar.set_postfix(kl=f"{total / n:.4f}", lr=f"{schedule.lr:.3g}")
        row = {"epoch": epoch + 1, "lr": lr, "distill_loss": total / max(n, 1)}
        row.update(evaluate(student, val_loader, cfg, ctx, dtype))
        row["epoch_seconds"] = time.time() - t0
        history.append(row)
        log(
            f"[{name}] epoch {epoch + 1}/{cfg.train.epochs}  lr {lr:.4g}  distill loss {row['distill_loss']:.4f}  "
            f"val top-1 {row['val_top1']:.2f}%  consistency {row['consistency']:.2f}%  ({row['epoch_seconds']:.1f} s)"
        )
        state = {"epoch": epoch + 1, "fingerprint": fp, "optimizer": optimizer.state_dict(),
                 "schedule": schedule.state_dict(), "history": history, "config": config_to_dict(cfg)}  # fmt: skip
        meta = {"epoch": epoch + 1, "distill": config_to_dict(cfg.distill), "metrics": row}
        save_checkpoint(run_dir, student, name=name, state=state, pretrained_cfg=export_cfg, metadata=meta)
    return history


def plot_stages(comparison: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """Two panels (top-1, consistency) of the three stages with their 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, key, label in zip(axes, ("top1", "consistency"), ("top-1 (%)", "shift consistency (%)")):
        values = [comparison[s][key] for s in STAGES]
        errs = [[v - comparison[s][f"{key}_ci95"][0] for s, v in zip(STAGES, values)],
                [comparison[s][f"{key}_ci95"][1] - v for s, v in zip(STAGES, values)]]  # fmt: skip
        ax.bar(STAGES, values, yerr=errs, capsize=4, color=["C7", "C1", "C2"])
        low = min(comparison[s][f"{key}_ci95"][0] for s in STAGES)
        ax.set_ylim(max(0.0, low - 5), 100)
        ax.set_ylabel(label)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _root(cfg: FinetuneConfig) -> Path:
    if cfg.train.resume is None:
        return new_root(cfg)
    root = Path(cfg.train.resume)
    if not (root / "config.yaml").is_file():
        raise FileNotFoundError(f"no run to resume: {root} is not a run directory (no config.yaml)")
    return root


def distill_finetune(cfg: FinetuneConfig, ctx: DistContext, log: Any) -> FinetuneResult:
    """Teacher -> converted student -> distilled student; ``comparison.json`` / ``.png`` in the run folder."""
    if ctx.distributed:
        raise ValueError("distill.enabled=true runs in one process; start it without torchrun")
    d = cfg.distill
    name, folder = teacher_source(cfg)
    mean, std = norm_stats(cfg, create(name, num_classes=1, in_chans=cfg.model.in_chans))
    bundle = build_data(cfg.data, cfg.model.in_chans, mean, std)
    log(f"data: {bundle.description}")
    if d.images is not None:
        mode = "L" if cfg.model.in_chans == 1 else "RGB"
        train_set, skipped = unlabeled_images(d.images, mode, _transforms(cfg.data, mean, std, True, True))
        source = f"{len(train_set)} unlabeled images under {d.images} ({len(skipped)} unreadable skipped)"
    else:
        train_set = bundle.train
        used = f"labels weighted {d.alpha_labels:g}" if d.alpha_labels > 0 else "labels ignored"
        source = f"the {len(train_set)} training images ({used})"
    root = _root(cfg)
    log.attach(root / "train.log")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    atomic_write(root / ("config.yaml" if cfg.train.resume is None else f"config-resume-{stamp}.yaml"),
                 yaml.safe_dump(config_to_dict(cfg), sort_keys=False))  # fmt: skip
    log(f"run directory: {root}")
    teacher, how = _teacher(cfg, name, folder, bundle, root, ctx, log, mean, std)
    classes = int(getattr(teacher, "num_classes", bundle.num_classes))
    if classes != bundle.num_classes:
        raise ValueError(
            f"the teacher has {classes} classes, the data {bundle.num_classes}: distill a teacher fine-tuned on "
            "these classes (distill.teacher=runs/NAME/MODEL of a `zoo finetune` run)"
        )
    freeze_teacher(teacher)
    dcfg = DistillConfig(teacher=name, temperature=d.temperature, alpha=d.alpha_labels, filter_size=d.filter_size)
    student = make_student(teacher.cpu(), dcfg)
    student_name = f"{name}_aa{d.filter_size}"
    log(f"[{student_name}] student: the teacher ({how}) with blur inserted; distilled on {source}, T={d.temperature:g}")
    dtype = amp_dtype(cfg.train.amp, ctx.device)
    test_loader, val_loader = _eval_loader(bundle.test, cfg, ctx), _eval_loader(bundle.val, cfg, ctx)
    teacher.to(ctx.device)
    comparison = {"original": _measure(teacher, test_loader, cfg, ctx, dtype),
                  "converted": _measure(student.to(ctx.device), test_loader, cfg, ctx, dtype)}  # fmt: skip
    export_cfg = to_timm_cfg(
        PretrainedCfg.from_dict(getattr(teacher, "pretrained_cfg", {})).replace(
            mean=tuple(mean), std=tuple(std), label_names=list(bundle.classes), tag="distill"
        )
    )
    history = _distill(
        student, teacher, train_set, cfg, ctx, log, root / student_name, student_name, val_loader, export_cfg
    )
    comparison["distilled"] = _measure(student, test_loader, cfg, ctx, dtype)
    max_shift = cfg.eval.max_shift or default_max_shift(cfg.data.image_size)
    lines = [f"{'stage':<10} {'top-1 %':>8} {'95% CI':>14} {'consistency %':>14} {'95% CI':>14}"]
    for s in STAGES:
        c = comparison[s]
        (tl, th), (cl, ch) = c["top1_ci95"], c["consistency_ci95"]
        lines.append(f"{s:<10} {c['top1']:8.2f} [{tl:5.1f}, {th:5.1f}] {c['consistency']:14.2f} [{cl:5.1f}, {ch:5.1f}]")
    notes = [
        f"test split: {comparison['original']['n']} images; top-1 CI: Wilson; consistency: {cfg.eval.protocol} "
        f"shifts up to {max_shift} px, seed {cfg.eval.seed}",
        f"teacher {name} ({how}); student {student_name}, distilled for {cfg.train.epochs} epoch(s) on {source}",
    ]
    log("")
    log("\n".join(lines))
    for note in notes:
        log(f"  {note}")
    payload = {**comparison, "teacher": name, "student": student_name, "notes": notes, "history": history}
    atomic_write(root / "comparison.json", json.dumps(payload, indent=2, default=str) + "\n")
    if cfg.output.plots:
        plot_stages(comparison, root / "comparison.png", f"{name}: original, converted ({student_name}), distilled")
        log(f"plot: {root / 'comparison.png'}")
    return FinetuneResult(root, table="\n".join(lines))
