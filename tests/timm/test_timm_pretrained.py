"""Pretrained loading through timm goes through the zoo's resolution code: manifest tags (hub source),
``local-dir:`` and ``hf-hub:`` folders written by ``zoo push --dry-run``, file overlays, adaptation of
``num_classes`` / ``in_chans``, ``features_only`` and ``global_pool=''``."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import timm
import timm.models._builder as timm_builder
import torch
from PIL import Image
from timm_testlib import TAG, TEST_ORG, rand_input

import zoo
import zoo.weights.load as zoo_load
from zoo.weights import WeightsUnavailableError

pytestmark = [pytest.mark.timeout(300), pytest.mark.filterwarnings("ignore:these pretrained weights")]


@pytest.fixture(autouse=True)
def _no_timm_loader(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """timm's own weight loaders must never run; count the zoo loader's calls instead."""

    def forbidden(*args, **kwargs):
        raise AssertionError("timm's loader was called for a zoo model")

    monkeypatch.setattr(timm_builder, "load_pretrained", forbidden)
    monkeypatch.setattr(timm_builder, "load_state_dict_from_hf", forbidden)
    calls: list[str] = []
    real = zoo_load.load_pretrained

    def spy(model, name, pretrained):
        calls.append(str(pretrained))
        return real(model, name, pretrained)

    monkeypatch.setattr(zoo_load, "load_pretrained", spy)
    return calls


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(rand_input(64))


def test_pretrained_tag_loads_from_manifest_hub_source(hub, source_model, _no_timm_loader) -> None:
    model = timm.create_model("resnet18_aa4", pretrained=True)
    assert torch.equal(_logits(model), _logits(source_model))
    assert _no_timm_loader == ["resnet18_aa4.in1k_ft"]
    assert any(path.startswith(f"/{TEST_ORG}/{TAG}/resolve/") for _, path, _ in hub.requests)
    cfg = model.pretrained_cfg
    assert cfg["tag"] == "in1k_ft" and cfg["license"] == "cc-by-nc-sa-4.0" and cfg["hf_hub_id"] == f"{TEST_ORG}/{TAG}"
    assert cfg["pool_size"] == (7, 7) and cfg["first_conv"] == "conv1" and cfg["classifier"] == "fc"
    # the same weights as zoo.create, by the same code
    assert torch.equal(_logits(zoo.create("resnet18_aa4", pretrained=True)), _logits(model))
    # the tag spelled in the name
    assert torch.equal(_logits(timm.create_model(f"{TAG}", pretrained=True)), _logits(model))


def test_pretrained_adapts_num_classes_and_in_chans(hub, source_model) -> None:
    with pytest.warns(UserWarning, match="re-initialised"):
        model = timm.create_model("resnet18_aa4", pretrained=True, num_classes=10, in_chans=1)
    assert model.fc.out_features == 10 and model.conv1.in_channels == 1
    torch.testing.assert_close(model.conv1.weight, source_model.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(model.layer4[1].conv2.weight, source_model.layer4[1].conv2.weight)
    assert model.pretrained_cfg["input_size"] == (1, 224, 224) and model.pretrained_cfg["num_classes"] == 10
    assert model.eval()(rand_input(64, chans=1)).shape == (2, 10)


def test_pretrained_features_only_and_no_pooling(hub, source_model) -> None:
    feats = timm.create_model("resnet18_aa4", pretrained=True, features_only=True, out_indices=(2, 3, 4)).eval()
    x = rand_input(64)
    with torch.no_grad():
        want = source_model.forward_intermediates(x, indices=[2, 3, 4], intermediates_only=True)
        for got, ref in zip(feats(x), want):
            assert torch.equal(got, ref)
        assert feats.feature_info.channels() == [128, 256, 512]
        assert "classifier" not in feats.pretrained_cfg and feats.pretrained_cfg["tag"] == "in1k_ft"
        unpooled = timm.create_model("resnet18_aa4", pretrained=True, num_classes=0, global_pool="").eval()
        assert torch.equal(unpooled(x), source_model.forward_features(x))


def test_local_dir_of_push_dry_run(pushed_folder: Path, source_model, _no_timm_loader) -> None:
    model = timm.create_model(f"local-dir:{pushed_folder}", pretrained=True)
    assert torch.equal(_logits(model), _logits(source_model))
    assert _no_timm_loader == [str(pushed_folder)]
    assert model.pretrained_cfg["architecture"] == "resnet18_aa4"
    # without pretrained=True: the architecture and model_args of the folder, random weights
    fresh = timm.create_model(f"local-dir:{pushed_folder}")
    assert type(fresh) is type(model) and not torch.equal(_logits(fresh), _logits(model))


def test_hf_hub_repo(hub, source_model, _no_timm_loader) -> None:
    model = timm.create_model(f"hf-hub:{TEST_ORG}/{TAG}", pretrained=True)
    assert torch.equal(_logits(model), _logits(source_model))
    assert _no_timm_loader == [f"hf-hub:{TEST_ORG}/{TAG}"]
    with pytest.warns(UserWarning, match="re-initialised"):
        pinned = timm.create_model(f"hf-hub:{TEST_ORG}/{TAG}@main", pretrained=True, num_classes=5)
    assert pinned.fc.out_features == 5


def test_file_overlay(tmp_path: Path, source_model) -> None:
    from zoo.weights.io import save_state_dict

    path = save_state_dict(source_model.state_dict(), tmp_path / "w.safetensors")
    model = timm.create_model("resnet18_aa4", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert torch.equal(_logits(model), _logits(source_model))


def test_missing_weights_raise_the_zoo_error(hub) -> None:
    with pytest.raises(WeightsUnavailableError, match="no pretrained weights for mobilenet_v3_small_aa4"):
        timm.create_model("mobilenet_v3_small_aa4", pretrained=True)
    with pytest.raises(RuntimeError, match="Invalid pretrained tag"):
        timm.create_model("resnet18_aa4.nonexistent", pretrained=True)
    with pytest.raises(ValueError, match="url override"):
        timm.create_model("resnet18_aa4", pretrained=True, pretrained_cfg_overlay=dict(url="http://x/y.pth"))


def test_data_config_gives_the_weights_eval_transform() -> None:
    model = timm.create_model("resnet50_aa4")
    data = timm.data.resolve_data_config(model=model)
    pre = zoo.weights.manifest.load_manifest().get("resnet50_aa4.in1k_ft").preprocess
    assert data["input_size"] == tuple(pre["input_size"]) and data["crop_pct"] == pre["crop_pct"]
    assert data["interpolation"] == pre["interpolation"] == "bilinear"
    assert data["mean"] == tuple(pre["mean"]) and data["std"] == tuple(pre["std"])
    img = Image.fromarray(torch.randint(0, 256, (300, 400, 3), dtype=torch.uint8).numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        timm_x = timm.data.create_transform(**data)(img)
    zoo_x = zoo.transforms(zoo.create("resnet50_aa4"))(img)
    assert timm_x.shape == (3, 224, 224)
    torch.testing.assert_close(timm_x, zoo_x)
