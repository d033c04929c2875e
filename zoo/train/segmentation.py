"""Segmentation training: the per-pixel loss step, ``zoo finetune`` with ``task: segmentation``, and the
pasted-digits demo (``make demo-segmentation``).

``finetune_segmentation(cfg)`` trains ``unet_*`` models on the pasted digits (``data.source=digits``) or a folder of
``images/`` + ``masks/`` (``data.source=imagefolder``, ``data.path``; ``train``/``val`` sub-folders when both exist,
else a seeded ``data.eval_fraction`` of the images is held out), one checkpoint per epoch (``train_state.pt`` +
``model.safetensors``, resumable with ``train.resume=RUN_DIR``), then evaluates them on the held-out images exactly
as ``zoo eval --task segmentation``: ``results.json``, ``results.md`` and ``results.png`` in the run directory.
The recipe: AdamW (or SGD) at ``optim.lr`` with a linear warm-up over ``optim.warmup_epochs`` and a cosine decay,
inputs RGB in [0, 1] without normalisation, no model selection (the last epoch is reported).

The demo reads its model list and recipe from ``configs/demo/segmentation.yaml``; an unknown name is an error
before any training.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn
from tqdm.auto import tqdm

from zoo.pretrained import PretrainedCfg, to_timm_cfg

__all__ = [
    "DEMO_CONFIG",
    "SegmentationTrainer",
    "demo",
    "finetune_segmentation",
    "segmentation_loss",
    "train_segmentation",
]

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo" / "segmentation.yaml"
DIGITS_CLASSES = 11


def segmentation_loss(logits: Tensor, masks: Tensor, ignore_index: int = 255) -> Tensor:
    """Per-pixel cross-entropy of ``(N, C, H, W)`` logits against ``(N, H, W)`` class masks."""
    if logits.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"logits {list(logits.shape)} and masks {list(masks.shape)} differ in size")
    return F.cross_entropy(logits, masks, ignore_index=ignore_index)


def _batches(
    images: Tensor, masks: Tensor, batch_size: int, gen: torch.Generator | None
) -> Iterator[tuple[Tensor, Tensor]]:
    order = torch.randperm(len(images), generator=gen) if gen is not None else torch.arange(len(images))
    for i in range(0, len(images), batch_size):
        idx = order[i : i + batch_size]
        yield images[idx], masks[idx]


class SegmentationTrainer:
    """Epoch-by-epoch training of a segmentation model on ``(images, masks)`` tensors, with a resumable state.

    Linear warm-up over ``warmup`` epochs, then cosine decay to 0 over ``epochs``; the learning rate is a function
    of the step alone, so a resumed run follows the same schedule.
    """

    def __init__(
        self,
        model: nn.Module,
        images: Tensor,
        masks: Tensor,
        *,
        epochs: int,
        batch_size: int = 32,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        optimizer: str = "adamw",
        momentum: float = 0.9,
        warmup: float = 0.3,
        seed: int = 0,
        ignore_index: int = 255,
        device: str | torch.device = "cpu",
    ) -> None:
        if len(images) != len(masks) or len(images) == 0:
            raise ValueError(f"need the same non-zero number of images and masks, got {len(images)} and {len(masks)}")
        self.model, self.images, self.masks = model.to(device), images, masks
        self.epochs, self.batch_size, self.lr, self.warmup = epochs, batch_size, lr, warmup
        self.ignore_index, self.device = ignore_index, torch.device(device)
        if optimizer == "adamw":
            self.opt: torch.optim.Optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        elif optimizer == "sgd":
            self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        else:
            raise ValueError(f"optimizer must be adamw or sgd, got {optimizer!r}")
        self.gen = torch.Generator().manual_seed(seed)
        self.steps_per_epoch = -(-len(images) // batch_size)
        self.epoch, self.step, self.history = 0, 0, []

    def lr_at(self, step: int) -> float:
        """Warm-up then cosine learning rate of ``step`` (0-based)."""
        total = self.epochs * self.steps_per_epoch
        warm = max(1, round(self.warmup * self.steps_per_epoch))
        if step < warm:
            return self.lr * (step + 1) / warm
        return 0.5 * self.lr * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    def run_epoch(self, bar: Any = None) -> float:
        """One pass over the images in a seeded order; returns the mean loss."""
        self.model.train()
        total, count = 0.0, 0
        for x, y in _batches(self.images, self.masks, self.batch_size, self.gen):
            x, y = x.to(self.device), y.to(self.device)
            for group in self.opt.param_groups:
                group["lr"] = self.lr_at(self.step)
            loss = segmentation_loss(self.model(x), y, self.ignore_index)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.step += 1
            total, count = total + loss.item() * len(x), count + len(x)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
        self.epoch += 1
        self.history.append(total / count)
        return total / count

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, data-order generator, epoch, step and loss history (the weights are saved separately)."""
        return {
            "optimizer": self.opt.state_dict(),
            "generator": self.gen.get_state(),
            "epoch": self.epoch,
            "step": self.step,
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"])
        self.epoch, self.step, self.history = int(state["epoch"]), int(state["step"]), list(state["history"])


def train_segmentation(
    model: nn.Module,
    images: Tensor,
    masks: Tensor,
    epochs: int = 3,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """AdamW with warm-up + cosine on ``(images, masks)``; returns the mean loss of each epoch."""
    torch.manual_seed(seed)
    trainer = SegmentationTrainer(model, images, masks, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    with tqdm(
        total=epochs * trainer.steps_per_epoch, desc=getattr(model, "name", "train"), disable=not progress, leave=False
    ) as bar:
        for _ in range(epochs):
            trainer.run_epoch(bar)
    return trainer.history


# ---------------------------------------------------------------------------------------------- zoo finetune


def _stack(pairs: Sequence[tuple[Tensor, Tensor]], where: str) -> tuple[Tensor, Tensor]:
    sizes = sorted({tuple(p[0].shape[-2:]) for p in pairs})
    if len(sizes) > 1:
        raise ValueError(f"segmentation training needs images of one size; {where} has {sizes[0]} and {sizes[1]}")
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def _seg_data(cfg: Any) -> tuple[tuple[Tensor, Tensor], Any, str]:
    """``((train images, masks), test SegData, description)`` of ``cfg.data``; checked before anything is written."""
    from zoo.data.segmentation import SegmentationFolder, pasted_digits
    from zoo.eval.segmentation_task import SegData

    d, s = cfg.data, cfg.segmentation
    if d.source == "digits":
        if s.num_classes not in (None, DIGITS_CLASSES):
            raise ValueError(f"segmentation.num_classes={s.num_classes}: the pasted digits have {DIGITS_CLASSES}")
        n_train, n_test = d.limit_train or 1024, d.limit_eval or 256
        train = pasted_digits(n_train, size=d.image_size, seed=d.split_seed)
        test_x, test_y = pasted_digits(n_test, size=d.image_size, seed=d.split_seed + 1000)
        desc = (
            f"pasted digits: {n_train} train / {n_test} test canvases {d.image_size}x{d.image_size}, "
            f"2 digits each (seeds {d.split_seed}, {d.split_seed + 1000})"
        )
        return train, SegData(list(zip(test_x, test_y)), DIGITS_CLASSES, desc, DIGITS_CLASSES - 1), desc
    if d.source != "imagefolder":
        raise ValueError(
            f"task=segmentation reads data.source=digits or imagefolder (images/ + masks/), got {d.source!r}"
        )
    root = Path(d.path or "")
    split = (root / d.train_split / "images").is_dir() and (root / d.eval_split / "images").is_dir()
    load = lambda folder: [(x, y) for x, y in SegmentationFolder(folder, s.num_classes, s.ignore_index)]  # noqa: E731
    if split:
        train_pairs, test_pairs = load(root / d.train_split), load(root / d.eval_split)
    else:
        pairs = load(root)
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(d.split_seed)).tolist()
        k = max(1, round(d.eval_fraction * len(pairs)))
        if len(pairs) - k < 1:
            raise ValueError(f"{root}: {len(pairs)} image(s) cannot be split into train and test; add images")
        test_pairs, train_pairs = [pairs[i] for i in order[:k]], [pairs[i] for i in order[k:]]
    train_pairs, test_pairs = train_pairs[: d.limit_train], test_pairs[: d.limit_eval]
    ids = [int(m[m != s.ignore_index].max()) for _, m in train_pairs + test_pairs if bool((m != s.ignore_index).any())]
    max_id = max(ids, default=0)
    classes = s.num_classes or max_id + 1
    where = f"{root / d.train_split}, {root / d.eval_split}" if split else f"{root} (seeded {d.eval_fraction} held out)"
    desc = f"{len(train_pairs)} train / {len(test_pairs)} test image(s) of {where}, {classes} classes"
    return _stack(train_pairs, str(root)), SegData(test_pairs, classes, desc, max_id), desc


def _fingerprint(cfg: Any, name: str, classes: int) -> dict[str, Any]:
    return {
        "model": name,
        "num_classes": classes,
        "in_chans": 3,
        "classes": None,
        "mode": "segmentation",
        "optimizer": cfg.optim.name,
        "decoder_channels": cfg.segmentation.decoder_channels,
    }


def _device(cfg: Any) -> str:
    dev = cfg.train.device
    return ("cuda" if torch.cuda.is_available() else "cpu") if dev == "auto" else dev


def model_names(cfg: Any) -> list[str]:
    """``model.name``, and with ``model.twin`` the U-Net on its baseline encoder (``unet_resnet18_aa4`` ->
    ``unet_resnet18``)."""
    from zoo.train.common import twin_name

    name = cfg.model.name
    if not name.startswith("unet_"):
        raise ValueError(f"task=segmentation trains unet_* models (e.g. unet_resnet18_aa4), got model {name!r}")
    return [name] + ([f"unet_{twin_name(name[len('unet_') :])}"] if cfg.model.twin else [])


def finetune_segmentation(cfg: Any, names: Sequence[str] | None = None, log: Callable[[str], None] = print) -> Any:
    """``zoo finetune`` with ``task: segmentation`` (see the module docstring); ``names`` default to
    ``model.name`` (and its twin with ``model.twin``). Returns a ``FinetuneResult`` whose ``report`` holds the
    evaluation (as ``zoo eval --task segmentation``)."""
    from zoo.builder import create
    from zoo.eval.segmentation import random_shifts
    from zoo.eval.segmentation_task import evaluate_models, write_results
    from zoo.io import atomic_write, write_json
    from zoo.registry import get_entry
    from zoo.train.checkpoint import STATE_NAME, CheckpointError, check_compatible, load_train_state, save_checkpoint
    from zoo.train.common import FinetuneInterrupted, FinetuneResult, new_root
    from zoo.train.config import config_to_dict

    names = list(names) if names is not None else model_names(cfg)
    for name in names:
        if not name.startswith("unet_"):
            raise ValueError(f"task=segmentation trains unet_* models (e.g. unet_resnet18_aa4), got model {name!r}")
        get_entry(name)
    if cfg.model.pretrained not in ("auto", "none", False):
        raise ValueError(
            f"task=segmentation trains from random initialisation (model.pretrained=none or auto); "
            f"got model.pretrained={cfg.model.pretrained!r}"
        )
    if cfg.train.seeds != 1:
        raise ValueError(f"task=segmentation trains one seed per model (train.seeds=1), got {cfg.train.seeds}")
    (train_x, train_y), test, desc = _seg_data(cfg)
    classes = test.num_classes
    states: dict[str, dict[str, Any] | None] = {name: None for name in names}
    if cfg.train.resume is not None:
        root = Path(cfg.train.resume)
        if not (root / "config.yaml").is_file():
            raise FileNotFoundError(f"no run to resume: {root} is not a segmentation run directory (no config.yaml)")
        for name in names:
            if (root / name / STATE_NAME).is_file():
                state = load_train_state(root / name)
                check_compatible(state, _fingerprint(cfg, name, classes), root / name)
                if state.get("fingerprint", {}).get("decoder_channels") != cfg.segmentation.decoder_channels:
                    raise CheckpointError(f"cannot resume from {root / name}: other segmentation.decoder_channels")
                states[name] = state
        if all(s is not None and int(s["epoch"]) >= cfg.train.epochs for s in states.values()):
            raise ValueError(
                f"{root} has trained every model for train.epochs={cfg.train.epochs}; raise it to continue"
            )
    else:
        root = new_root(cfg)
    stamp = "" if cfg.train.resume is None else "-resume-" + time.strftime("%Y%m%d-%H%M%S")
    atomic_write(root / f"config{stamp}.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    log(f"data: {desc}")
    log(f"run directory: {root}")
    device, o = _device(cfg), cfg.optim
    models: dict[str, nn.Module] = {}
    current = ""
    try:
        for name in names:
            current = name
            torch.manual_seed(cfg.train.seed)
            model = create(name, num_classes=classes, decoder_channels=cfg.segmentation.decoder_channels)
            trainer = SegmentationTrainer(
                model,
                train_x,
                train_y,
                epochs=cfg.train.epochs,
                batch_size=cfg.data.batch_size,
                lr=o.lr,
                weight_decay=o.weight_decay,
                optimizer=o.name,
                momentum=o.momentum,
                warmup=o.warmup_epochs,
                seed=cfg.train.seed,
                ignore_index=cfg.segmentation.ignore_index,
                device=device,
            )
            state = states[name]
            if state is not None:
                model.load_state_dict(state["model"])
                trainer.load_state_dict(state)
                log(f"[{name}] resumed at epoch {trainer.epoch}")
            else:
                log(f"[{name}] random initialisation (seed {cfg.train.seed})")
            total = (cfg.train.epochs - trainer.epoch) * trainer.steps_per_epoch
            with tqdm(total=total, desc=name, disable=not cfg.output.progress, leave=False) as bar:
                while trainer.epoch < cfg.train.epochs:
                    loss = trainer.run_epoch(bar)
                    save_checkpoint(
                        root / name,
                        model,
                        name=name,
                        state={
                            **trainer.state_dict(),
                            "fingerprint": _fingerprint(cfg, name, classes),
                            "seed": cfg.train.seed,
                        },
                        pretrained_cfg=to_timm_cfg(
                            PretrainedCfg(task="segmentation", num_classes=classes, mean=[0.0] * 3, std=[1.0] * 3)
                        ),
                        metadata={"epoch": trainer.epoch, "history": trainer.history},
                        model_args={"num_classes": classes, "decoder_channels": cfg.segmentation.decoder_channels},
                    )
                    write_json(
                        root / name / "metrics.json",
                        {"history": [{"epoch": i + 1, "train_loss": v} for i, v in enumerate(trainer.history)]},
                    )
                    log(f"[{name}] epoch {trainer.epoch}/{cfg.train.epochs} train loss {loss:.4f}")
            log(f"[{name}] checkpoint: {root / name}  (zoo eval --task segmentation --weights {name}={root / name})")
            models[name] = model.eval()
    except KeyboardInterrupt:
        saved = f"stopped while training {current}; each model in {root} is saved at its last complete epoch"
        log(f"interrupted: {saved}")
        raise FinetuneInterrupted(saved, root) from None
    shifts = random_shifts(cfg.segmentation.shifts, cfg.eval.max_shift or 8, cfg.eval.seed)
    report = evaluate_models(
        models,
        test,
        shifts=shifts,
        batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
        ignore_index=cfg.segmentation.ignore_index,
        progress=cfg.output.progress,
        device=device,
    )
    report["data"] = desc
    report["recipe"] = {
        "epochs": cfg.train.epochs,
        "batch_size": cfg.data.batch_size,
        "optimizer": o.name,
        "lr": o.lr,
        "seed": cfg.train.seed,
        "decoder_channels": cfg.segmentation.decoder_channels,
    }
    notes = [
        f"data: {desc}; recipe {report['recipe']}",
        f"dense consistency: {len(shifts)} circular shifts up to {cfg.eval.max_shift or 8} px (seed {cfg.eval.seed}); "
        "95% CI Student t over test images",
        "mIoU 95% CI: percentile bootstrap over test images; paired: per-image difference to the first model, "
        "bootstrap 95% CI and sign-flip p",
    ]
    report["notes"] = notes
    table = write_results(report, root, notes)
    log("")
    log(f"results on the test images ({test.description}):")
    log(table)
    for note in notes:
        log(f"  {note}")
    log(f"wrote {root / 'results.json'}, results.md and results.png")
    return FinetuneResult(root, table=table, report=report)


# ---------------------------------------------------------------------------------------------- demo


def demo(config: str | Path = DEMO_CONFIG, overrides: Sequence[str] = ()) -> Any:
    """The pasted-digits segmentation demo: the models of ``config`` trained with its recipe, then the table."""
    from zoo.registry import get_entry
    from zoo.train.config import load_finetune_config

    path = Path(config)
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(spec, dict) or not isinstance(spec.get("models"), list) or "finetune" not in spec:
        raise ValueError(f"{path} must hold `finetune: CONFIG.yaml` and `models: [unet_..., ...]`")
    start_wall, start_cpu = time.time(), time.process_time()
    names = [str(name) for name in spec["models"]]
    for name in names:
        get_entry(name)  # an unknown name: UnknownModelError naming the closest ones, before any training
    finetune_path = path.parent / spec["finetune"] if not Path(spec["finetune"]).is_absolute() else spec["finetune"]
    if not Path(finetune_path).is_file():
        finetune_path = Path(__file__).resolve().parents[2] / spec["finetune"]
    cfg = load_finetune_config(finetune_path, [*spec.get("overrides", []), *overrides])
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    result = finetune_segmentation(cfg, names)
    wall, cpu = time.time() - start_wall, time.process_time() - start_cpu
    print(f"wall {wall:.0f} s, CPU {cpu:.0f} s on {torch.get_num_threads()} thread(s)")
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="pasted-digits segmentation demo (U-Nets: baseline, blur, APS)")
    parser.add_argument("--config", default=str(DEMO_CONFIG), help="models + finetune config (YAML)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="finetune config overrides")
    args = parser.parse_args(argv)
    demo(args.config, args.overrides)


if __name__ == "__main__":
    main()
