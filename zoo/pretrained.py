"""The typed record of a weight's metadata and eval preprocessing, and the one way to turn it into timm's
``pretrained_cfg`` dict.

Every ``pretrained_cfg`` of the package (a model's defaults, a manifest weight, the timm bridge's
registered cfgs, a fine-tuned or distilled export, a converted checkpoint) is built as a
:class:`PretrainedCfg` and written out by :func:`to_timm_cfg`; a dict read back (``model.pretrained_cfg``,
a ``config.json``) becomes a record again with :meth:`PretrainedCfg.from_dict`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zoo.constants import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["IMAGENET_EVAL", "PretrainedCfg", "to_timm_cfg"]


@dataclass(frozen=True)
class PretrainedCfg:
    """A weight's metadata (where it comes from, what it was trained on) and its eval preprocessing.

    Field names are timm's ``pretrained_cfg`` keys; a value ``None`` is not written. Keys timm and the
    zoo do not name here (``file``, ``source``, ``converted_from``, ...) are kept in ``extra``.
    """

    # identity and sources
    architecture: str | None = None
    tag: str | None = None
    weights: str | None = None
    hf_hub_id: str | None = None
    hf_hub_filename: str | None = None
    url: str | None = None
    # what the weights classify and how an image is prepared for them
    num_classes: int | None = None
    input_size: Sequence[int] | None = None
    crop_pct: float | None = None
    crop_mode: str | None = None
    interpolation: str | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    # provenance and published figures
    license: str | None = None
    origin_url: str | None = None
    paper_ids: Any = None
    label_set: str | None = None
    metrics: dict[str, Any] | None = None
    # set by fine-tuning, distillation and the segmentation task
    label_names: Sequence[str] | None = None
    test_input_size: Sequence[int] | None = None
    task: str | None = None
    # what the model instance says (its truth wins over any weights' metadata)
    pool_size: Sequence[int] | None = None
    min_input_size: Sequence[int] | None = None
    first_conv: str | None = None
    classifier: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> PretrainedCfg:
        """The record of a ``pretrained_cfg`` dict (``None``: an empty record); other keys go to ``extra``."""
        return EMPTY.replace(cfg or {})

    def replace(self, *cfgs: Mapping[str, Any], **changes: Any) -> PretrainedCfg:
        """A copy with the ``cfgs`` dicts, then ``changes``, applied: fields by name, any other key into
        ``extra`` (a key set to ``None`` is dropped from the written cfg)."""
        merged: dict[str, Any] = {}
        for cfg in (*cfgs, changes):
            merged.update(cfg)
        if "extra" in merged:
            raise ValueError("PretrainedCfg.replace: give extra keys by name, not as extra=")
        known = {k: v for k, v in merged.items() if k in _FIELDS}
        extra = {k: v for k, v in merged.items() if k not in _FIELDS}
        return dataclasses.replace(self, **known, extra={**self.extra, **extra})


_FIELDS = frozenset(f.name for f in dataclasses.fields(PretrainedCfg)) - {"extra"}
EMPTY = PretrainedCfg()

#: torchvision's ImageNet eval settings: the preprocessing of a model without published weights.
IMAGENET_EVAL = PretrainedCfg(
    num_classes=1000,
    input_size=(3, 224, 224),
    crop_pct=0.875,
    interpolation="bilinear",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
)


def to_timm_cfg(record: PretrainedCfg) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` dict of ``record``: its fields in order, then ``extra``; ``None`` values left out."""
    out = {name: getattr(record, name) for name in _ORDER}
    out.update(record.extra)
    return {k: v for k, v in out.items() if v is not None}


_ORDER = tuple(f.name for f in dataclasses.fields(PretrainedCfg) if f.name != "extra")
