"""Exact parity with the official release (the `antialiased-cnns` package as oracle).

An official-format state dict (the oracle's random init) goes through the key-rename table
(`zoo/weights/keymaps/official.json`) into the zoo model; both must give the same logits.
"""

from __future__ import annotations

import antialiased_cnns
import pytest
import torch

import zoo
from zoo.layers import blur_mode
from zoo.weights.keymaps import rename_keys

OFFICIAL_ARCHS = [
    "alexnet",
    *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")),
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2",
    "densenet121", "densenet161", "densenet169", "densenet201",
    "mobilenet_v2",
]  # fmt: skip
CASES = [(arch, 4) for arch in OFFICIAL_ARCHS] + [(a, k) for a in ("resnet18", "resnet50") for k in (2, 3, 5)]


def _oracle(arch: str, filter_size: int | None) -> torch.nn.Module:
    kwargs = {} if filter_size is None else {"filter_size": filter_size}
    return getattr(antialiased_cnns, arch)(pretrained=False, **kwargs).eval()


FAST_CASES = [("resnet18", k) for k in (2, 3, 4, 5)] + [
    (a, 4) for a in ("resnet50", "vgg11_bn", "alexnet", "densenet121", "mobilenet_v2")
]


def _max_diff(arch: str, filter_size: int) -> tuple[float, float]:
    torch.manual_seed(0)
    oracle = _oracle(arch, filter_size)
    model = zoo.create(f"{arch}_aa{filter_size}").eval()
    model.load_state_dict(rename_keys(oracle.state_dict(), arch), strict=True)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        expected = oracle(x)
        return (model(x) - expected).abs().max().item(), expected.abs().max().item()


@pytest.mark.parametrize(("arch", "filter_size"), CASES)
def test_official_state_dict_gives_identical_logits(arch: str, filter_size: int) -> None:
    """The reference blur (pad + depthwise conv, as the release computes it): same logits to 1e-5."""
    with blur_mode("reference"):
        diff, _ = _max_diff(arch, filter_size)
    assert diff <= 1e-5, f"{arch} filter {filter_size}: max abs diff {diff}"


@pytest.mark.parametrize(("arch", "filter_size"), FAST_CASES)
def test_default_fast_blur_matches_official_to_float_rounding(arch: str, filter_size: int) -> None:
    """The default fast kernels sum in another order: 1e-5 relative to the logits' scale
    (random-init logits reach ~60 here, where float32 spacing alone is ~4e-6)."""
    with blur_mode("fast"):
        diff, scale = _max_diff(arch, filter_size)
    assert diff <= 1e-5 * max(1.0, scale), f"{arch} filter {filter_size}: max abs diff {diff} at scale {scale}"


@blur_mode("reference")
def test_oracle_default_filter_size_is_our_aa4() -> None:
    """The oracle's default constructor (filter_size=4) is what `_aa4` reproduces."""
    torch.manual_seed(1)
    oracle = _oracle("resnet34", None)
    model = zoo.create("resnet34_aa4").eval()
    model.load_state_dict(rename_keys(oracle.state_dict(), "resnet34"), strict=True)
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        assert torch.allclose(model(x), oracle(x), atol=1e-5, rtol=0)


def test_parity_is_not_vacuous() -> None:
    """A wrong filter size must show up as a difference: the check can fail."""
    torch.manual_seed(0)
    oracle = _oracle("resnet18", 4)
    model = zoo.create("resnet18_aa3").eval()
    model.load_state_dict(rename_keys(oracle.state_dict(), "resnet18"), strict=True)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert (model(x) - oracle(x)).abs().max().item() > 1e-3


def test_rename_table_covers_every_official_key() -> None:
    """After renaming, the keys are exactly the zoo's (hence torchvision's) for every official arch."""
    for arch in OFFICIAL_ARCHS:
        with torch.device("meta"):
            official = getattr(antialiased_cnns, arch)(pretrained=False).state_dict()
            ours = zoo.create(f"{arch}_aa4").state_dict()
        renamed = rename_keys(official, arch)
        assert set(renamed) == set(ours), arch
        assert all(renamed[k].shape == ours[k].shape for k in ours), arch


def test_unknown_keymap_arch() -> None:
    with pytest.raises(ValueError, match="no official key map for 'mobilenet_v3_small'"):
        rename_keys({}, "mobilenet_v3_small")
