"""State dicts identical to torchvision's, by name: torchvision weights load with strict=True,
and the plain names are exact torchvision twins."""

from __future__ import annotations

import pytest
import torch
import torchvision

import zoo
from zoo.registry import ARCHS, get_entry

HAND_BUILT = [a for a in ARCHS if get_entry(a).family != "torchvision_cnn"]  # torchvision_cnn: test_tv_cnn.py


def _torchvision(arch: str) -> torch.nn.Module:
    return getattr(torchvision.models, arch)(weights=None)


@pytest.mark.parametrize("arch", HAND_BUILT)
def test_aa4_keys_and_shapes_equal_torchvision(arch: str) -> None:
    with torch.device("meta"):
        ours = zoo.create(f"{arch}_aa4").state_dict()
        theirs = _torchvision(arch).state_dict()
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert ours[key].shape == value.shape, key


@pytest.mark.parametrize("arch", ["resnet18", "resnext50_32x4d", "vgg11_bn", "alexnet", "densenet121",
                                  "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"])  # fmt: skip
def test_baseline_twin_equals_torchvision(arch: str) -> None:
    torch.manual_seed(0)
    reference = _torchvision(arch).eval()
    twin = zoo.create(arch).eval()
    twin.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 80, 80)
    with torch.no_grad():
        assert torch.allclose(twin(x), reference(x), atol=1e-5, rtol=0)
    aa = zoo.create(f"{arch}_aa4").eval()
    aa.load_state_dict(reference.state_dict(), strict=True)  # torchvision weights load by name
    with torch.no_grad():
        ref = reference(x)
        assert (aa(x) - ref).abs().max() > 1e-2 * ref.abs().max()  # ... into a different (blurred) network


@pytest.mark.slow
@pytest.mark.parametrize("arch", HAND_BUILT)
def test_every_baseline_twin_equals_torchvision(arch: str) -> None:
    torch.manual_seed(0)
    reference = _torchvision(arch).eval()
    twin = zoo.create(arch).eval()
    twin.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64) if arch != "alexnet" else torch.randn(1, 3, 72, 72)
    with torch.no_grad():
        assert torch.allclose(twin(x), reference(x), atol=1e-5, rtol=0)
