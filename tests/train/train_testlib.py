"""Helpers shared by the fine-tuning tests (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path


def tiny(out: Path, *extra: str) -> list[str]:
    """Overrides for a tiny digits run of resnet18_aa4 at 32 px (64 train / 32 eval images)."""
    return [
        "model.name=resnet18_aa4",
        "model.pretrained=none",
        "data.source=digits",
        "data.image_size=32",
        "data.limit_train=64",
        "data.limit_eval=32",
        "data.batch_size=16",
        "train.epochs=1",
        "train.threads=1",
        "eval.max_shift=4",
        f"output.dir={out}",
        "output.name=tiny",
        "output.plots=false",
        "output.progress=false",
        *extra,
    ]
