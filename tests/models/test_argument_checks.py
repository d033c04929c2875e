"""Build arguments that are refused with a clear error, for every family, through ``zoo.create`` and
``timm.create_model``: ``drop_rate`` outside [0, 1), a non-bool ``aa_stem``, ``pretrained=""``."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

import zoo
from zoo.weights import save_model_dir

FAMILIES = ["resnet18_aa4", "vgg11_aa3", "alexnet_aa4", "densenet121_aa2", "mobilenet_v2_aa4",
            "mobilenet_v3_small_aa5"]  # fmt: skip
BASELINES = ["resnet18", "mobilenet_v3_small"]
BAD_DROP_RATES = [-0.1, 1.0, 1.5, float("nan"), float("inf"), "0.2", True, None]


def _creators(name: str) -> list:
    ways = [zoo.create]
    if name.rsplit("_aa", 1)[-1].isdigit():  # timm registers the anti-aliased names only
        ways.append(timm.create_model)
    return ways


@pytest.mark.parametrize("name", FAMILIES + BASELINES)
def test_drop_rate_outside_0_1_is_refused(name: str) -> None:
    for create in _creators(name):
        for rate in BAD_DROP_RATES:
            if create is timm.create_model and rate is None:
                continue  # timm drops None-valued kwargs before the model sees them
            with pytest.raises(ValueError, match=r"drop_rate must be a number in \[0, 1\)"):
                create(name, drop_rate=rate)


@pytest.mark.parametrize("name", FAMILIES + BASELINES)
def test_aa_stem_must_be_a_bool(name: str) -> None:
    for create in _creators(name):
        for value in ("no", "False", 0, 1, None):
            if create is timm.create_model and value is None:
                continue
            with pytest.raises(ValueError, match=rf"aa_stem must be True or False, got {value!r}"):
                create(name, aa_stem=value)


@pytest.mark.parametrize("name", ["resnet18_aa4", "mobilenet_v3_small_aa5"])
def test_valid_values_still_build(name: str) -> None:
    model = zoo.create(name, drop_rate=0.0, aa_stem=False)
    assert model.drop_rate == 0.0 and model.aa_stem is False
    model = timm.create_model(name, drop_rate=0.999, aa_stem=True)
    assert model.drop_rate == 0.999 and model.aa_stem is True
    assert zoo.create(name, drop_rate=0).drop_rate == 0.0


@pytest.mark.parametrize("name", FAMILIES[:1] + FAMILIES[-1:] + BASELINES[-1:])
def test_empty_pretrained_never_loads_the_current_folder(name: str, tmp_path: Path, monkeypatch) -> None:
    """``Path("")`` is the current folder: ``pretrained=""`` used to load ./model.safetensors silently."""
    torch.manual_seed(0)
    save_model_dir(zoo.create(name), tmp_path, name=name)  # a loadable model.safetensors in the cwd
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"pretrained='' is empty: pass True, a weight tag, a path"):
        zoo.create(name, pretrained="")
    assert zoo.create(name, pretrained=".").pretrained_cfg["file"] == "."  # explicit: still allowed
    if timm.create_model in _creators(name):
        with pytest.raises(ValueError, match=r"timm's pretrained must be True or False, got ''"):
            timm.create_model(name, pretrained="")
        with pytest.raises(ValueError, match=r"got '\.'; for a weights file or folder pass pretrained=True"):
            timm.create_model(name, pretrained=".")
