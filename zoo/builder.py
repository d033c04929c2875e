"""``create``: name -> registry entry -> family class, then (for ``pretrained``) ask ``zoo.weights`` for a state
dict and load it. The weights code never imports this module."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zoo.models._contract import ZooModel
from zoo.models.aps import to_aps
from zoo.registry import APS_SUFFIX, ModelEntry, get_entry
from zoo.weights.load import apply_weights, resolve_weights

SAMPLINGS: tuple[str, ...] = ("stride", "aps")


def _model_kwargs(entry: ModelEntry, kwargs: dict[str, Any]) -> dict[str, Any]:
    accepted = entry.cls.build_args() - set(entry.variant)
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
    if entry.sampling == "aps":
        if kwargs.get("aa_stem") is False:
            raise ValueError(f"{entry.name}: APS subsamples the stem too; aa_stem=False is not available")
        defaults = {"filter_size": entry.filter_size or 1, "pad_mode": "circular", "aa_stem": True}
        return {**entry.variant, **defaults, **kwargs}
    return {**entry.variant, "filter_size": entry.filter_size, **kwargs}


def instantiate(entry: ModelEntry, **kwargs: Any) -> ZooModel:
    """Instantiate the randomly initialised model of a registry entry (no weights loaded)."""
    model = entry.cls(entry.name, **_model_kwargs(entry, kwargs))
    model.sampling = entry.sampling
    if entry.sampling == "aps":
        to_aps(model)
    model.pretrained_cfg = model.default_pretrained_cfg(entry.name)
    return model


def create(name: str, pretrained: bool | str | Path = False, **kwargs: Any) -> ZooModel:
    """Build a zoo model by name, e.g. ``create("resnet50_aa4", num_classes=10)``.

    Args:
        name: ``{arch}`` (torchvision baseline twin), ``{arch}_aa{K}`` (anti-aliased, filter size K), or
            either followed by ``_aps`` (adaptive polyphase sampling, circular padding: ``zoo.models.aps``).
        pretrained: ``False``; ``True`` (default weights of ``name``); a weight tag; a path to a
            ``.safetensors`` file or a checkpoint directory; or ``"hf-hub:org/repo"``.
        **kwargs: ``num_classes``, ``in_chans``, ``drop_rate``, ``global_pool``, ``filter_size``
            (overrides K), ``pad_mode``, ``aa_stem``; ``sampling="aps"`` appends ``_aps`` to ``name``.
    """
    sampling = kwargs.pop("sampling", "stride")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    if sampling == "aps" and not name.endswith(APS_SUFFIX):
        name += APS_SUFFIX  # create("resnet18_aa4", sampling="aps") is resnet18_aa4_aps
    entry = get_entry(name)
    if pretrained is False or pretrained is None:
        return instantiate(entry, **kwargs)
    return create_pretrained(entry, pretrained, **kwargs)


def create_pretrained(entry: ModelEntry | str, pretrained: bool | str | os.PathLike, **kwargs: Any) -> ZooModel:
    """Build ``entry`` with the weights ``pretrained`` (``zoo.weights.load.resolve_weights`` values).

    Build arguments stored with the weights (``model_args``, e.g. the ``num_classes`` of a
    fine-tuned folder) are used unless ``kwargs`` override them.
    """
    entry = get_entry(entry) if isinstance(entry, str) else entry
    # an ``_aps`` model holds no parameter of its own: it loads the weights of its strided twin
    res = resolve_weights(entry.name.removesuffix(APS_SUFFIX) if entry.sampling == "aps" else entry.name, pretrained)
    model_args = {k: v for k, v in res.model_args.items() if k not in ("filter_size",) or entry.antialiased}
    model = instantiate(entry, **{**model_args, **kwargs})
    apply_weights(model, entry.name, res)
    return model
