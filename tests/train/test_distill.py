import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from zoo.config import ConfigError
from zoo.train.distill import DistillConfig, distill_loss, freeze_teacher, make_student


def test_equal_logits_give_zero():
    x = torch.randn(4, 10)
    assert float(distill_loss(x, x.clone(), 3.0)) == pytest.approx(0.0, abs=1e-6)


def test_two_class_kl_by_hand():
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])  # p_t = (3/4, 1/4), p_s = (1/2, 1/2)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert float(distill_loss(s, t, 1.0)) == pytest.approx(expected, rel=1e-5)


def test_temperature_squared_scaling():
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[2 * math.log(3.0), 0.0]])  # at T=2: the case above
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert float(distill_loss(s, t, 2.0)) == pytest.approx(4 * expected, rel=1e-5)


def test_alpha_adds_cross_entropy():
    s, t, y = torch.randn(3, 5), torch.randn(3, 5), torch.tensor([0, 2, 4])
    ce = torch.nn.functional.cross_entropy(s, y)
    assert float(distill_loss(s, t, 2.0, y, 0.5) - distill_loss(s, t, 2.0)) == pytest.approx(0.5 * float(ce), rel=1e-5)


def test_student_keys_and_frozen_teacher():
    teacher = freeze_teacher(zoo.create("resnet18", num_classes=10))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = make_student(teacher, DistillConfig(teacher="resnet18"))
    assert list(student.state_dict()) == list(teacher.state_dict())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    x = torch.randn(2, 3, 32, 32)
    student.train()
    distill_loss(student(x), teacher(x), 4.0).backward()
    torch.optim.SGD(student.parameters(), lr=0.1).step()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert any(p.grad is not None for p in student.parameters())


@pytest.mark.parametrize(
    ("kwargs", "key"), [({"temperature": 0.0}, "distill.temperature"), ({"alpha": 2.0}, "distill.alpha")]
)
def test_validation_one_line(kwargs, key):
    with pytest.raises(ConfigError, match=key) as info:
        DistillConfig(**kwargs).validate()
    assert "\n" not in str(info.value)


def test_tiny_unlabeled_distill_run_lowers_the_loss():
    from zoo.train.data import digits_tensors
    from zoo.train.distill import distill_epoch

    torch.manual_seed(0)
    images, _ = digits_tensors(16, 3)
    images = images[:64].float()
    teacher = freeze_teacher(zoo.create("resnet18", num_classes=10))
    cfg = DistillConfig(teacher="resnet18", temperature=2.0)
    student = make_student(teacher, cfg)
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    batches = list(images.split(16))  # images only: no labels
    losses = [distill_epoch(student, teacher, batches, opt, cfg) for _ in range(4)]
    assert losses[-1] < losses[0]


# ---------------------------------------------------------------- `zoo finetune distill.enabled=true`


def _distill_args(out, *extra):
    return [
        "distill.enabled=true",
        "model.name=resnet18",
        "model.pretrained=none",
        "data.image_size=16",
        "data.limit_train=48",
        "data.limit_eval=24",
        "data.batch_size=16",
        "train.epochs=1",
        "train.threads=1",
        "distill.teacher_epochs=1",
        "eval.max_shift=3",
        f"output.dir={out}",
        "output.name=aa",
        "output.progress=false",
        *extra,
    ]


def _write_images(folder, count, size=20):
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(count):
        sub = folder / f"part{k % 2}" / "deeper"  # nested: the scan is recursive
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(sub / f"im{k}.png")


def test_distill_overrides_are_typed():
    from zoo.train.config import load_finetune_config

    cfg = load_finetune_config(None, ["distill.enabled=true", "distill.temperature=2", "model.name=resnet18"])
    assert cfg.distill.temperature == 2.0 and isinstance(cfg.distill.temperature, float)
    assert cfg.distill.alpha_labels == 0.0 and cfg.data.augment.shift == 0  # no labels, no shift by default


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("distill.temperature=0", "distill.temperature must be a finite number > 0"),
        ("distill.temperature=-1", "distill.temperature must be a finite number > 0"),
        ("distill.alpha_labels=1.5", "distill.alpha_labels must be in [0, 1]"),
        ("distill.filter_size=9", "distill.filter_size must be an integer in 1..7"),
        ("distill.teacher=resnet19", "distill.teacher='resnet19'"),
        ("distill.teacher=resnet18_aa4", "is anti-aliased already"),
        ("distill.images=/no/such/folder", "distill.images=/no/such/folder: folder not found"),
        ("distill.teacher=/no/such/run", "expected a `zoo finetune` model folder"),
        ("train.seeds=2", "train.seeds=1"),
        ("eval.consistency=false", "keep eval.consistency=true"),
    ],
)
def test_bad_distill_config_is_one_line(override, message):
    from zoo.train.config import load_finetune_config

    with pytest.raises(ConfigError) as info:
        load_finetune_config(None, ["distill.enabled=true", "model.name=resnet18", override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_labels_with_an_unlabeled_folder_are_refused(tmp_path):
    from zoo.train.config import load_finetune_config

    with pytest.raises(ConfigError, match="needs labels"):
        load_finetune_config(None, ["distill.enabled=true", f"distill.images={tmp_path}", "distill.alpha_labels=0.5"])


def test_cli_bad_distill_config_no_traceback(tmp_path, capsys):
    from zoo.cli import main

    assert main(["finetune", *_distill_args(tmp_path), "distill.temperature=0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "distill.temperature" in err and "Traceback" not in err
    assert main(["finetune", *_distill_args(tmp_path), "distill.teacher=vgg99"]) == 2
    assert "distill.teacher='vgg99'" in capsys.readouterr().err
    assert not (tmp_path / "aa").exists()


def test_unlabeled_folder_is_scanned_recursively_and_skips_unreadable(tmp_path):
    from zoo.train.data import DatasetError
    from zoo.train.distill_run import unlabeled_images

    _write_images(tmp_path, 5)
    (tmp_path / "part0" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    dataset, skipped = unlabeled_images(tmp_path, "RGB", lambda im: np.asarray(im).shape)
    assert len(dataset) == 5 and {dataset[i][1] for i in range(5)} == {-1}
    assert dataset[0][0] == (20, 20, 3)
    assert [Path(p).name for p, _ in skipped] == ["broken.jpg"]
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(DatasetError, match="holds no readable images"):
        unlabeled_images(empty, "RGB", lambda im: im)


def test_tiny_distill_run_writes_the_comparison_and_resumes(tmp_path):
    from zoo.train.run import finetune

    images = tmp_path / "unlabeled"
    _write_images(images, 24)
    result = finetune(None, _distill_args(tmp_path, f"distill.images={images}", "output.plots=true"))
    root = result.root
    data = json.loads((root / "comparison.json").read_text())
    for stage in ("original", "converted", "distilled"):
        for key in ("top1", "consistency"):
            assert 0.0 <= data[stage][f"{key}_ci95"][0] <= data[stage][key] <= data[stage][f"{key}_ci95"][1] <= 100
    assert (root / "comparison.png").is_file() and (root / "teacher" / "model.safetensors").is_file()
    student_dir = root / "resnet18_aa4"
    assert data["history"][0]["epoch"] == 1 and (student_dir / "train_state.pt").is_file()
    # the student checkpoint is the anti-aliased model, its keys those of the teacher
    teacher = zoo.create("resnet18", pretrained=str(root / "teacher"))
    student = zoo.create("resnet18_aa4", pretrained=str(student_dir))
    assert list(student.state_dict()) == list(teacher.state_dict())
    # the student was trained: its weights left the teacher's (the converted model's)
    t, st = teacher.state_dict(), student.state_dict()
    assert any(not torch.equal(t[k], st[k]) for k in t if t[k].is_floating_point())
    # resume: one more distillation epoch from the saved one, the teacher reused (not retrained)
    weights = root / "teacher" / "model.safetensors"
    before = (weights.stat().st_ino, weights.stat().st_mtime_ns)
    again = finetune(
        None, _distill_args(tmp_path, f"distill.images={images}", "train.epochs=2", f"train.resume={root}")
    )
    assert again.root == root
    history = json.loads((root / "comparison.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert (weights.stat().st_ino, weights.stat().st_mtime_ns) == before  # not written again


def test_teacher_from_a_previous_run_folder(tmp_path):
    from zoo.train.run import finetune

    first = finetune(None, _distill_args(tmp_path, "output.plots=false"))
    second = finetune(
        None,
        _distill_args(tmp_path, f"distill.teacher={first.root / 'teacher'}", "output.name=again", "output.plots=false"),
    )
    a = json.loads((first.root / "comparison.json").read_text())
    b = json.loads((second.root / "comparison.json").read_text())
    assert a["original"] == b["original"]  # the same teacher, loaded from its folder
    assert not (second.root / "teacher").exists()


def test_shipped_distill_configs_load(tmp_path):
    from zoo.train.config import load_finetune_config

    cfg = load_finetune_config(
        "configs/finetune/imagefolder_distill.yaml", [f"data.path={tmp_path}", f"distill.images={tmp_path}"]
    )
    assert cfg.distill.enabled and cfg.model.name == "resnet50" and cfg.data.augment.shift == 0
    demo = load_finetune_config("configs/finetune/digits_antialias.yaml")
    assert demo.distill.enabled and demo.distill.alpha_labels == 0.0 and demo.output.name == "digits_antialias"


@pytest.mark.slow
def test_demo_antialias_acceptance(tmp_path):
    """`make demo-antialias`: distilled more shift-consistent than the original, top-1 within 1 point."""
    from zoo.train.run import finetune

    root = finetune("configs/finetune/digits_antialias.yaml", [f"output.dir={tmp_path}", "output.progress=false"]).root
    c = json.loads((root / "comparison.json").read_text())
    assert c["distilled"]["consistency"] > c["original"]["consistency"]
    assert abs(c["distilled"]["top1"] - c["original"]["top1"]) <= 1.0
    assert c["converted"]["top1"] < c["original"]["top1"] - 1.0  # blur alone costs accuracy
