"""load_pretrained / zoo.builder.create_pretrained from local files: adaptation, metadata, errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from support.weights_testlib import logits

import zoo
from zoo.weights import IncompatibleWeightsError, WeightsUnavailableError, save_model_dir
from zoo.weights.io import save_state_dict
from zoo.weights.load import load_pretrained


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(1)
    return zoo.create("mobilenet_v2_aa4").eval()


@pytest.fixture(scope="module")
def weights_file(source, tmp_path_factory):
    return save_state_dict(source.state_dict(), tmp_path_factory.mktemp("w") / "w.safetensors")


def test_file_path_loads_exactly(source, weights_file):
    model = zoo.create("mobilenet_v2_aa4", pretrained=weights_file)  # a Path
    assert torch.equal(logits(model), logits(source))
    assert model.pretrained_cfg["file"] == str(weights_file)
    assert model.pretrained_cfg["mean"] == (0.485, 0.456, 0.406)


def test_num_classes_change_reinitialises_classifier_with_warning(source, weights_file):
    with pytest.warns(UserWarning, match="classifier classifier.1 is re-initialised"):
        model = zoo.create("mobilenet_v2_aa4", pretrained=str(weights_file), num_classes=10)
    assert model.num_classes == 10 and model.pretrained_cfg["num_classes"] == 10
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval().forward_features(x), source.forward_features(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        headless = zoo.create("mobilenet_v2_aa4", pretrained=str(weights_file), num_classes=0)  # no warning
    assert headless.num_classes == 0


def test_in_chans_adapts_first_conv(source, weights_file):
    model = zoo.create("mobilenet_v2_aa4", pretrained=str(weights_file), in_chans=1)
    first = source.state_dict()["features.0.0.weight"]
    assert torch.allclose(model.state_dict()["features.0.0.weight"], first.sum(dim=1, keepdim=True))
    assert model.pretrained_cfg["input_size"] == (1, 224, 224)
    gray = torch.rand(1, 1, 64, 64)
    with torch.no_grad():  # one gray channel == the same image repeated on 3 channels
        assert torch.allclose(model.eval()(gray), source(gray.repeat(1, 3, 1, 1)), atol=1e-4)


def test_official_checkpoint_path_is_renamed(tmp_path):
    import antialiased_cnns

    torch.manual_seed(2)
    oracle = antialiased_cnns.mobilenet_v2(filter_size=3).eval()
    path = tmp_path / "mobilenet_v2_lpf3.pth"
    torch.save({"state_dict": oracle.state_dict()}, path)
    model = zoo.create("mobilenet_v2_aa3", pretrained=str(path))
    assert torch.allclose(logits(model), logits(oracle), atol=1e-5)


def test_load_into_built_model(source, weights_file):
    model = zoo.create("mobilenet_v2_aa4")
    load_pretrained(model, "mobilenet_v2_aa4", str(weights_file))
    assert torch.equal(logits(model), logits(source))


def test_incompatible_weights_name_the_keys(weights_file):
    with pytest.raises(IncompatibleWeightsError, match=r"do not fit resnet18_aa4: missing keys: conv1\.weight"):
        zoo.create("resnet18_aa4", pretrained=str(weights_file))


def test_saved_folder_keeps_its_build_args(tmp_path):
    src = zoo.create("mobilenet_v2_aa2", num_classes=3, pad_mode="zero")
    save_model_dir(src, tmp_path / "ft", name="mobilenet_v2_aa2")
    again = zoo.create("mobilenet_v2_aa2", pretrained=tmp_path / "ft")
    assert again.num_classes == 3 and again.pad_mode == src.pad_mode
    assert torch.equal(logits(again), logits(src))


@pytest.mark.parametrize(
    ("pretrained", "error", "match"),
    [
        ("in22k", WeightsUnavailableError, r"not a weight tag of mobilenet_v2_aa4 \(tags: mobilenet_v2_aa4.in1k_ft"),
        ("resnet50_aa4.in1k_ft", WeightsUnavailableError, "are for resnet50_aa4, not mobilenet_v2_aa4"),
        ("missing/dir", WeightsUnavailableError, "path not found"),
        ("nope.safetensors", WeightsUnavailableError, "path not found"),
        (3, ValueError, "pretrained must be True, a tag"),
    ],
)
def test_bad_pretrained_values(pretrained, error, match):
    with pytest.raises(error, match=match):
        zoo.create("mobilenet_v2_aa4", pretrained=pretrained)


def test_no_weights_for_model():
    with pytest.raises(WeightsUnavailableError, match="no pretrained weights for mobilenet_v2_aa7"):
        zoo.create("mobilenet_v2_aa7", pretrained=True)
