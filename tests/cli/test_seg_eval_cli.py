"""``zoo eval --task segmentation`` end to end on a tiny folder, and its one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from support.seg_fixtures import make_seg_folder

import zoo
from zoo.cli import main

TINY = ["shifts=1", "rounds=50", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory):
    return make_seg_folder(tmp_path_factory.mktemp("segcli") / "data", count=4, classes=3)


def test_end_to_end_on_a_folder(folder, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["eval", "--task", "segmentation", "--models", "unet_resnet18,unet_resnet18_aa4", "--data", str(folder)]
    assert main([*argv, "--pretrained", "none", "--out", str(out), *TINY]) == 0
    report = json.loads((out / "results.json").read_text())
    assert list(report["models"]) == ["unet_resnet18", "unet_resnet18_aa4"] and report["num_classes"] == 3
    for res in report["models"].values():
        assert res["n"] == 4 and 0.0 <= res["miou"] <= 1.0 and 0.0 <= res["consistency"] <= 1.0
        assert len(res["consistency_ci95"]) == 2
    assert set(report["paired"]) == {"unet_resnet18_aa4"}
    assert (out / "results.png").stat().st_size > 1000
    assert "| unet_resnet18_aa4 |" in (out / "results.md").read_text()
    assert "RANDOM INIT" in capsys.readouterr().out


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    return err


def test_bad_inputs_give_one_line_errors(folder, tmp_path, capsys) -> None:
    base = ["eval", "--task", "segmentation", "--models", "unet_resnet18", "--out", str(tmp_path / "o"), *TINY]
    lonely = make_seg_folder(tmp_path / "lonely", count=2)
    (lonely / "masks" / "im00.png").unlink()
    assert "without a mask" in _error([*base, "--data", str(lonely)], capsys)
    torch.manual_seed(0)
    ckpt = tmp_path / "two.pt"
    torch.save(zoo.create("unet_resnet18", num_classes=2).state_dict(), ckpt)
    err = _error([*base, "--data", str(folder), "--weights", str(ckpt)], capsys)
    assert "class count mismatch: the masks hold class id 2, the models predict 2 classes" in err
    bad = ["eval", "shift=2", "--task", "segmentation", "--models", "unet_resnet18", "--data", str(folder)]
    assert "unknown setting 'shift'" in _error(bad, capsys)
    assert "--metrics is for --task classification" in _error([*base, "--metrics", "clean"], capsys)
    with pytest.raises(SystemExit):
        main(["eval", "--task", "detection", "--models", "unet_resnet18"])
    assert "invalid choice: 'detection'" in capsys.readouterr().err


def test_finetune_cli_trains_and_evaluates_a_unet(tmp_path, capsys) -> None:
    config = "configs/finetune/digits_segmentation.yaml"
    assert main(["finetune", "--config", config, "--print-config"]) == 0
    assert "task: segmentation" in capsys.readouterr().out
    tiny = ["limit_train=4", "limit_eval=2", "image_size=32", "decoder_channels=16", "epochs=1", "shifts=1"]
    assert main(["finetune", "--config", config, *tiny, "output.progress=false", f"output.dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "| unet_resnet18_aa4 |" in out and (tmp_path / "digits_segmentation" / "results.json").is_file()
    assert main(["finetune", "--config", config, *tiny, "model.name=resnet18", f"output.dir={tmp_path}"]) == 2
    assert "task=segmentation trains unet_* models" in capsys.readouterr().err
