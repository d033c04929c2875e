"""``create``: name -> registry entry -> family class (+ pretrained weights)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from zoo.models._interface import ZooModel
from zoo.registry import ModelEntry, get_entry


def _model_kwargs(entry: ModelEntry, kwargs: dict[str, Any]) -> dict[str, Any]:
    accepted = set(inspect.signature(entry.cls.__init__).parameters) - {"self", "arch"} - set(entry.variant)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(
            f"{entry.name}: unexpected argument(s) {', '.join(unknown)}; accepted: {', '.join(sorted(accepted))}"
        )
    if not entry.antialiased and ("filter_size" in kwargs or kwargs.get("aa_stem") is True):
        raise ValueError(
            f"{entry.name} is the torchvision baseline (no blur); use {entry.arch}_aa4 or another "
            f"{entry.arch}_aaK for an anti-aliased model"
        )
    return {**entry.variant, "filter_size": entry.filter_size, **kwargs}


def build_model(entry: ModelEntry, **kwargs: Any) -> ZooModel:
    """Instantiate the (randomly initialised) model of a registry entry."""
    model = entry.cls(entry.name, **_model_kwargs(entry, kwargs))
    model.pretrained_cfg = model.default_pretrained_cfg(entry.name)
    return model


def create(name: str, pretrained: bool | str | Path = False, **kwargs: Any) -> ZooModel:
    """Build a zoo model by name, e.g. ``create("resnet50_aa4", num_classes=10)``.

    Args:
        name: ``{arch}`` (torchvision baseline twin) or ``{arch}_aa{K}`` (anti-aliased, filter size K).
        pretrained: ``False``; ``True`` (default weights of ``name``); a weight tag; a path to a
            ``.safetensors`` file or a checkpoint directory; or ``"hf-hub:org/repo"``.
        **kwargs: ``num_classes``, ``in_chans``, ``drop_rate``, ``global_pool``, ``filter_size``
            (overrides K), ``pad_mode``, ``aa_stem``.
    """
    entry = get_entry(name)
    if pretrained is False or pretrained is None:
        return build_model(entry, **kwargs)
    from zoo.weights.load import create_pretrained

    return create_pretrained(entry, pretrained, **kwargs)
