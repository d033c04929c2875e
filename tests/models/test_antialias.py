"""zoo.antialias on torchvision models gives exactly the zoo's hand-built {arch}_aa{K} logits."""

from __future__ import annotations

import functools

import pytest
import torch
import torchvision
from torch import nn

import zoo
from zoo.models.antialias import antialias
from zoo.registry import FILTER_SIZES


@functools.lru_cache(maxsize=1)
def _torchvision(arch: str) -> nn.Module:
    """torchvision's ``arch`` holding the zoo baseline's random weights (kept for the next filter size)."""
    torch.manual_seed(0)
    tv = getattr(torchvision.models, arch)().eval()
    tv.load_state_dict(zoo.create(arch).state_dict(), strict=True)
    return tv


def _pair(arch: str, k: int, pad_mode: str) -> tuple[nn.Module, nn.Module]:
    tv = _torchvision(arch)
    ref = zoo.create(f"{arch}_aa{k}", pad_mode=pad_mode).eval()
    ref.load_state_dict(tv.state_dict(), strict=True)
    return antialias(tv, k, pad_mode), ref  # a copy: ``tv`` is not rewritten


def _check(arch: str, k: int, pad_mode: str) -> None:
    ours, ref = _pair(arch, k, pad_mode)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert set(ours.state_dict()) == set(ref.state_dict())
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item()), (a - b).abs().max()


@pytest.mark.parametrize(("arch", "k"), [("resnet18", 3), ("mobilenet_v2", 4), ("alexnet", 5), ("vgg11_bn", 2),
                                         ("densenet121", 4)])  # fmt: skip
def test_matches_hand_built(arch: str, k: int) -> None:
    _check(arch, k, "reflect")


@pytest.mark.parametrize("pad_mode", ["reflect", "zeros", "replicate", "circular"])
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_pad_modes(arch: str, pad_mode: str) -> None:
    _check(arch, 4, pad_mode)


def test_keys_unchanged_and_copy() -> None:
    tv = torchvision.models.resnet18()
    out = antialias(tv)
    assert out is not tv and tv.layer2[0].conv1.stride == (2, 2)
    out.load_state_dict(tv.state_dict(), strict=True)


def test_unplaceable_raises() -> None:
    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3)
            self.down = nn.Conv2d(8, 8, 3, stride=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.down(self.stem(x))

    with pytest.raises(ValueError, match="down"):
        antialias(Toy())


def _archs() -> list[str]:
    return [a for a in zoo.list_models(antialiased=False) if zoo.registry.get_entry(a).family != "torchvision_cnn"]


@pytest.mark.slow
@pytest.mark.parametrize("k", FILTER_SIZES)
@pytest.mark.parametrize("arch", _archs())
def test_every_hand_built_arch(arch: str, k: int) -> None:
    _check(arch, k, "reflect")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_filter_sizes(arch: str, k: int) -> None:
    _check(arch, k, "zeros")


def test_unsupported_timm_raises() -> None:
    timm = pytest.importorskip("timm")
    with pytest.raises(ValueError, match=r"patch_embed\.proj"):
        antialias(timm.create_model("vit_tiny_patch16_224", pretrained=False))


def test_aa_layer_factory_is_used() -> None:
    calls: list[tuple[int, tuple[int, int]]] = []

    def factory(channels: int, stride: tuple[int, int]) -> nn.Module:
        calls.append((channels, stride))
        return nn.AvgPool2d(stride)

    out = antialias(torchvision.models.resnet18(), aa_layer=factory).eval()
    assert (128, (2, 2)) in calls and len(calls) == 7  # stem pool, 3 block convs, 3 projections
    assert out(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
