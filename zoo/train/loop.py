"""Training one model: epochs of SGD/AdamW, per-epoch evaluation on the validation split (accuracy +
shift consistency), which selects the best epoch and drives early stopping, then one evaluation of the
selected model on the test split; atomic checkpoints and resume. Works alone or under ``torchrun`` (DDP)."""

from __future__ import annotations

import contextlib
import copy
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from zoo.distributed import DistContext, reduce_sums
from zoo.eval.consistency import shift_consistency
from zoo.pretrained import PretrainedCfg, to_timm_cfg
from zoo.train.checkpoint import save_checkpoint
from zoo.train.config import FinetuneConfig, config_to_dict
from zoo.train.data import DataBundle
from zoo.train.optim import WarmupCosine, build_optimizer, trainable_parameters
from zoo.train.report import plot_curves, write_metrics
from zoo.weights.io import load_state_dict_file, save_model_dir

__all__ = ["ModelRun", "RunResult", "default_max_shift", "evaluate", "train_model"]

_HIGHER_IS_BETTER = {"val_top1": True, "consistency": True, "val_loss": False}


@dataclass
class ModelRun:
    """A model ready to train: its zoo name, the module, how it was initialised, and where it goes."""

    name: str
    model: nn.Module
    init: str  # "pretrained (...)" or "random init (...)"
    run_dir: Path
    resume_state: dict[str, Any] | None = None  # already checked by the caller with check_compatible
    seed: int = 0  # train.seed of this run (initialisation, shuffling, augmentation)


@dataclass
class RunResult:
    name: str
    run_dir: Path
    init: str
    antialiased: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False
    train_seconds: float = 0.0
    model: nn.Module | None = field(default=None, repr=False)  # the trained model (last epoch)
    seed: int = 0
    test: dict[str, Any] = field(default_factory=dict)  # the selected epoch on the test split
    skipped: bool = False  # finished before (train.resume): nothing was trained in this call

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "test": {k: v for k, v in self.test.items() if k != "correct"},
            "run_dir": str(self.run_dir),
            "init": self.init,
            "antialiased": self.antialiased,
            "history": self.history,
            "best": self.best,
            "stopped_early": self.stopped_early,
            "train_seconds": self.train_seconds,
        }


def default_max_shift(image_size: int) -> int:
    """The published circular protocol shifts by up to 32 px at 224 px; the same fraction of ``image_size``."""
    return max(1, round(image_size * 32 / 224))


def fingerprint(cfg: FinetuneConfig, name: str, classes: list[str]) -> dict[str, Any]:
    """What must match for ``train.resume`` (see ``checkpoint.COMPAT_KEYS``)."""
    return {
        "model": name,
        "num_classes": len(classes),
        "in_chans": cfg.model.in_chans,
        "classes": list(classes),
        "mode": cfg.model.mode,
        "optimizer": cfg.optim.name,
        "image_size": cfg.data.image_size,
    }


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Every epoch's randomness (augmentation, dropout) from (seed, epoch, rank): resuming is exact."""
    s = (seed * 1_000_003 + epoch * 7919 + rank) % (2**31)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = full precision). fp16 needs CUDA; ``auto`` is off on CPU."""
    if setting == "off":
        return None
    if setting == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if setting == "fp16" and device.type != "cuda":
        raise ValueError("train.amp=fp16 needs a CUDA device; on CPU use train.amp=bf16 or off")
    return torch.float16 if setting == "fp16" else torch.bfloat16


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _eval_loader(dataset: Any, cfg: FinetuneConfig, ctx: DistContext) -> DataLoader:
    """This process's shard of an evaluation split (no padding: every image is evaluated exactly once)."""
    shard = Subset(dataset, list(range(ctx.rank, len(dataset), ctx.world)))
    return DataLoader(
        shard,
        batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
        shuffle=False,
        num_workers=cfg.data.num_workers,
    )


def _train_loader(
    bundle: DataBundle, cfg: FinetuneConfig, ctx: DistContext, seed: int
) -> tuple[DataLoader, DistributedSampler]:
    sampler = DistributedSampler(bundle.train, num_replicas=ctx.world, rank=ctx.rank, shuffle=True, seed=seed)
    per_rank = len(sampler)
    batch = min(cfg.data.batch_size, per_rank)
    # full batches only (a trailing batch of 1 breaks BatchNorm), unless the shard is smaller than a batch
    loader = DataLoader(
        bundle.train, batch_size=batch, sampler=sampler, drop_last=per_rank >= batch, num_workers=cfg.data.num_workers
    )
    return loader, sampler


def _bar(iterable: Any, enabled: bool, desc: str) -> Iterator:
    return iter(tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, disable=not enabled))


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    cfg: FinetuneConfig,
    ctx: DistContext,
    dtype: torch.dtype | None,
    progress: bool = False,
    per_image: bool = False,
) -> dict[str, Any]:
    """Loss / top-1 / top-5 of a split (reduced over processes) and shift consistency (gathered per image).

    Keys are ``val_*`` whatever the split; ``per_image`` adds ``correct``: 0/1 per image in dataset order.
    """
    criterion = nn.CrossEntropyLoss(reduction="sum")
    was_training = model.training
    model.eval()
    sums = [0.0, 0.0, 0.0, 0.0]  # loss, top1, top5, n
    correct: dict[int, int] = {}
    with torch.no_grad(), _autocast(ctx.device, dtype):
        for images, labels, indices in _bar(loader, progress, "eval"):
            images, labels = images.to(ctx.device), labels.to(ctx.device)
            logits = model(images).float()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            sums[0] += float(criterion(logits, labels))
            sums[1] += float((top[:, 0] == labels).sum())
            sums[2] += float((top == labels[:, None]).any(1).sum())
            sums[3] += labels.numel()
            if per_image:
                correct.update(zip(indices.tolist(), (top[:, 0] == labels).int().tolist()))
    loss, top1, top5, n = reduce_sums(sums, ctx)
    out: dict[str, Any] = {"val_loss": loss / n, "val_top1": 100 * top1 / n, "val_top5": 100 * top5 / n, "n": int(n)}
    if per_image:
        if ctx.distributed:
            parts: list[Any] = [None] * ctx.world
            dist.all_gather_object(parts, correct)
            correct = {k: v for part in parts for k, v in part.items()}
        out["correct"] = [correct[k] for k in sorted(correct)]
    if cfg.eval.consistency:
        max_shift = cfg.eval.max_shift or default_max_shift(cfg.data.image_size)
        with _autocast(ctx.device, dtype):
            res = shift_consistency(
                model, loader, protocol=cfg.eval.protocol, max_shift=max_shift, seed=cfg.eval.seed, device=ctx.device
            )
        out.update(
            consistency=res.consistency,
            consistency_low=res.ci95[0],
            consistency_high=res.ci95[1],
            shifted_top1=res.top1_crops if res.top1_crops is not None else res.top1_rolled,  # the shifted views
            max_shift=max_shift,
        )
    model.train(was_training)
    return out


def _set_train_mode(model: nn.Module, mode: str) -> None:
    """Train mode; a linear probe keeps the frozen trunk (BatchNorm statistics) in eval mode."""
    if mode == "linear_probe":
        model.eval()
        model.get_classifier().train()
    else:
        model.train()


def _train_epoch(
    model: nn.Module, net: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, schedule: WarmupCosine,
    scaler: torch.amp.GradScaler, cfg: FinetuneConfig, ctx: DistContext, dtype: torch.dtype | None, desc: str,
) -> dict[str, float]:  # fmt: skip
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
    _set_train_mode(model, cfg.model.mode)
    params = [p for p in model.parameters() if p.requires_grad]
    sums = [0.0, 0.0, 0.0]  # loss * n, correct, n
    bar = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=not (cfg.output.progress and ctx.is_main))
    for images, labels, _ in bar:
        images, labels = images.to(ctx.device, non_blocking=True), labels.to(ctx.device, non_blocking=True)
        with _autocast(ctx.device, dtype):
            logits = net(images)
            loss = criterion(logits.float(), labels)
        if not torch.isfinite(loss):
            raise RuntimeError(f"training diverged: loss is {float(loss)} at lr {schedule.lr:.4g}; lower optim.lr")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.optim.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        n = labels.numel()
        sums[0] += float(loss.detach()) * n
        sums[1] += float((logits.detach().argmax(1) == labels).sum())
        sums[2] += n
        bar.set_postfix(loss=f"{sums[0] / sums[2]:.3f}", lr=f"{schedule.lr:.3g}")
    loss_sum, correct, n = reduce_sums(sums, ctx)
    return {"train_loss": loss_sum / max(n, 1), "train_top1": 100 * correct / max(n, 1)}


def _export_cfg(
    model: nn.Module, cfg: FinetuneConfig, bundle: DataBundle, mean: list[float], std: list[float]
) -> dict[str, Any]:
    """The timm pretrained cfg of the fine-tuned model: its classes, input size and normalization."""
    size = cfg.data.image_size
    record = PretrainedCfg.from_dict(getattr(model, "pretrained_cfg", {})).replace(
        num_classes=bundle.num_classes,
        label_names=list(bundle.classes),
        input_size=(cfg.model.in_chans, size, size),
        test_input_size=(cfg.model.in_chans, size, size),
        crop_pct=1.0,
        mean=tuple(mean),
        std=tuple(std),
        tag=f"finetune_{cfg.data.source}",
    )
    return to_timm_cfg(record)


def _fmt(epoch: int, total: int, row: dict[str, Any]) -> str:
    text = (
        f"epoch {epoch}/{total}  lr {row['lr']:.4g}  "
        f"train loss {row['train_loss']:.3f} top-1 {row['train_top1']:.1f}%  "
        f"val loss {row['val_loss']:.3f} top-1 {row['val_top1']:.2f}%"
    )
    if row.get("consistency") is not None:
        text += f"  consistency {row['consistency']:.2f}% [{row['consistency_low']:.1f}, {row['consistency_high']:.1f}]"
    return text + f"  ({row['epoch_seconds']:.1f} s)"


def _test_row(row: dict[str, Any]) -> dict[str, Any]:
    """``evaluate``'s keys renamed for the test split (``val_top1`` -> ``test_top1``, ``consistency`` -> ...)."""
    out = {}
    for key, value in row.items():
        if key.startswith("val_"):
            key = "test_" + key[4:]
        elif key.startswith(("consistency", "shifted_top1")):
            key = "test_" + key
        out[key] = value
    return out


def _best_weights(run: ModelRun, ctx: DistContext) -> dict[str, torch.Tensor] | None:
    """The selected epoch's weights of a resumed run (``best/``), None when they were not saved."""
    path = run.run_dir / "best" / "model.safetensors"
    return load_state_dict_file(path) if path.is_file() else None


def train_model(
    run: ModelRun,
    cfg: FinetuneConfig,
    bundle: DataBundle,
    ctx: DistContext,
    log: Callable[[str], None],
    mean: list[float],
    std: list[float],
) -> RunResult:
    """Fine-tune ``run.model`` on ``bundle`` for ``cfg.train.epochs`` epochs (or until early stopping).

    The epoch with the best ``train.monitor`` on the validation split is selected (``best/``) and
    evaluated once on the test split (``RunResult.test``). A resumed run that had finished (all epochs,
    or stopped early, and tested) is not trained again: its saved results are returned.
    """
    seed = run.seed
    model = run.model.to(ctx.device)
    fp = fingerprint(cfg, run.name, bundle.classes)
    params = trainable_parameters(model, cfg.model.mode)
    optimizer = build_optimizer(params, cfg.optim)
    loader, sampler = _train_loader(bundle, cfg, ctx, seed)
    val_loader = _eval_loader(bundle.val, cfg, ctx)
    steps = len(loader)
    schedule = WarmupCosine(
        optimizer,
        steps * cfg.train.epochs,
        round(cfg.optim.warmup_epochs * steps),
        cfg.optim.min_lr,
        cfg.optim.warmup_start_factor,
    )
    dtype = amp_dtype(cfg.train.amp, ctx.device)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=dtype == torch.float16)
    result = RunResult(run.name, run.run_dir, run.init, bool(getattr(model, "antialiased", False)), model=model)
    result.seed = seed
    higher = _HIGHER_IS_BETTER[cfg.train.monitor]
    best_value, bad_epochs, start = None, 0, 0
    best_weights: dict[str, torch.Tensor] | None = None
    tag = f"[{run.name}]" if cfg.train.seeds == 1 else f"[{run.name} seed {seed}]"
    state: dict[str, Any] = {}
    if run.resume_state is not None:
        state = {k: v for k, v in run.resume_state.items() if k != "model"}
        model.load_state_dict(run.resume_state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if "scaler" in state and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])
        start, result.history = int(state["epoch"]), list(state["history"])
        best_value, bad_epochs, result.best = state["best_value"], int(state["bad_epochs"]), dict(state["best"])
        result.train_seconds = float(state.get("train_seconds", 0.0))
        result.stopped_early = bool(state.get("stopped_early", False))
        if ctx.is_main:
            for stale in run.run_dir.glob(".*.tmp"):  # partial files of a run killed while writing
                stale.unlink(missing_ok=True)
        if state.get("test") and (start >= cfg.train.epochs or result.stopped_early):
            result.test, result.skipped = dict(state["test"]), True
            log(f"{tag} finished before (epoch {start}, tested): skipped; results from {run.run_dir}")
            return result
        best_weights = _best_weights(run, ctx)
        log(f"{tag} resumed from {run.run_dir} after epoch {start} (optimizer and schedule restored)")
    net = (
        DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
        if ctx.distributed
        else model
    )
    export_cfg = _export_cfg(model, cfg, bundle, mean, std)
    amp_note = f"autocast {dtype}" if dtype is not None else "full precision (fp32)"
    log(
        f"{tag} init: {run.init}; {len(params):,} trainable tensors ({cfg.model.mode}); {amp_note}; "
        f"{ctx.world} process(es) on {ctx.device}; {steps} steps/epoch"
    )

    def save(epoch: int, row: dict[str, Any]) -> None:
        summary = {
            "name": run.name,
            "seed": seed,
            "init": run.init,
            "best": result.best,
            "monitor": f"{cfg.train.monitor} on the validation split",
            "stopped_early": result.stopped_early,
            "test": {k: v for k, v in result.test.items() if k != "correct"},
        }
        save_checkpoint(
            run.run_dir,
            model,
            name=run.name,
            state=state,
            pretrained_cfg=export_cfg,
            metadata={"epoch": epoch, "seed": seed, "data": bundle.description, "init": run.init, "metrics": row},
        )
        write_metrics(run.run_dir, result.history, summary)
        if cfg.output.plots:
            plot_curves(run.run_dir / "curves.png", result.history, f"{run.name} ({run.init})")

    for epoch in range(start, cfg.train.epochs):
        if result.stopped_early:
            break
        t0 = time.time()
        _seed_epoch(seed, epoch, ctx.rank)
        sampler.set_epoch(epoch)
        lr = schedule.lr
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
        row.update(
            _train_epoch(
                model,
                net,
                loader,
                optimizer,
                schedule,
                scaler,
                cfg,
                ctx,
                dtype,
                f"{run.name} {epoch + 1}/{cfg.train.epochs}",
            )
        )
        row.update(evaluate(model, val_loader, cfg, ctx, dtype, cfg.output.progress and ctx.is_main))
        row["epoch_seconds"] = time.time() - t0
        result.train_seconds += row["epoch_seconds"]
        result.history.append(row)
        value = row.get(cfg.train.monitor)
        if value is None:
            raise ValueError(f"train.monitor={cfg.train.monitor} is not measured (eval.consistency is off)")
        improved = best_value is None or (value > best_value if higher else value < best_value)
        if improved:
            best_value, bad_epochs, result.best = value, 0, dict(row)
            best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        result.stopped_early = bool(cfg.train.early_stop_patience) and bad_epochs >= cfg.train.early_stop_patience
        log(f"{tag} " + _fmt(epoch + 1, cfg.train.epochs, row))
        state = {
            "epoch": epoch + 1,
            "seed": seed,
            "fingerprint": fp,
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "scaler": scaler.state_dict(),
            "history": result.history,
            "best": result.best,
            "best_value": best_value,
            "bad_epochs": bad_epochs,
            "stopped_early": result.stopped_early,
            "train_seconds": result.train_seconds,
            "config": config_to_dict(cfg),
        }
        if ctx.is_main:
            if improved and cfg.output.save_best:
                save_model_dir(model, run.run_dir / "best", name=run.name, pretrained_cfg=export_cfg)
            save(epoch + 1, row)
        ctx.barrier()
        if result.stopped_early:
            log(
                f"{tag} early stop: {cfg.train.monitor} (validation) has not improved for {bad_epochs} epoch(s) "
                f"(best {best_value:.3f} at epoch {result.best['epoch']})"
            )
    # the selected epoch, once, on the test split
    selected = model
    if best_weights is not None:
        selected = copy.deepcopy(model)
        selected.load_state_dict(best_weights)
        chosen = f"epoch {result.best['epoch']} (best {cfg.train.monitor} on the validation split)"
    else:
        chosen = f"epoch {result.history[-1]['epoch']} (last: the best epoch's weights were not saved)"
    test_loader = _eval_loader(bundle.test, cfg, ctx)
    result.test = _test_row(evaluate(selected, test_loader, cfg, ctx, dtype, False, per_image=True))
    result.test.update(epoch=result.best.get("epoch"), selected=chosen)
    del selected
    log(f"{tag} test split, {chosen}: " + _fmt_test(result.test))
    state = {**state, "test": result.test}
    if ctx.is_main:
        save(int(state["epoch"]), result.history[-1])
    ctx.barrier()
    return result


def _fmt_test(row: dict[str, Any]) -> str:
    text = f"top-1 {row['test_top1']:.2f}%  loss {row['test_loss']:.3f}  ({row['n']} images)"
    if row.get("test_consistency") is not None:
        text += (
            f"  consistency {row['test_consistency']:.2f}% "
            f"[{row['test_consistency_low']:.1f}, {row['test_consistency_high']:.1f}]"
        )
    return text
