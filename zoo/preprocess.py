"""Eval preprocessing and label names of a model's weights (like torchvision's weights enums offer)."""

from __future__ import annotations

import math
from typing import Any

from torch import nn
from torchvision import transforms as T

from zoo.constants import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["label_names", "resolve_data_config", "transforms"]

_INTERPOLATION = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


def _cfg(model_or_cfg: nn.Module | dict[str, Any]) -> dict[str, Any]:
    cfg = model_or_cfg if isinstance(model_or_cfg, dict) else getattr(model_or_cfg, "pretrained_cfg", None)
    if not cfg:
        raise ValueError("expected a zoo model (with .pretrained_cfg) or a pretrained cfg dict")
    return cfg


def resolve_data_config(model_or_cfg: nn.Module | dict[str, Any]) -> dict[str, Any]:
    """``input_size``, ``crop_pct``, ``interpolation``, ``mean``, ``std`` of the model's weights
    (mean/std averaged to one channel for ``in_chans=1`` and repeated for other channel counts)."""
    cfg = _cfg(model_or_cfg)
    size = tuple(cfg.get("input_size", (3, 224, 224)))
    mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    chans = size[0]
    if len(mean) != chans:
        mean, std = (sum(mean) / len(mean),) * chans, (sum(std) / len(std),) * chans
    interpolation = cfg.get("interpolation", "bilinear")
    if interpolation not in _INTERPOLATION:
        raise ValueError(f"unknown interpolation {interpolation!r}; valid: {', '.join(_INTERPOLATION)}")
    return {
        "input_size": size,
        "crop_pct": float(cfg.get("crop_pct", 0.875)),
        "interpolation": interpolation,
        "mean": mean,
        "std": std,
    }


def transforms(model_or_cfg: nn.Module | dict[str, Any]) -> T.Compose:
    """The eval transform of a model's weights: resize to ``crop / crop_pct``, center crop, to tensor, normalize.

    >>> tf = zoo.transforms(zoo.create("resnet50_aa4"))   # Resize(256) CenterCrop(224) ToTensor Normalize
    """
    data = resolve_data_config(model_or_cfg)
    crop = data["input_size"][-1]
    steps: list[Any] = [
        T.Resize(math.floor(crop / data["crop_pct"]), interpolation=_INTERPOLATION[data["interpolation"]]),
        T.CenterCrop(crop),
    ]
    if data["input_size"][0] == 1:
        steps.append(T.Grayscale(1))
    steps += [T.ToTensor(), T.Normalize(data["mean"], data["std"])]
    return T.Compose(steps)


def label_names(model_or_cfg: nn.Module | dict[str, Any]) -> list[str]:
    """Class names of the model's weights: ``label_names`` stored with them, else their label set
    (ImageNet-1k for the published weights; shipped as data in ``zoo/weights/labels/``)."""
    from zoo.weights.manifest import load_manifest

    cfg = _cfg(model_or_cfg)
    if isinstance(cfg.get("label_names"), list):
        return list(cfg["label_names"])
    label_set = cfg.get("label_set")
    if label_set is None and cfg.get("num_classes") == 1000:
        label_set = "imagenet-1k"
    if label_set is None:
        raise ValueError(
            f"no label names known for {cfg.get('architecture', 'this model')} ({cfg.get('num_classes')} classes): "
            "save them as pretrained_cfg['label_names']"
        )
    return load_manifest().label_names(label_set)
