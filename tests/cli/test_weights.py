"""The weights subcommands and scripts: list/info, download, convert, push."""

from __future__ import annotations

import re
import runpy
import sys
import warnings
from pathlib import Path

import pytest
import torch
from support.weights_testlib import MODEL, TAG, TEST_ORG, logits

import zoo
from zoo.cli import main
from zoo.weights.manifest import MANIFEST_PATH

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def run_script(name: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sys, "argv", [name, *args])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(SCRIPTS / name), run_name="__main__")
    return info.value.code


def test_list_pretrained_shows_license_and_figures(capsys):
    assert main(["list", "resnet50*", "--pretrained"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["weights", "license"]
    row = next(line for line in out if line.startswith("resnet50_aa4.in1k_ft "))
    assert "cc-by-nc-sa-4.0 (non-commercial)" in row and "77.41 / 91.32" in row
    assert any(line.startswith("resnet50.tv_in1k ") and "bsd-3-clause" in line for line in out)
    assert any(line.startswith("resnet50.tv2_in1k ") and "80.86 / -" in line for line in out)
    # baseline tv + tv2, 4 from-scratch, 1 fine-tuned, 4 filter sizes x (tv_in1k, tv2_in1k) torchvision-initialised
    assert len(out) == 1 + 2 + 4 + 1 + 8


def test_info_shows_weights_license_metrics(capsys):
    assert main(["info", "mobilenet_v2_aa4"]) == 0
    out = capsys.readouterr().out
    assert "parameters:    3,504,872" in out
    assert "mobilenet_v2_aa4.in1k_ft  (default: pretrained=True)" in out
    assert "NON-COMMERCIAL" in out and "72.72%" in out and "87.73%" in out
    assert main(["info", "mobilenet_v3_small_aa4"]) == 0
    out = capsys.readouterr().out
    assert "mobilenet_v3_small_aa4.tv_in1k" in out and "(default" not in out, "torchvision-initialised: never default"


def test_download_prefetches_for_offline_use(hub, env, repo_folder, monkeypatch, capsys):
    hub.add_repo(f"{TEST_ORG}/{TAG}", repo_folder)
    assert main(["download", MODEL]) == 0
    assert f"{TAG}: " in capsys.readouterr().out
    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the license warning (tested in test_hub.py)
        assert zoo.create(MODEL, pretrained=True).pretrained_cfg["weights"] == TAG
    assert main(["download", "mobilenet_v3_small_aa4"]) == 2
    assert "no pretrained weights for 'mobilenet_v3_small_aa4'" in capsys.readouterr().err


def test_convert_official_script_checks_the_oracle(tmp_path, monkeypatch, capsys):
    import antialiased_cnns

    torch.manual_seed(4)
    oracle = antialiased_cnns.mobilenet_v2(filter_size=4).eval()
    pth = tmp_path / "mobilenet_v2_lpf4_finetune-00000000.pth"
    torch.save({"state_dict": oracle.state_dict()}, pth)
    assert run_script("convert_official.py", [str(pth), "--out", str(tmp_path / "out")], monkeypatch) == 0
    out = capsys.readouterr().out
    diff = float(re.search(r"max \|logits - oracle logits\| = (\S+)\)", out)[1])
    assert diff < 1e-5
    model = zoo.create("mobilenet_v2_aa4", pretrained=tmp_path / "out")
    assert torch.allclose(logits(model), logits(oracle), atol=1e-5)


def test_convert_torchvision_by_key_name(tmp_path, monkeypatch, capsys):
    import torchvision

    torch.manual_seed(5)
    tv = torchvision.models.mobilenet_v2().eval()
    pth = tmp_path / "mobilenet_v2-tv.pth"
    torch.save(tv.state_dict(), pth)
    args = [str(pth), "--model", "mobilenet_v2", "--out", str(tmp_path / "out")]
    assert run_script("convert_torchvision.py", args, monkeypatch) == 0
    twin = zoo.create("mobilenet_v2", pretrained=tmp_path / "out")
    assert torch.allclose(logits(twin), logits(tv), atol=1e-5)
    # the same weights into the anti-aliased model (the fine-tuning start point)
    assert main(["convert", "torchvision", str(pth), "--model", "mobilenet_v2_aa4", "--out", str(tmp_path / "aa")]) == 0
    assert main(["convert", "torchvision", str(pth), "--model", "resnet18", "--out", str(tmp_path / "x")]) == 2
    assert "does not fit resnet18: missing keys: conv1.weight" in capsys.readouterr().err
    assert (
        main(["convert", "torchvision", "NoSuch_Weights.X", "--model", "resnet18", "--out", str(tmp_path / "y")]) == 2
    )


def test_push_dry_run_writes_a_timm_compatible_folder(tmp_path, monkeypatch, random_model_file):
    from timm.models._hub import load_model_config_from_path

    before = MANIFEST_PATH.read_bytes()
    out = tmp_path / "repo"
    args = [TAG, "--out", str(out), "--weights", str(random_model_file), "--dry-run"]
    assert run_script("push_to_hub.py", args, monkeypatch) == 0
    assert MANIFEST_PATH.read_bytes() == before, "a dry run leaves the manifest alone"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (out / "README.md").read_text()
    assert "license: cc-by-nc-sa-4.0" in card and "Non-commercial use only" in card
    assert "72.72" in card and "@inproceedings{zhang2019shiftinvar" in card and "hf-hub:" in card
    cfg, name, model_args = load_model_config_from_path(out)
    assert name == MODEL and cfg["license"] == "cc-by-nc-sa-4.0" and cfg["crop_pct"] == 0.875
    assert model_args == {}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "vgg11_bn", "densenet121", "alexnet"])
def test_convert_official_matches_oracle_per_family(arch, tmp_path):
    import antialiased_cnns

    from zoo.convert import convert_official

    torch.manual_seed(6)
    pth = tmp_path / f"{arch}_lpf3.pth"
    torch.save({"state_dict": getattr(antialiased_cnns, arch)(filter_size=3).state_dict()}, pth)
    folder, diff = convert_official(pth, tmp_path / "out")
    assert diff is not None and diff < 1e-5
    assert zoo.create(f"{arch}_aa3", pretrained=folder).pretrained_cfg["architecture"] == f"{arch}_aa3"
