"""Adding a model family is one module plus its registration: a toy family, registered through
``zoo.registry.register_family``, builds by name with the full interface the base derives."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import zoo
from zoo import registry
from zoo.layers import MaxBlurPool2d
from zoo.models import ZooModel
from zoo.models._head import PoolFcModel


class ToyNet(PoolFcModel):
    """conv -> max-pool (MaxBlurPool when anti-aliased) -> conv, in one ``features`` Sequential."""

    first_conv = "features.0"
    classifier_name = "fc"

    def __init__(self, name: str = "toynet", width: int = 8, **common: Any) -> None:
        super().__init__(name, **common)  # num_classes, in_chans, drop_rate, global_pool, filter_size, ...
        k = self.filter_size
        pool = nn.MaxPool2d(2, 2) if k is None else MaxBlurPool2d(width, 2, 2, 0, k, self.pad_mode)
        self.features = nn.Sequential(
            nn.Conv2d(self.in_chans, width, 3, padding=1), nn.ReLU(inplace=True), pool, nn.Conv2d(width, 2 * width, 3)
        )
        self.feature_info = [
            dict(num_chs=width, reduction=2, module="features.2"),
            dict(num_chs=2 * width, reduction=2, module="features.3"),
        ]
        self.num_features = self.head_hidden_size = 2 * width
        self._finish()  # global pool + fc, min_input_size, weight init

    def _min_size(self) -> int:
        return 6  # the unpadded 3x3 conv after the 2x subsampling needs a 3x3 map


TOY_VARIANTS: dict[str, dict[str, Any]] = {"toynet_s": dict(width=4), "toynet_m": dict(width=8)}


@pytest.fixture
def toy_family(monkeypatch):
    """Register the toy family; the registry's tables are restored afterwards."""
    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))
    monkeypatch.setattr(registry, "ARCHS", registry.ARCHS)
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    return registry.register_family("toy", ToyNet, TOY_VARIANTS)


def test_toy_family_builds_by_name(toy_family: list[str]) -> None:
    assert sorted(toy_family) == sorted(f"{a}{s}" for a in TOY_VARIANTS for s in ("", "_aa2", "_aa3", "_aa4", "_aa5"))
    assert "toynet_m_aa4" in zoo.list_models("toynet*") and "toynet_s" in registry.ARCHS
    model = zoo.create("toynet_m_aa3", num_classes=5).eval()
    assert isinstance(model, ToyNet) and isinstance(model, ZooModel)
    assert model.name == model.arch == "toynet_m_aa3" and model.filter_size == 3 and model.num_features == 16
    assert zoo.create("toynet_s").filter_size is None and zoo.create("toynet_s").num_features == 8
    assert zoo.create("toynet_m_aa7").filter_size == 7  # any K, as for the built-in families
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 16, 6, 6)
        assert torch.equal(model(x), model.forward_head(feats)) and model(x).shape == (2, 5)
        levels = model.forward_intermediates(x, intermediates_only=True)
    assert [f.shape[1] for f in levels] == [8, 16]
    assert [n for n, _ in model.trunk()] == ["features.0", "features.1", "features.2", "features.3"]
    assert model.pretrained_cfg["architecture"] == "toynet_m_aa3" and model.min_input_size == 6
    with pytest.raises(ValueError, match="input of 5x5 pixels is too small for toynet_m_aa3: the minimum is 6x6"):
        model(torch.randn(1, 3, 5, 5))
    model.reset_classifier(0)
    assert model(x).shape == (2, 16)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=0, atol=0)


def test_toy_family_unknown_argument_and_duplicate_registration(toy_family: list[str]) -> None:
    with pytest.raises(TypeError, match=r"unexpected argument\(s\) depth; accepted: .*num_classes"):
        zoo.create("toynet_s_aa4", depth=3)
    with pytest.raises(ValueError, match="already registered"):
        registry.register_family("toy", ToyNet, TOY_VARIANTS)
    with pytest.raises(ValueError, match="architecture\\(s\\) resnet18 already registered"):
        registry.register_family("toy2", ToyNet, {"resnet18": {}})
