"""One clear error instead of a traceback: a broken ``config.json`` (folder, file sibling, hub repo) and
``zoo convert`` given the wrong model or an existing file as ``--out``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support.weights_testlib import broken_copy

import zoo
from zoo.cli import main
from zoo.weights import CorruptWeightsError, save_model_dir
from zoo.weights.io import WEIGHTS_NAME

NAME = "mobilenet_v3_small_aa4"
BAD_CONFIGS = [
    pytest.param("[1, 2]", r"is not a model config: expected a JSON object .*, got a JSON list$", id="list"),
    pytest.param('"resnet18_aa4"', r"is not a model config: .*, got a JSON string$", id="string"),
    pytest.param("{bad json", r"cannot parse .*config\.json.*Expecting property name", id="invalid"),
    pytest.param(
        '{"architecture": "x", "model_args": [1]}',
        r"model_args must be a JSON object, got a JSON list",
        id="model_args-list",
    ),
    pytest.param('{"pretrained_cfg": "x"}', r"pretrained_cfg must be a JSON object, got a JSON string", id="cfg-str"),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_model_dir(zoo.create(NAME), tmp_path_factory.mktemp("good") / "folder", name=NAME)


@pytest.mark.parametrize(("text", "match"), BAD_CONFIGS)
def test_bad_config_in_a_folder_names_the_file(folder: Path, tmp_path: Path, text: str, match: str) -> None:
    bad = broken_copy(folder, tmp_path / "bad", text, keep=(WEIGHTS_NAME,))
    for pretrained in (bad, bad / WEIGHTS_NAME):  # the folder, and a file beside its config.json
        with pytest.raises(CorruptWeightsError, match=match) as info:
            zoo.create(NAME, pretrained=pretrained)
        assert str(bad / "config.json") in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("text", "match"), BAD_CONFIGS)
def test_bad_config_in_a_hub_repo_names_the_repo(hub, folder: Path, tmp_path: Path, text: str, match: str) -> None:
    hub.add_repo("someone/broken", broken_copy(folder, tmp_path / "bad", text, keep=(WEIGHTS_NAME,)))
    with pytest.raises(CorruptWeightsError, match=match) as info:
        zoo.create(NAME, pretrained="hf-hub:someone/broken")
    assert "config.json of hf-hub:someone/broken@main" in str(info.value) and "\n" not in str(info.value)


def test_good_config_still_loads(folder: Path) -> None:
    assert zoo.create(NAME, pretrained=folder).num_classes == 1000


@pytest.fixture(scope="module")
def official_resnet18(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import antialiased_cnns

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("official") / "resnet18_lpf4.pth"
    torch.save(antialiased_cnns.resnet18(filter_size=4).state_dict(), path)
    return path


def test_convert_to_the_wrong_model_is_one_line(official_resnet18: Path, tmp_path: Path, capsys) -> None:
    args = ["convert", "official", str(official_resnet18), "--model", "resnet34_aa4", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("zoo convert: error: the official checkpoint resnet18_lpf4.pth does not fit resnet34_aa4: ")
    assert "missing keys: layer1.2.conv1.weight" in err and "more)" in err
    args = [
        "convert",
        "torchvision",
        str(official_resnet18),
        "--model",
        "mobilenet_v3_small",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not fit mobilenet_v3_small: missing keys: features.0.0.weight" in err


@pytest.mark.parametrize("source", ["official", "torchvision"])
def test_convert_out_existing_file_is_one_line(official_resnet18: Path, tmp_path: Path, capsys, source: str) -> None:
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    for out, where in ((existing, "is"), (existing / "sub", f"is inside {existing}, which is")):
        assert main(["convert", source, str(official_resnet18), "--model", "resnet18_aa4", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == f"zoo convert: error: output folder {out} {where} an existing file; give a folder path " \
                      "(created if missing)\n"  # fmt: skip
    assert existing.read_text() == "keep me"
