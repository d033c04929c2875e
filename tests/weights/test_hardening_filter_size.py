"""Weights never load silently into another blur filter size (or into the baseline): K is read from an
official checkpoint's ``.filt`` buffers or from a zoo folder's config.json, and a mismatch is refused
naming both sizes and the right model, in ``zoo.create``, timm's ``pretrained_cfg_overlay`` and
``zoo convert``. Official-format files come from the oracle package at random init."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from support.weights_testlib import logits

import zoo
from zoo.cli import main
from zoo.weights import IncompatibleWeightsError, save_model_dir


def _official(arch: str, k: int, folder: Path, seed: int = 0) -> tuple[torch.nn.Module, Path]:
    import antialiased_cnns

    torch.manual_seed(seed)
    oracle = getattr(antialiased_cnns, arch)(filter_size=k).eval()
    path = folder / f"{arch}_lpf{k}.pth"
    torch.save({"state_dict": oracle.state_dict()}, path)
    return oracle, path


@pytest.fixture(scope="module")
def official4(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    return _official("resnet18", 4, tmp_path_factory.mktemp("official"))


@pytest.mark.parametrize(
    ("name", "have"),
    [
        ("resnet18_aa3", "resnet18_aa3 has filter size 3"),
        ("resnet18_aa1", "resnet18_aa1 has filter size 1"),
        ("resnet18", r"resnet18 is the torchvision baseline \(no blur\)"),
    ],
)
def test_official_filter4_is_refused_by_other_sizes(official4, name: str, have: str) -> None:
    _, path = official4
    expected = rf"are for filter size 4 \(read from their \.filt buffers\), but {have}: use resnet18_aa4$"
    with pytest.raises(IncompatibleWeightsError, match=expected):
        zoo.create(name, pretrained=path)


def test_official_filter4_loads_into_aa4_and_a_matching_filter_size_kwarg(official4) -> None:
    oracle, path = official4
    assert torch.allclose(logits(zoo.create("resnet18_aa4", pretrained=path)), logits(oracle), atol=1e-5)
    model = zoo.create("resnet18_aa3", pretrained=path, filter_size=4)  # the kwarg overrides K: it fits
    assert model.filter_size == 4 and torch.allclose(logits(model), logits(oracle), atol=1e-5)
    with pytest.raises(IncompatibleWeightsError, match=r"resnet18_aa4 was built with filter_size=5: use resnet18_aa4"):
        zoo.create("resnet18_aa4", pretrained=path, filter_size=5)


@pytest.mark.parametrize(
    ("arch", "k", "name"), [("mobilenet_v2", 1, "mobilenet_v2_aa4"), ("densenet121", 5, "densenet121_aa2")]
)
def test_other_families_and_sizes(tmp_path: Path, arch: str, k: int, name: str) -> None:
    oracle, path = _official(arch, k, tmp_path)
    with pytest.raises(IncompatibleWeightsError, match=rf"filter size {k} .*: use {arch}_aa{k}$"):
        zoo.create(name, pretrained=path)
    assert torch.allclose(logits(zoo.create(f"{arch}_aa{k}", pretrained=path)), logits(oracle), atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18_aa3", "resnet18_aa2", "resnet18_aa5"])
def test_timm_pretrained_cfg_overlay_refuses_the_wrong_size(official4, name: str) -> None:
    _, path = official4
    with pytest.raises(
        IncompatibleWeightsError, match=rf"filter size 4 .*but {name} has filter size .: use resnet18_aa4"
    ):
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_timm_pretrained_cfg_overlay_loads_the_right_size(official4) -> None:
    oracle, path = official4
    model = timm.create_model("resnet18_aa4", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert torch.allclose(logits(model), logits(oracle), atol=1e-5)


def test_zoo_folder_config_records_the_size(tmp_path: Path) -> None:
    aa4 = save_model_dir(zoo.create("resnet18_aa4"), tmp_path / "aa4", name="resnet18_aa4")
    base = save_model_dir(zoo.create("resnet18"), tmp_path / "base", name="resnet18")
    recorded = r"for filter size 4 \(architecture 'resnet18_aa4' in their config\.json\)"
    with pytest.raises(IncompatibleWeightsError, match=rf"{recorded}, but resnet18_aa3 has filter size 3"):
        zoo.create("resnet18_aa3", pretrained=aa4)
    with pytest.raises(IncompatibleWeightsError, match="but resnet18 is the torchvision baseline"):
        zoo.create("resnet18", pretrained=aa4)
    with pytest.raises(
        IncompatibleWeightsError,
        match=r"of the baseline, without blur .*: use resnet18 \(or, to start resnet18_aa3 from them on purpose: "
        r"zoo convert torchvision FILE --model resnet18_aa3\)$",
    ):
        zoo.create("resnet18_aa3", pretrained=base)
    with pytest.raises(IncompatibleWeightsError, match="resnet18_aa2 has filter size 2: use resnet18_aa4"):
        timm.create_model("resnet18_aa2", pretrained=True, pretrained_cfg_overlay=dict(file=str(aa4)))
    assert zoo.create("resnet18_aa4", pretrained=aa4).filter_size == 4
    assert zoo.create("resnet18", pretrained=base).filter_size is None


def test_convert_without_the_oracle_check_still_refuses(official4, tmp_path: Path, capsys) -> None:
    _, path = official4
    out = tmp_path / "out"
    assert main(["convert", "official", str(path), "--model", "resnet18_aa3", "--out", str(out), "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "filter size 4" in err and "resnet18_aa3 has filter size 3: use resnet18_aa4" in err
    assert not out.exists()


def test_a_filter_size_override_is_recorded_and_reloads_by_its_k(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.create("resnet18_aa4", filter_size=6).eval()
    folder = save_model_dir(model, tmp_path / "k6", name="resnet18_aa4")
    x = torch.randn(1, 3, 64, 64)
    again = zoo.create("resnet18_aa6", pretrained=folder).eval()
    assert again.filter_size == 6 and torch.equal(again(x), model(x))
    assert zoo.create("resnet18_aa4", pretrained=folder).filter_size == 6  # stored build arguments are used
    with pytest.raises(IncompatibleWeightsError, match=r"filter size 6 \(model_args\.filter_size.*use resnet18_aa6"):
        zoo.create("resnet18", pretrained=folder)
    plain = save_model_dir(zoo.create("resnet18_aa4"), tmp_path / "k4", name="resnet18_aa4")
    assert "filter_size" not in json.loads((plain / "config.json").read_text())["model_args"]
