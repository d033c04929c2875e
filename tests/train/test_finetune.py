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
from zoo.train.config import load_finetune_config
from zoo.train.run import init_model
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
    cfg = load_finetune_config(
        None, tiny_args(tmp_path, "model.twin=true", "data.limit_train=32", "data.limit_eval=16")
    )
    aa, _, _ = init_model(cfg, "resnet18_aa4", 10)
    base, _, _ = init_model(cfg, "resnet18", 10)
    params = dict(base.named_parameters())
    assert all(torch.equal(p, params[k]) for k, p in aa.named_parameters())  # same seed -> same initial weights
    result = finetune(cfg)
    assert [r.name for r in result.runs] == ["resnet18_aa4", "resnet18"]
    assert [r.antialiased for r in result.runs] == [True, False]
    out = capsys.readouterr().out
    assert "results on the test split" in out and "resnet18_aa4  yes" in out and "resnet18      no" in out
    table = (result.root / "comparison.md").read_text()
    assert table.count("| resnet18") == 4  # the model table and the per-run table
    assert "resnet18_aa4 - resnet18, paired over 1 seed(s)" in result.table and "McNemar" in result.table


def test_linear_probe_changes_only_the_classifier(tmp_path, tiny_args):
    cfg = load_finetune_config(
        None, tiny_args(tmp_path, "model.mode=linear_probe", "data.limit_train=32", "data.limit_eval=16")
    )
    init, _, _ = init_model(cfg, "resnet18_aa4", 10)
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

    monkeypatch.setattr("zoo.builder.create_pretrained", unreachable)
    cfg = load_finetune_config(None, tiny_args(tmp_path, "model.pretrained=auto"))
    _, init, detail = init_model(cfg, "resnet18_aa4", 10)
    assert init == "random (no weights)" and "PRETRAINED WEIGHTS UNREACHABLE" in detail and "hub: offline" in detail
    cfg = load_finetune_config(None, tiny_args(tmp_path, "model.pretrained=true"))
    with pytest.raises(WeightsUnavailableError):
        init_model(cfg, "resnet18_aa4", 10)


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
    assert run.history[0]["n"] == 2 and run.test["n"] == 8  # val: 20% of train/ (8 readable); test: val/
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


def test_selection_uses_the_validation_split_and_the_table_reports_the_test_split(tmp_path, tiny_args):
    from zoo.train.data import build_data

    args = tiny_args(tmp_path, "train.epochs=3", "eval.consistency=false", "data.limit_eval=null")
    result = finetune(None, args)
    run = result["resnet18_aa4"]
    cfg = load_finetune_config(None, args)
    pcfg = json.loads((run.run_dir / "config.json").read_text())["pretrained_cfg"]
    bundle = build_data(cfg.data, 3, pcfg["mean"], pcfg["std"])
    assert (len(bundle.val), len(bundle.test)) == (270, 450)
    assert all(h["n"] == 270 for h in run.history)  # every epoch's decision figures: the validation split
    val = [h["val_top1"] for h in run.history]
    assert run.best["epoch"] == val.index(max(val)) + 1 == run.test["epoch"]

    best = zoo.create("resnet18_aa4", pretrained=str(run.run_dir / "best")).eval()

    def correct(split):
        with torch.no_grad():
            return [int(best(x[None]).argmax(1)) == int(y) for x, y, _ in split]

    on_val, on_test = correct(bundle.val), correct(bundle.test)
    assert 100 * sum(on_val) / 270 == pytest.approx(run.history[run.best["epoch"] - 1]["val_top1"])
    assert run.test["n"] == 450 and run.test["correct"] == [int(c) for c in on_test]
    assert run.test["test_top1"] == pytest.approx(100 * sum(on_test) / 450)
    row = json.loads((result.root / "comparison.json").read_text())["models"][0]
    assert row["test top-1 (%)"] == pytest.approx(run.test["test_top1"])


def _only_aa_weights(monkeypatch):
    """Pretrained weights reachable for the anti-aliased model only (the twin's download fails)."""
    from zoo.weights import WeightsUnavailableError

    def load(entry, pretrained, **kwargs):
        name = entry if isinstance(entry, str) else entry.name
        if name == "resnet18":
            raise WeightsUnavailableError("could not obtain weights", [("hub", "offline")])
        torch.manual_seed(1234)  # stands in for loaded weights: different from the seeded random init
        return zoo.create(name, **kwargs)

    monkeypatch.setattr("zoo.builder.create_pretrained", load)


def test_twins_with_different_initialisations_are_refused(tmp_path, tiny_args, monkeypatch):
    _only_aa_weights(monkeypatch)
    args = tiny_args(tmp_path, "model.twin=true", "model.pretrained=auto")
    with pytest.raises(ValueError, match=r"twins would start differently .*model.allow_init_mismatch=true"):
        finetune(None, args)
    assert not (tmp_path / "tiny").exists()  # refused before anything was written


def test_init_mismatch_on_request_is_said_in_the_table(tmp_path, tiny_args, monkeypatch, capsys):
    _only_aa_weights(monkeypatch)
    args = tiny_args(tmp_path, "model.twin=true", "model.pretrained=auto", "model.allow_init_mismatch=true")
    result = finetune(None, args)
    out = capsys.readouterr().out
    assert "WARNING: model.allow_init_mismatch=true: the twins start differently" in out
    rows = json.loads((result.root / "comparison.json").read_text())["models"]
    assert [r["init"] for r in rows] == ["pretrained", "random (no weights)"]
    assert "WARNING: the twins started differently" in (result.root / "comparison.md").read_text()


def test_output_dir_that_is_a_file_is_one_line(tmp_path, tiny_args, capsys):
    from zoo.cli import main

    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    assert main(["finetune", *tiny_args(existing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"output.dir={existing}: {existing} is a file, not a folder" in err
    assert main(["finetune", *tiny_args(existing / "sub")]) == 2  # a file on the way counts too
    assert "is a file, not a folder" in capsys.readouterr().err
    assert existing.read_text() == "keep me"


def test_numbers_that_make_no_sense_stop_the_cli_with_one_line(tmp_path, tiny_args, capsys):
    from zoo.cli import main

    for bad, message in (("optim.lr=.nan", "optim.lr must be a finite"), ("optim.lr=-1", "optim.lr must be > 0")):
        assert main(["finetune", *tiny_args(tmp_path), bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "tiny").exists()


def test_seeds_train_each_twin_per_seed_with_paired_statistics(tmp_path, tiny_args):
    args = tiny_args(tmp_path, "model.twin=true", "train.seeds=2", "data.limit_train=32", "data.limit_eval=16")
    result = finetune(None, args)
    assert [(r.name, r.seed) for r in result.runs] == [
        ("resnet18_aa4", 0), ("resnet18", 0), ("resnet18_aa4", 1), ("resnet18", 1),
    ]  # fmt: skip
    assert result["resnet18_aa4"].run_dir == result.root / "seed0" / "resnet18_aa4"
    data = json.loads((result.root / "comparison.json").read_text())
    aa = data["models"][0]
    tops = [r.test["test_top1"] for r in result.runs if r.name == "resnet18_aa4"]
    assert aa["seeds"] == 2 and aa["test top-1 (%)"] == pytest.approx(sum(tops) / 2)
    pair = data["paired"][0]
    assert pair["seeds"] == [0, 1] and pair["mcnemar_top1"]["n"] == 32  # 16 test images x 2 seeds
