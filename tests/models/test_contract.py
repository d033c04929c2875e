"""The family contract of ``zoo.models._contract``: one meaning for each attribute in every family."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from zoo.registry import get_entry

ONE_PER_FAMILY = ["resnet18_aa4", "vgg11_aa4", "alexnet", "densenet121_aa3", "mobilenet_v2_aa4",
                  "mobilenet_v3_small"]  # fmt: skip
COMMON = {"num_classes", "in_chans", "drop_rate", "global_pool", "filter_size", "pad_mode", "aa_stem"}


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_every_family_has_the_same_contract(name: str) -> None:
    model = zoo.create(name, num_classes=4)
    entry = get_entry(name)
    assert model.name == model.arch == entry.name and entry.arch == name.split("_aa")[0]
    assert isinstance(model.global_pool, nn.Module) and model.global_pool_type == "avg"
    assert entry.cls.build_args() >= COMMON and "name" not in entry.cls.build_args()
    trunk = [n for n, _ in model.trunk()]
    assert all(info["module"] in trunk for info in model.feature_info)
    assert not any(n.split(".")[0] in model.head_names for n in trunk)
    assert model.get_classifier() is model.get_submodule(model.classifier_name)
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        out = x
        for _, module in model.trunk():  # the trunk, run by hand, is forward_features
            out = module(out)
        torch.testing.assert_close(out, model.forward_features(x), rtol=0, atol=0)
    model.reset_classifier(2, "max" if "vgg" not in name and "alexnet" not in name else "")
    assert model.global_pool_type in ("max", "") and model.num_classes == 2
