"""Segmentation training: the per-pixel loss step, a small loop and the pasted-digits demo (make demo-segmentation).

The demo trains ``unet_resnet18``, ``unet_resnet18_aa4`` (and ``unet_resnet18_aps`` when the APS layers are
installed) with one seed and one recipe on 64x64 canvases of pasted scikit-learn digits (``zoo.data.segmentation``),
then reports mIoU and dense circular-shift consistency with 95% intervals on held-out canvases, a paired comparison
against the baseline, a JSON and a PNG under ``runs/digits_segmentation/``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = ["DEMO_MODELS", "demo", "segmentation_loss", "train_segmentation"]

DEMO_MODELS: tuple[str, ...] = ("unet_resnet18", "unet_resnet18_aa4", "unet_resnet18_aps")


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
    """AdamW + cosine schedule on ``(images, masks)``; returns the mean loss of each epoch."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * -(-len(images) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    history: list[float] = []
    bar = tqdm(total=steps, desc=getattr(model, "name", "train"), disable=not progress, leave=False)
    for _ in range(epochs):
        model.train()
        total, count = 0.0, 0
        for x, y in _batches(images, masks, batch_size, gen):
            loss = segmentation_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, count = total + loss.item() * len(x), count + len(x)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        history.append(total / count)
    bar.close()
    return history


def _available(names: Sequence[str]) -> tuple[list[str], list[str]]:
    from zoo.registry import get_entry

    ok, missing = [], []
    for name in names:
        try:
            get_entry(name)
            ok.append(name)
        except (KeyError, ValueError):
            missing.append(name)
    return ok, missing


def _plot(results: dict[str, dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zoo.io import atomic_path

    names = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, key, title in zip(axes, ("miou", "consistency"), ("mIoU (%)", "dense shift consistency (%)")):
        vals = [100 * results[n][key] for n in names]
        lo = [100 * (results[n][key] - results[n][f"{key}_ci95"][0]) for n in names]
        hi = [100 * (results[n][f"{key}_ci95"][1] - results[n][key]) for n in names]
        ax.barh(names, vals, xerr=[lo, hi], color="tab:blue", capsize=3)
        ax.set_title(title)
        ax.invert_yaxis()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def demo(
    out_dir: str | Path = "runs/digits_segmentation",
    train_count: int = 1024,
    test_count: int = 256,
    epochs: int = 2,
    seed: int = 0,
    models: Sequence[str] = DEMO_MODELS,
    progress: bool = True,
) -> dict[str, Any]:
    """The pasted-digits segmentation demo; prints the table and writes ``results.json`` and ``results.png``."""
    from zoo.builder import create
    from zoo.data.segmentation import pasted_digits
    from zoo.eval.segmentation import evaluate_segmentation, paired_segmentation, random_shifts
    from zoo.io import write_json

    start_wall, start_cpu = time.time(), time.process_time()
    names, missing = _available(models)
    for name in missing:
        print(f"{name}: not available in this install (its sampling layer is not registered), left out")
    train_x, train_y = pasted_digits(train_count, seed=seed)
    test_x, test_y = pasted_digits(test_count, seed=seed + 1000)
    shifts = random_shifts(4, 8, seed=seed)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        torch.manual_seed(seed)
        model = create(name, num_classes=11, decoder_channels=64)
        losses = train_segmentation(model, train_x, train_y, epochs=epochs, seed=seed, progress=progress)
        res = evaluate_segmentation(model, _batches(test_x, test_y, 64, None), 11, shifts=shifts)
        res["train_loss"] = losses
        results[name] = res
    base = names[0] if names else None
    header = "| model | mIoU % [95% CI] | consistency % [95% CI] | vs baseline: per-image IoU diff (p) |"
    rows = [header + " consistency diff (p) |", "|---|---|---|---|---|"]
    for name, res in results.items():
        cell = "-", "-"
        if name != base:
            pair = paired_segmentation(results[base], res)
            res["vs_baseline"] = pair
            cell = tuple(f"{100 * pair[k]['diff']:+.1f} (p={pair[k]['p']:.3f})" for k in ("iou", "consistency"))
        m, c = res["miou_ci95"], res["consistency_ci95"]
        miou_cell = f"{100 * res['miou']:.1f} [{100 * m[0]:.1f}, {100 * m[1]:.1f}]"
        cons_cell = f"{100 * res['consistency']:.1f} [{100 * c[0]:.1f}, {100 * c[1]:.1f}]"
        rows.append(f"| {name} | {miou_cell} | {cons_cell} | {cell[0]} | {cell[1]} |")
    table = "\n".join(rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "data": f"{train_count} train / {test_count} test 64x64 canvases, 2 pasted digits each (seed {seed})",
        "recipe": {"epochs": epochs, "batch_size": 32, "optimizer": "adamw", "lr": 2e-3, "seed": seed},
        "shifts": [list(d) for d in shifts],
        "models": results,
        "wall_s": time.time() - start_wall,
        "cpu_s": time.process_time() - start_cpu,
        "threads": torch.get_num_threads(),
    }
    write_json(out / "results.json", summary)
    _plot(results, out / "results.png")
    print(table)
    print(f"wall {summary['wall_s']:.0f} s, CPU {summary['cpu_s']:.0f} s on {summary['threads']} thread(s); "
          f"wrote {out / 'results.json'} and {out / 'results.png'}")  # fmt: skip
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="pasted-digits segmentation demo")
    parser.add_argument("--out", default="runs/digits_segmentation")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-count", type=int, default=1024)
    parser.add_argument("--test-count", type=int, default=256)
    args = parser.parse_args(argv)
    demo(args.out, args.train_count, args.test_count, args.epochs)


if __name__ == "__main__":
    main()
