"""zoo.pretrained: the typed pretrained-config record and its one conversion to timm's dict."""

from __future__ import annotations

import pytest

from zoo.constants import IMAGENET_MEAN, IMAGENET_STD
from zoo.pretrained import IMAGENET_EVAL, PretrainedCfg, to_timm_cfg
from zoo.weights.manifest import load_manifest


def test_round_trip_keeps_unknown_keys_and_drops_none() -> None:
    cfg = {"architecture": "resnet18_aa4", "crop_pct": 0.9, "file": "/x/model.safetensors", "url": None}
    record = PretrainedCfg.from_dict(cfg)
    assert record.architecture == "resnet18_aa4" and record.crop_pct == 0.9
    assert record.extra == {"file": "/x/model.safetensors"}
    assert to_timm_cfg(record) == {"architecture": "resnet18_aa4", "crop_pct": 0.9, "file": "/x/model.safetensors"}
    assert to_timm_cfg(PretrainedCfg.from_dict(None)) == {}


def test_replace_applies_dicts_then_keywords_and_none_removes() -> None:
    record = PretrainedCfg.from_dict({"tag": "a", "source": "hub", "mean": (0.5,) * 3})
    out = to_timm_cfg(record.replace({"tag": "b", "converted_from": "f.pth"}, {"tag": "c"}, source=None, std=(2.0,)))
    assert out == {"tag": "c", "mean": (0.5,) * 3, "std": (2.0,), "converted_from": "f.pth"}
    assert record.tag == "a", "replace returns a copy"
    with pytest.raises(ValueError, match="give extra keys by name"):
        record.replace(extra={"x": 1})


def test_imagenet_eval_defaults() -> None:
    cfg = to_timm_cfg(IMAGENET_EVAL)
    assert cfg == {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
    }


def test_manifest_entries_are_records() -> None:
    entry = load_manifest().get("resnet18_aa4.in1k")
    record = entry.record()
    assert isinstance(record, PretrainedCfg) and record.weights == "resnet18_aa4.in1k"
    assert entry.pretrained_cfg() == to_timm_cfg(record)
    assert record.crop_mode == "center" and record.input_size == (3, 224, 224)
