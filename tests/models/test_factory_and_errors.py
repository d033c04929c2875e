"""The factory, the registry and the errors users see."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.registry import ARCHS, FILTER_SIZES, get_entry, list_models


def test_registry_has_every_arch_baseline_and_filter_sizes() -> None:
    assert len(ARCHS) == 26 + 42  # hand-built families + zoo.models.torchvision_cnn
    names = list_models()
    assert len(names) == len(ARCHS) * (1 + len(FILTER_SIZES))
    for arch in ARCHS:
        assert arch in names
        assert all(f"{arch}_aa{k}" in names for k in FILTER_SIZES)
    assert list_models("resnet50_aa*") == ["resnet50_aa2", "resnet50_aa3", "resnet50_aa4", "resnet50_aa5"]
    assert "resnet50" not in list_models("resnet50*", antialiased=True)


def test_any_filter_size_by_name_or_kwarg() -> None:
    assert zoo.create("resnet18_aa7").filter_size == 7
    assert zoo.create("resnet18_aa1").filter_size == 1
    assert zoo.create("resnet18_aa4", filter_size=6).filter_size == 6
    assert zoo.create("resnet18").filter_size is None


def test_resnet50_aa4_on_32px_returns_logits_and_1px_is_a_clear_error() -> None:
    model = zoo.create("resnet50_aa4").eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 1000)
        with pytest.raises(ValueError, match=r"input of 1x1 pixels is too small for resnet50_aa4: the minimum is 3x3"):
            model(torch.randn(1, 3, 1, 1))


MIN_SIZE_CASES = ["resnet18_aa4", "resnet18", "vgg11_aa4", "vgg11", "alexnet_aa4", "alexnet",
                  "densenet121_aa4", "densenet121", "mobilenet_v2_aa4", "mobilenet_v3_small_aa4"]  # fmt: skip


@pytest.mark.parametrize("name", MIN_SIZE_CASES)
def test_min_input_size_is_exact(name: str) -> None:
    """The stated minimum runs; one pixel less is refused with the clear error (not a crash inside)."""
    model = zoo.create(name, num_classes=3).eval()
    size = model.min_input_size
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 3)
        model.min_input_size = 1  # without the check, the network itself would fail one pixel below
        if size > 1:
            with pytest.raises(RuntimeError):
                model(torch.randn(1, 3, size - 1, size - 1))
            model.min_input_size = size
            with pytest.raises(ValueError, match=f"the minimum is {size}x{size}"):
                model(torch.randn(1, 3, size - 1, size - 1))


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(zoo.UnknownModelError, match=r"unknown model 'resnet5_aa4'; did you mean resnet50_aa4"):
        zoo.create("resnet5_aa4")
    with pytest.raises(KeyError):  # also a KeyError, like a dict lookup
        get_entry("densnet121")
    with pytest.raises(ValueError, match="did you mean densenet121"):
        get_entry("densnet121")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="filter_size must be an integer >= 1"):
        zoo.create("resnet18_aa4", filter_size=0)
    with pytest.raises(ValueError, match="unknown pad_mode 'mirror'; valid modes: reflect, replicate, zero, circular"):
        zoo.create("resnet18_aa4", pad_mode="mirror")
    with pytest.raises(ValueError, match="resnet18 is the torchvision baseline"):
        zoo.create("resnet18", filter_size=4)
    with pytest.raises(TypeError, match=r"unexpected argument\(s\) num_class; accepted: .*num_classes"):
        zoo.create("resnet18_aa4", num_class=3)
    with pytest.raises(ValueError, match="unknown global_pool 'mean'"):
        zoo.create("resnet18_aa4", global_pool="mean")
    with pytest.raises(ValueError, match="in_chans must be an int >= 1"):
        zoo.create("resnet18_aa4", in_chans=0)


def test_wrong_channel_count_is_a_clear_error() -> None:
    model = zoo.create("mobilenet_v2_aa4").eval()
    with pytest.raises(ValueError, match=r"built for 3 input channels but got 1 \(input shape \(1, 1, 64, 64\)\)"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="4-D batch"):
        model(torch.randn(3, 64, 64))
