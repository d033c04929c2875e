"""End-to-end fine-tuning on a tiny slice of the embedded digits (seconds on a CPU)."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
import torch
from train_testlib import tiny

import zoo
from zoo.train import finetune
from zoo.train import loop as loop_module
from zoo.train.checkpoint import CheckpointError, load_train_state
from zoo.train.config import load_config
from zoo.train.run import build_model
from zoo.weights.io import load_state_dict_file

PROBE = torch.Generator().manual_seed(123)
X = torch.randn(4, 3, 32, 32, generator=PROBE)


def _logits(model):
    model.eval()
    with torch.no_grad():
        return model(X)


def _tree(path):
    """{relative file: sha256} of a folder (to prove nothing was rewritten)."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return finetune(None, tiny(out, "output.plots=true"))


def test_one_epoch_run_writes_checkpoint_logs_and_plots(one_epoch):
    run = one_epoch["resnet18_aa4"]
    d = run.run_dir
    for name in (
        "model.safetensors",
        "config.json",
        "train_state.pt",
        "finetune.json",
        "metrics.csv",
        "metrics.json",
        "curves.png",
        "best/model.safetensors",
    ):
        assert (d / name).is_file(), name
    for name in ("config.yaml", "train.log", "comparison.md", "comparison.json", "data_report.json"):
        assert (one_epoch.root / name).is_file(), name
    assert (d / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((d / "config.json").read_text())
    assert config["architecture"] == "resnet18_aa4" and config["num_classes"] == 10
    assert config["pretrained_cfg"]["label_names"] == [str(k) for k in range(10)]
    assert len(run.history) == 1 and run.history[0]["epoch"] == 1
    row = run.history[0]
    assert 0 <= row["val_top1"] <= 100 and 0 <= row["consistency"] <= 100
    assert row["consistency_low"] <= row["consistency"] <= row["consistency_high"]
    assert "epoch,lr,train_loss" in (d / "metrics.csv").read_text()
    assert "resnet18_aa4" in one_epoch.table


def test_checkpoint_reloads_with_identical_logits(one_epoch):
    run = one_epoch["resnet18_aa4"]
    expected = _logits(run.model)
    fresh = zoo.create("resnet18_aa4", num_classes=10)
    fresh.load_state_dict(load_state_dict_file(run.run_dir / "model.safetensors"))
    assert torch.equal(_logits(fresh), expected)
    # the resume file carries the same weights
    state = load_train_state(run.run_dir)
    assert state["epoch"] == 1 and all(torch.equal(state["model"][k], v) for k, v in fresh.state_dict().items())


def test_checkpoint_loads_with_zoo_create(one_epoch):
    run = one_epoch["resnet18_aa4"]
    model = zoo.create("resnet18_aa4", pretrained=str(run.run_dir))
    assert model.num_classes == 10
    assert torch.equal(_logits(model), _logits(run.model))


def test_checkpoint_loads_with_timm_local_dir(one_epoch):
    import timm

    run = one_epoch["resnet18_aa4"]
    model = timm.create_model(f"local-dir:{run.run_dir}", pretrained=True)
    assert torch.equal(_logits(model), _logits(run.model))


def test_resume_continues_from_saved_epoch_with_saved_optimizer(tmp_path, tiny_args, monkeypatch):
    straight = finetune(None, tiny_args(tmp_path / "a", "train.epochs=2"))["resnet18_aa4"]

    real_save = loop_module.save_checkpoint

    def crash_at_epoch_2(*args, **kwargs):
        if kwargs["state"]["epoch"] == 2:
            raise KeyboardInterrupt("simulated interruption before the epoch-2 checkpoint")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(loop_module, "save_checkpoint", crash_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        finetune(None, tiny_args(tmp_path / "b", "train.epochs=2"))
    monkeypatch.undo()
    run_dir = tmp_path / "b" / "tiny" / "resnet18_aa4"
    saved = load_train_state(run_dir)
    assert saved["epoch"] == 1
    seen = {}
    real_load = torch.optim.SGD.load_state_dict

    def spy(self, state):
        seen["state"] = copy.deepcopy(state)  # training later updates the loaded buffers in place
        return real_load(self, state)

    monkeypatch.setattr(torch.optim.SGD, "load_state_dict", spy)
    resumed = finetune(None, tiny_args(tmp_path / "b", "train.epochs=2", f"train.resume={run_dir}"))["resnet18_aa4"]
    momentum = [s["momentum_buffer"] for s in seen["state"]["state"].values()]
    assert momentum and all(
        torch.equal(a, b)
        for a, b in zip(momentum, [s["momentum_buffer"] for s in saved["optimizer"]["state"].values()])
    )
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.history[0] == saved["history"][0]
    # epoch 2 after resuming == epoch 2 of the uninterrupted run (optimizer, schedule, RNG all restored)
    assert resumed.history[1]["train_loss"] == pytest.approx(straight.history[1]["train_loss"], rel=1e-6)
    for key, value in straight.model.state_dict().items():
        assert torch.allclose(resumed.model.state_dict()[key], value, atol=1e-6), key
    assert load_train_state(run_dir)["epoch"] == 2


def test_incompatible_or_finished_resume_is_refused_and_nothing_changes(one_epoch, tiny_args, tmp_path):
    run_dir = one_epoch["resnet18_aa4"].run_dir
    before = _tree(one_epoch.root)
    with pytest.raises(CheckpointError, match=r"model: checkpoint 'resnet18_aa4', this run 'resnet34_aa4'"):
        finetune(None, tiny_args(tmp_path, "model.name=resnet34_aa4", "train.epochs=2", f"train.resume={run_dir}"))
    with pytest.raises(CheckpointError, match=r"mode: checkpoint 'full', this run 'linear_probe'"):
        finetune(None, tiny_args(tmp_path, "model.mode=linear_probe", "train.epochs=2", f"train.resume={run_dir}"))
    with pytest.raises(ValueError, match=r"already trained 1 of train.epochs=1"):
        finetune(None, tiny_args(tmp_path, f"train.resume={run_dir}"))
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume"):
        finetune(None, tiny_args(tmp_path, "train.epochs=2", f"train.resume={tmp_path / 'nothing'}"))
    assert _tree(one_epoch.root) == before
    assert not (tmp_path / "tiny").exists()


def test_truncated_train_state_is_a_clear_error(tmp_path, one_epoch):
    bad = tmp_path / "train_state.pt"
    data = (one_epoch["resnet18_aa4"].run_dir / "train_state.pt").read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated or not a zoo fine-tuning checkpoint"):
        load_train_state(bad)


def test_twin_run_same_init_and_comparison_table(tmp_path, tiny_args, capsys):
    cfg = load_config(None, tiny_args(tmp_path, "model.twin=true", "data.limit_train=32", "data.limit_eval=16"))
    aa, _, _ = build_model(cfg, "resnet18_aa4", 10)
    base, _, _ = build_model(cfg, "resnet18", 10)
    params = dict(base.named_parameters())
    assert all(torch.equal(p, params[k]) for k, p in aa.named_parameters())  # same seed -> same initial weights
    result = finetune(cfg)
    assert [r.name for r in result.runs] == ["resnet18_aa4", "resnet18"]
    assert [r.antialiased for r in result.runs] == [True, False]
    out = capsys.readouterr().out
    assert "results on the held-out set" in out and "resnet18_aa4  yes" in out and "resnet18      no" in out
    table = (result.root / "comparison.md").read_text()
    assert table.count("| resnet18") == 2


def test_linear_probe_changes_only_the_classifier(tmp_path, tiny_args):
    cfg = load_config(None, tiny_args(tmp_path, "model.mode=linear_probe", "data.limit_train=32", "data.limit_eval=16"))
    init, _, _ = build_model(cfg, "resnet18_aa4", 10)
    run = finetune(cfg)["resnet18_aa4"]
    trained = run.model.state_dict()
    for key, value in init.state_dict().items():
        same = torch.equal(trained[key], value)
        assert same != key.startswith("fc."), key  # fc changed, everything else (incl. BN statistics) did not


def test_cli_errors_are_clear_and_create_nothing(tmp_path, tiny_args, capsys):
    from zoo.cli import main

    assert main(["finetune", *tiny_args(tmp_path), "optim.lrr=0.1"]) == 2
    assert "did you mean optim.lr" in capsys.readouterr().err
    assert main(["finetune", *tiny_args(tmp_path), "data.source=imagefolder", f"data.path={tmp_path / 'missing'}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["finetune", *tiny_args(tmp_path), "model.name=resnet19_aa4"]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert not (tmp_path / "tiny").exists()
    assert main(["finetune", "--config", "configs/finetune/digits.yaml", "--print-config", "epochs=2"]) == 0
    assert "epochs: 2" in capsys.readouterr().out


def test_required_pretrained_weights_fail_clearly_when_unreachable(tmp_path, tiny_args, monkeypatch):
    from zoo.weights import WeightsUnavailableError

    def unreachable(*args, **kwargs):
        raise WeightsUnavailableError("could not obtain weights", [("hub", "offline")])

    monkeypatch.setattr("zoo.weights.load.create_pretrained", unreachable)
    cfg = load_config(None, tiny_args(tmp_path, "model.pretrained=auto"))
    _, init, detail = build_model(cfg, "resnet18_aa4", 10)
    assert init == "random (no weights)" and "PRETRAINED WEIGHTS UNREACHABLE" in detail and "hub: offline" in detail
    cfg = load_config(None, tiny_args(tmp_path, "model.pretrained=true"))
    with pytest.raises(WeightsUnavailableError):
        build_model(cfg, "resnet18_aa4", 10)


def test_image_folder_run_reports_skipped_images(tmp_path, tiny_args, capsys):
    from PIL import Image

    data = tmp_path / "data"
    for split in ("train", "val"):
        for k, cls in enumerate(("circle", "square")):
            for j in range(4):
                (data / split / cls).mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (40, 36), (200 * k, 30 * j, 90)).save(data / split / cls / f"{j}.png")
    (data / "train" / "square" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    args = tiny_args(tmp_path / "out", "data.source=imagefolder", f"data.path={data}", "data.batch_size=4")
    result = finetune(None, args)
    run = result["resnet18_aa4"]
    assert run.history[0]["n"] == 8
    report = json.loads((result.root / "data_report.json").read_text())
    assert report["classes"] == ["circle", "square"]
    assert [p.rsplit("/", 1)[-1] for p, _ in report["skipped"]] == ["corrupt.jpg"]
    assert "skipped 1 unreadable image(s)" in capsys.readouterr().out
    assert json.loads((run.run_dir / "config.json").read_text())["pretrained_cfg"]["label_names"] == [
        "circle",
        "square",
    ]


def test_early_stopping_when_the_monitored_metric_stalls(tmp_path, tiny_args):
    # a linear probe with a negligible learning rate cannot change any prediction: val top-1 stalls
    args = tiny_args(
        tmp_path, "model.mode=linear_probe", "optim.lr=1e-12", "train.epochs=4", "train.early_stop_patience=1"
    )
    run = finetune(None, [*args, "data.limit_train=32", "data.limit_eval=16", "eval.consistency=false"])["resnet18_aa4"]
    assert run.stopped_early and [h["epoch"] for h in run.history] == [1, 2]
    assert load_train_state(run.run_dir)["bad_epochs"] == 1


def test_amp_choices():
    from zoo.train.loop import amp_dtype

    cpu = torch.device("cpu")
    assert amp_dtype("auto", cpu) is None and amp_dtype("off", cpu) is None
    assert amp_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        amp_dtype("fp16", cpu)
