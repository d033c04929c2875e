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
from zoo.eval.runner import load_eval_config, load_models
from zoo.weights import WeightsUnavailableError

SMALL = [  # every metric, tiny: 2 images at 64 px, 2x2 feature shifts, one sensitivity embedding
    "--limit", "2", "--no-progress", "--pretrained", "none",
    "--set", "resize=64", "--set", "crop=64", "--set", "consistency.max_shift=16",
    "--set", "diagonal.max_shift=4", "--set", "features.size=32", "--set", "features.shifts=2",
    "--set", "sensitivity.frames=2", "--set", "sensitivity.canvas=48", "--set", "sensitivity.embed_sizes=[32]",
    "--set", "sensitivity.inpaint_iterations=5", "--set", "deformation.size=48",
    "--set", "deformation.strengths=[0.0,2.0]", "--set", "deformation.bootstrap=20",
    "--set", "compare.bootstrap=50",
]  # fmt: skip


def test_zoo_eval_on_embedded_default_writes_all_outputs(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["eval", "--models", "resnet18,resnet18_aa4", "--out", str(out), *SMALL]) == 0
    metrics = ("clean", "consistency", "diagonal", "features", "sensitivity", "deformation", "smoothness")
    for metric in metrics:
        png = out / f"{metric}.png"
        assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{metric}.csv").stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["source"] == "embedded" and results["data"]["images"] == 120
    model = results["models"]["resnet18_aa4"]
    assert model["weights"].startswith("random init") and model["consistency"]["crop"]["n"] == 2
    assert set(model["sensitivity"]) == {"crop", "black@32", "black_mean@32", "inpaint@32", "scale@32"}
    pair = results["comparison"]["resnet18_aa4 vs resnet18"]
    assert {"consistency crop", "consistency circular", "feature distance layer3 (on-grid)"} <= set(pair)
    assert model["features"]["layers"]["layer4"]["mean"] is None  # a 32 px image has no stride-32 shift but 0
    assert all(set(v) >= {"diff", "ci95", "p", "test"} for v in pair.values())
    assert "| resnet18_aa4 vs resnet18 | consistency crop |" in (out / "report.md").read_text()
    assert (out / "comparison.png").stat().st_size > 1000
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "resnet18", "--batch-size", "0"], "batch_size must be an integer >= 1, got 0"),
        (["--models", "resnet18", "--set", "batch_size=abc"], "batch_size must be an integer >= 1, got 'abc'"),
        (["--generator", "nomodule:x"], "cannot import module 'nomodule'"),
        (["--models", "resnet18", "--set", "protocol=offical"], "protocol must be one of seeded, official"),
        (["--models", "resnet18", "--set", "protocol=official", "--set", "crop=200"], "protocol: official fixes crop"),
    ],
)
def test_bad_input_is_one_line_naming_the_valid_values(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    assert main(["eval", *args, "--pretrained", "none", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_out_that_is_an_existing_file_is_refused(tmp_path: Path, capsys) -> None:
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    assert main(["eval", "--models", "resnet18", "--pretrained", "none", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert "is an existing file; give a directory" in err and err.count("\n") == 1
    assert target.read_text() == "keep me"


def test_corruptions_and_flip_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["eval", "--models", "resnet18,resnet18_aa4", "--pretrained", "none", "--no-progress", "--limit", "2"]
    args += ["--metrics", "corruptions,flip", "--set", "corruptions.corruptions=[fog,jpeg_compression]"]
    args += ["--set", "corruptions.severities=[1,5]", "--set", "corruptions.size=48", "--set", "flip.size=40"]
    args += ["--set", "flip.frames=3", "--set", "compare.bootstrap=50", "--out", str(out)]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    base, aa = results["models"]["resnet18"]["corruptions"], results["models"]["resnet18_aa4"]["corruptions"]
    assert base["reference_model"] == "resnet18" and set(base["errors"]) == {"fog", "jpeg_compression"}
    assert base["mce"] in (100.0, None) and "mce" in aa
    fl = results["models"]["resnet18_aa4"]["flip"]
    assert fl["reference_model"] == "resnet18" and set(fl["fp"]) == set(fl["perturbations"]) and "mfr" in fl
    assert "flip probability (mean over types)" in results["comparison"]["resnet18_aa4 vs resnet18"]
    for name in ("corruptions", "flip"):
        assert (out / f"{name}.png").stat().st_size > 1000 and (out / f"{name}.csv").stat().st_size > 0


def test_imagenet_config_is_the_published_protocol() -> None:
    cfg = load_eval_config(Path(__file__).parents[2] / "configs" / "eval" / "imagenet.yaml")
    assert (cfg["resize"], cfg["crop"], cfg["consistency"]["max_shift"]) == (256, 256, 32)
    assert cfg["consistency"]["protocols"] == ["crop", "circular"] and cfg["diagonal"]["max_shift"] == 32
    official = load_eval_config(overrides={"protocol": "official"})
    assert (official["resize"], official["crop"], official["consistency"]["max_shift"]) == (256, 256, 32)
    assert official["consistency"]["passes"] == 5


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
    for layer in ("layer2", "layer3", "layer4"):  # the on-grid headline (Zhang's figure)
        assert aa["features"]["layers"][layer]["mean"] < base["features"]["layers"][layer]["mean"]
    assert (
        aa["deformation"]["layers"]["output"]["sensitivity"][-1]
        < base["deformation"]["layers"]["output"]["sensitivity"][-1]
    )
    assert base["consistency"]["crop"]["n"] == 120


def test_official_protocol_through_run_eval_streams_the_data_once_per_pass() -> None:
    from eval_nets import circular_net

    from zoo.eval.runner import EvalModel, run_eval

    net = circular_net(classes=5)
    calls: list[tuple[int, ...]] = []
    net.register_forward_hook(lambda _m, inputs, _o: calls.append(tuple(inputs[0].shape)))
    over = {"protocol": "official", "metrics": ["consistency"], "limit": 3, "batch_size": 2}
    over["consistency"] = {"protocols": ["crop"]}
    res = run_eval([EvalModel("tiny", net)], load_eval_config(overrides=over), progress=False, log=lambda _m: None)
    crop = res["models"]["tiny"]["consistency"]["crop"]
    assert crop.procedure == "official" and crop.passes == 5 and crop.n == 3
    assert calls == [(4, 3, 224, 224), (2, 3, 224, 224)] * 5  # 2 views x (2 + 1 images), 5 passes of 256 px data
