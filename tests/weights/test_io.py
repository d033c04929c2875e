"""save_model_dir / load_state_dict_file: round trips, atomic writes, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from support.weights_testlib import logits

import zoo
from zoo.weights import CorruptWeightsError, load_state_dict_file, save_model_dir
from zoo.weights import io as wio


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return zoo.create("mobilenet_v2_aa3", num_classes=5)


def test_save_model_dir_round_trip_and_timm_config(small, tmp_path):
    from timm.models._hub import load_model_config_from_path

    out = save_model_dir(small, tmp_path / "m", name="mobilenet_v2_aa3", extra_files={"notes.txt": "hi"})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "notes.txt"]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "mobilenet_v2_aa3"
    assert config["num_classes"] == 5 and config["num_features"] == small.num_features
    assert config["model_args"] == {"num_classes": 5, "in_chans": 3}
    cfg, name, model_args = load_model_config_from_path(out)  # timm's own parser of local-dir: folders
    assert name == "mobilenet_v2_aa3" and cfg["num_classes"] == 5 and model_args["num_classes"] == 5
    assert tuple(cfg["input_size"]) == (3, 224, 224) and cfg["classifier"] == small.classifier_name
    again = zoo.create("mobilenet_v2_aa3", pretrained=str(out))
    assert again.num_classes == 5
    assert torch.equal(logits(again), logits(small))
    assert not list(out.glob(".*.tmp")), "no temp file left"


def test_killed_write_keeps_the_previous_file(small, tmp_path, monkeypatch):
    out = save_model_dir(small, tmp_path / "m", name="mobilenet_v2_aa3")
    before = (out / "model.safetensors").read_bytes()

    def crash(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(wio, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_model_dir(small, out, name="mobilenet_v2_aa3")
    assert (out / "model.safetensors").read_bytes() == before
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


def test_truncated_safetensors_names_the_file(small, tmp_path):
    path = wio.save_state_dict(small.state_dict(), tmp_path / "w.safetensors")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CorruptWeightsError, match=r"w\.safetensors"):
        load_state_dict_file(path)


def test_torch_checkpoints(small, tmp_path):
    wrapped = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in small.state_dict().items()}, "epoch": 3}, wrapped)
    state = load_state_dict_file(wrapped)
    assert set(state) == set(small.state_dict())
    wrapped.write_bytes(wrapped.read_bytes()[:3000])
    with pytest.raises(CorruptWeightsError, match=r"ckpt\.pth"):
        load_state_dict_file(wrapped)
    pickled = tmp_path / "obj.pt"
    torch.save({"not": "tensors"}, pickled)
    with pytest.raises(CorruptWeightsError, match="not a state dict"):
        load_state_dict_file(pickled)
    odd = tmp_path / "w.npz"
    odd.write_bytes(b"x")
    with pytest.raises(CorruptWeightsError, match=r"expected \.safetensors"):
        load_state_dict_file(odd)
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        load_state_dict_file(tmp_path / "missing.safetensors")
