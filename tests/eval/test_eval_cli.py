"""`zoo eval` end to end on the embedded photos, config handling and pretrained-weight modes."""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path

import pytest
import torch

import zoo
from zoo.cli import main
from zoo.eval.runner import load_config, load_models
from zoo.weights import WeightsUnavailableError

SMALL = [  # every metric, tiny: 2 images at 64 px, 2x2 feature shifts, one sensitivity embedding
    "--limit", "2", "--no-progress", "--pretrained", "none",
    "--set", "resize=64", "--set", "crop=64", "--set", "consistency.max_shift=16",
    "--set", "diagonal.max_shift=4", "--set", "features.size=32", "--set", "features.shifts=2",
    "--set", "sensitivity.frames=2", "--set", "sensitivity.canvas=48", "--set", "sensitivity.embed_sizes=[32]",
    "--set", "sensitivity.inpaint_iterations=5", "--set", "deformation.size=48",
    "--set", "deformation.strengths=[0.0,2.0]", "--set", "deformation.bootstrap=20",
]  # fmt: skip


def test_zoo_eval_on_embedded_default_writes_all_outputs(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["eval", "--models", "resnet18,resnet18_aa4", "--out", str(out), *SMALL]) == 0
    metrics = ("consistency", "diagonal", "features", "sensitivity", "deformation", "smoothness")
    for metric in metrics:
        png = out / f"{metric}.png"
        assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{metric}.csv").stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["source"] == "embedded" and results["data"]["images"] == 42
    model = results["models"]["resnet18_aa4"]
    assert model["weights"].startswith("random init") and model["consistency"]["crop"]["n"] == 2
    assert set(model["sensitivity"]) == {"crop", "black@32", "inpaint@32", "scale@32"}
    assert all(v["sensitivity"][0] == 0.0 for v in model["deformation"]["layers"].values())  # C = 0
    rows = list(csv.DictReader((out / "consistency.csv").open()))
    assert [(r["model"], r["protocol"]) for r in rows] == [
        ("resnet18", "crop"),
        ("resnet18", "circular"),
        ("resnet18_aa4", "crop"),
        ("resnet18_aa4", "circular"),
    ]
    assert "resnet18_aa4 consistency: crop" in capsys.readouterr().out
    assert not list(out.glob(".*"))  # no temp files left behind
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((out / "features.png").stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_cli_errors_are_clear(tmp_path: Path, capsys) -> None:
    assert main(["eval", "--out", str(tmp_path)]) == 2
    assert "give --models" in capsys.readouterr().err
    assert main(["eval", "--models", "resnet18", "--metrics", "accuracy", "--out", str(tmp_path)]) == 2
    assert "unknown metric(s) ['accuracy']" in capsys.readouterr().err
    assert main(["eval", "--models", "resnet18", "--set", "featuers.shifts=2", "--out", str(tmp_path)]) == 2
    assert "unknown config key 'featuers'" in capsys.readouterr().err
    assert main(["eval", "--models", "resnet18,vgg11", "--weights", "x.safetensors", "--out", str(tmp_path)]) == 2
    assert "exactly one --models" in capsys.readouterr().err


def test_imagenet_config_is_the_published_protocol() -> None:
    cfg = load_config(Path(__file__).parents[2] / "configs" / "eval" / "imagenet.yaml")
    assert (cfg["resize"], cfg["crop"], cfg["consistency"]["max_shift"]) == (256, 256, 32)
    assert cfg["consistency"]["protocols"] == ["crop", "circular"] and cfg["diagonal"]["max_shift"] == 32


def _no_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    real = zoo.create

    def create(name: str, pretrained=False, **kwargs):
        if pretrained is True:
            raise WeightsUnavailableError(f"no weights for {name}", [("test", "offline")])
        return real(name, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(zoo, "create", create)


def test_pretrained_modes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_weights(monkeypatch)
    notes: list[str] = []
    (model,) = load_models(["resnet18"], "auto", log=notes.append)
    assert model.weights == "random init (weights unavailable, seed 0)" and "RANDOM INIT" in notes[0]
    (again,) = load_models(["resnet18"], "none")
    assert torch.equal(again.module.conv1.weight, model.module.conv1.weight)  # seeded random init
    assert "offline" in notes[0]
    with pytest.raises(RuntimeError, match="pretrained weights required but unavailable"):
        load_models(["resnet18"], "required")
    with pytest.raises(ValueError, match="pretrained must be one of"):
        load_models(["resnet18"], "maybe")
    # a checkpoint directory is passed to zoo.create as pretrained=
    from zoo.weights import save_model_dir

    source = zoo.create("resnet18", num_classes=3)
    save_model_dir(source, tmp_path / "ckpt", name="resnet18")
    (loaded,) = load_models(["resnet18"], "required", weights={"resnet18": str(tmp_path / "ckpt")})
    assert loaded.weights.startswith("checkpoint") and loaded.module.num_classes == 3
    assert torch.equal(loaded.module.fc.weight, source.fc.weight)


def test_generator_metric_from_the_command_line(tmp_path: Path) -> None:
    args = ["eval", "--generator", "eval_nets:pointwise_generator", "--metrics", "generation", "--limit", "3"]
    assert main([*args, "--set", "generation.size=32", "--no-progress", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())["models"]["pointwise_generator"]["generation"]
    assert result["exact"] == 3 and result["psnr"] == "inf" and result["mse"] == 0.0
    assert (tmp_path / "generation.csv").read_text().startswith("model,psnr")


@pytest.mark.slow
def test_default_embedded_run_separates_the_architectures(tmp_path: Path) -> None:
    """The documented default run (all metrics, default sizes); random init, seed 0."""
    assert main(["eval", "--models", "resnet18,resnet18_aa4", "--pretrained", "none", "--no-progress",
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    models = json.loads((tmp_path / "results.json").read_text())["models"]
    base, aa = models["resnet18"], models["resnet18_aa4"]
    assert aa["features"]["layers"]["layer4"]["mean"] < base["features"]["layers"]["layer4"]["mean"] / 2
    assert (
        aa["deformation"]["layers"]["output"]["sensitivity"][-1]
        < base["deformation"]["layers"]["output"]["sensitivity"][-1]
    )
    assert base["consistency"]["crop"]["n"] == 42
