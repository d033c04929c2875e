"""timm's ``local-dir:`` / ``hf-hub:`` names and the ``pretrained_cfg_overlay`` file path: a broken
``config.json`` is one error naming the file (timm itself fails with ``AttributeError``/``TypeError``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
from support.weights_testlib import broken_copy
from timm_testlib import TEST_ORG

from zoo.weights import CorruptWeightsError

BAD_CONFIGS = [
    pytest.param("[1, 2]", r"is not a model config: expected a JSON object .*, got a JSON list$", id="list"),
    pytest.param("{bad json", r"cannot parse .*config\.json: Expecting property name", id="invalid"),
    pytest.param('{"num_classes": 3}', r"config\.json names no architecture", id="no-architecture"),
]


def _broken_copy(folder: Path, dest: Path, config_text: str) -> Path:
    return broken_copy(folder, dest, config_text, keep=("model.safetensors", "README.md"))


@pytest.mark.parametrize(("text", "match"), BAD_CONFIGS)
def test_local_dir(pushed_folder: Path, tmp_path: Path, text: str, match: str) -> None:
    bad = _broken_copy(pushed_folder, tmp_path / "bad", text)
    with pytest.raises(CorruptWeightsError, match=match) as info:
        timm.create_model(f"local-dir:{bad}", pretrained=True)
    assert str(bad / "config.json") in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("text", "match"), BAD_CONFIGS[:2])
def test_file_overlay(pushed_folder: Path, tmp_path: Path, text: str, match: str) -> None:
    bad = _broken_copy(pushed_folder, tmp_path / "bad", text)
    with pytest.raises(CorruptWeightsError, match=match) as info:
        timm.create_model("resnet18_aa4", pretrained=True, pretrained_cfg_overlay=dict(file=str(bad)))
    assert str(bad / "config.json") in str(info.value)


@pytest.mark.parametrize(("text", "match"), BAD_CONFIGS)
def test_hf_hub(hub, pushed_folder: Path, tmp_path: Path, text: str, match: str) -> None:
    hub.add_repo(f"{TEST_ORG}/broken", _broken_copy(pushed_folder, tmp_path / "bad", text))
    with pytest.raises(CorruptWeightsError, match=match) as info:
        timm.create_model(f"hf-hub:{TEST_ORG}/broken", pretrained=True)
    assert "broken" in str(info.value) and "config.json" in str(info.value) and "\n" not in str(info.value)


def test_reader_is_wrapped_once() -> None:
    import importlib

    from timm.models import _hub

    import zoo.timm_bridge

    reader = _hub.load_cfg_from_json
    importlib.reload(zoo.timm_bridge)
    assert _hub.load_cfg_from_json is reader
