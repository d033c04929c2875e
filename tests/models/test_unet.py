"""U-Nets on zoo encoders: names, output sizes, decoder upsampling per encoder kind, encoder weights, exports."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.layers.upsample import BlurUpsample2d
from zoo.models.unet import UNet
from zoo.registry import ARCHS, get_entry


@pytest.mark.parametrize("hw", [(64, 64), (37, 50), (33, 31)])
def test_output_has_the_input_size(hw: tuple[int, int]) -> None:
    model = zoo.create("unet_resnet18", num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *hw))
    assert out.shape == (2, 5, *hw)


def test_decoder_upsampling_follows_the_encoder() -> None:
    base = zoo.create("unet_resnet18", num_classes=2)
    aa = zoo.create("unet_resnet18_aa4", num_classes=2)
    assert isinstance(base, UNet) and base.filter_size is None
    assert not any(isinstance(m, BlurUpsample2d) for m in base.modules())
    assert all(isinstance(m, torch.nn.Upsample) for m in base.ups)
    ups = [m for m in aa.modules() if isinstance(m, BlurUpsample2d)]
    assert len(ups) == 5 and all(m.filter_size == 4 and m.scale == 2 for m in ups)


def test_encoder_weights_load_from_the_classifier() -> None:
    clf = zoo.create("resnet18_aa4", num_classes=0)
    unet = zoo.create("unet_resnet18_aa4", num_classes=3)
    unused = unet.load_encoder_state_dict(clf.state_dict())
    assert unused == []
    torch.testing.assert_close(unet.encoder[4].layer4[1].conv2.weight, clf.layer4[1].conv2.weight, rtol=0, atol=0)


def test_bad_names_and_inputs() -> None:
    with pytest.raises(KeyError, match="unknown model 'resnet19'"):
        zoo.create("unet_resnet19")
    with pytest.raises(ValueError, match="classification model"):
        zoo.create("unet_unet_resnet18")
    with pytest.raises(ValueError, match="num_classes must be"):
        zoo.create("unet_resnet18", num_classes=0)
    model = zoo.create("unet_resnet18", num_classes=2)
    with pytest.raises(ValueError, match=r"expects \(N, 3, H, W\)"):
        model(torch.randn(1, 1, 32, 32))


def test_torchscript_equals_eager() -> None:
    model = zoo.create("unet_resnet18_aa4", num_classes=3).eval()
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(model)(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["unet_squeezenet1_1", "unet_alexnet_aa4"])
def test_encoders_with_unpadded_layers_give_the_input_size(name: str) -> None:
    """SqueezeNet's and AlexNet's maps are not an exact fraction of the input: the decoder resizes to the skip."""
    model = zoo.create(name, num_classes=4).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 101)).shape == (1, 4, 96, 101)


def _one_per_family() -> list[str]:
    """``unet_{arch}_aa4`` for the first architecture of every registered family (torchvision CNN sub-families too)."""
    first: dict[str, str] = {}
    for arch in ARCHS:
        entry = get_entry(arch)
        first.setdefault(entry.variant.get("family", entry.family), arch)
    return [f"unet_{arch}_aa4" for arch in first.values()]


@pytest.mark.slow
@pytest.mark.parametrize("name", _one_per_family())
def test_every_family_builds_and_runs(name: str) -> None:
    model = zoo.create(name, num_classes=4).eval()
    size = max(64, model.min_input_size)
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size + 19)).shape == (1, 4, size, size + 19)


@pytest.mark.slow
def test_dynamo_onnx_equals_eager(tmp_path) -> None:
    from zoo.export import onnx_max_abs_diff, to_onnx

    model = zoo.create("unet_resnet18_aa4", num_classes=3).eval()
    path = to_onnx(model, tmp_path / "unet.onnx", (3, 64, 64))
    assert onnx_max_abs_diff(model, path, torch.randn(2, 3, 64, 64)) < 1e-4


@pytest.mark.parametrize("name", ["unet_resnet18_aa4", "unet_resnet18_aps"])
def test_a_saved_unet_loads_by_name(name: str, tmp_path) -> None:
    """``zoo.create("unet_...", pretrained=DIR)``: the weights come back; another class count re-initialises the
    head (a warning); weights of another filter size are refused, naming the U-Net that fits them."""
    from zoo.weights import save_model_dir
    from zoo.weights.errors import IncompatibleWeightsError

    torch.manual_seed(0)
    model = zoo.create(name, num_classes=5)
    save_model_dir(model, tmp_path, name=name)
    loaded = zoo.create(name, pretrained=tmp_path)
    assert loaded.num_classes == 5 and loaded.first_conv == "encoder.0.conv1"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.warns(UserWarning, match="the classifier head is re-initialised"):
        assert zoo.create(name, pretrained=tmp_path, num_classes=3).head.out_channels == 3
    other = "unet_resnet18_aa3_aps" if name.endswith("_aps") else "unet_resnet18"
    with pytest.raises(IncompatibleWeightsError, match=f"use {name}"):
        zoo.create(other, pretrained=tmp_path)
