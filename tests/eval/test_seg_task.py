"""``zoo.eval.segmentation_task``: known answers on an oracle and a constant predictor, the sign of the paired
comparison, the class-count checks and the folder loader's errors."""

from __future__ import annotations

import numpy as np
import pytest
from support.seg_fixtures import Constant, Oracle, make_seg_folder

from zoo.eval.segmentation import random_shifts
from zoo.eval.segmentation_task import evaluate_models, format_table, load_segmentation_data

SHIFTS = random_shifts(3, 6)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory):
    return make_seg_folder(tmp_path_factory.mktemp("seg") / "data", count=8, classes=3)


def test_oracle_scores_100_and_constant_its_computed_miou(folder) -> None:
    data = load_segmentation_data(str(folder))
    assert data.max_id == 2 and len(data.pairs) == 8
    report = evaluate_models({"oracle": Oracle(3), "const": Constant(3, 0)}, data, shifts=SHIFTS, rounds=200)
    oracle, const = report["models"]["oracle"], report["models"]["const"]
    assert report["num_classes"] == 3
    assert oracle.n == 8 and oracle.miou == 1.0 and oracle.consistency == 1.0
    assert oracle.iou_per_class == [1.0, 1.0, 1.0]
    masks = np.stack([m.numpy() for _, m in data.pairs])
    share0 = float((masks == 0).mean())  # IoU of class 0 = TP / (TP + FP) = n0 / N; classes 1, 2: 0
    assert const.iou_per_class == pytest.approx([share0, 0.0, 0.0])
    assert const.miou == pytest.approx(share0 / 3)
    assert const.consistency == 1.0  # a constant map is shift-equivariant
    lo, hi = const.miou_ci95
    assert lo <= const.miou <= hi


def test_paired_comparison_sign(folder) -> None:
    data = load_segmentation_data(str(folder))
    worse = evaluate_models({"oracle": Oracle(3), "const": Constant(3)}, data, shifts=SHIFTS, rounds=200)
    better = evaluate_models({"const": Constant(3), "oracle": Oracle(3)}, data, shifts=SHIFTS, rounds=200)
    down, up = worse["paired"]["const"]["iou"], better["paired"]["oracle"]["iou"]
    assert down["diff"] < 0 < up["diff"] and down["diff"] == pytest.approx(-up["diff"])
    assert down["ci95"][1] < 0 and down["p"] < 0.05  # every image is worse: 2 / 2^8 is the smallest p
    assert worse["paired"]["const"]["consistency"]["diff"] == 0.0
    table = format_table(worse)
    assert "| oracle | 100.0 [" in table and "vs oracle" in table


def test_class_count_mismatch_is_refused(folder) -> None:
    data = load_segmentation_data(str(folder))
    with pytest.raises(ValueError, match="class count mismatch: the masks hold class id 2, the models predict 2"):
        evaluate_models({"small": Oracle(2)}, data, shifts=SHIFTS)
    with pytest.raises(ValueError, match="class count mismatch between the models"):
        evaluate_models({"a": Oracle(3), "b": Oracle(4)}, data, shifts=SHIFTS)
    digits = load_segmentation_data("digits", count=2, size=32)
    with pytest.raises(ValueError, match="the models predict 3 classes, the data has 11"):
        evaluate_models({"a": Oracle(3)}, digits, shifts=SHIFTS)


def test_folder_errors(tmp_path) -> None:
    root = make_seg_folder(tmp_path / "d", count=2)
    (root / "masks" / "im01.png").unlink()
    with pytest.raises(ValueError, match="without a mask"):
        load_segmentation_data(str(root))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_segmentation_data(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="pasted digits have 11 classes"):
        load_segmentation_data("digits", count=2, num_classes=5)


def test_checkpoint_folder_loads_through_the_factory_and_a_wrong_name_is_one_line(tmp_path) -> None:
    import torch

    import zoo
    from zoo.eval.segmentation_task import load_checkpoint
    from zoo.weights.io import save_model_dir

    torch.manual_seed(0)
    saved = zoo.create("unet_resnet18_aa4", num_classes=5)
    save_model_dir(saved, tmp_path / "run", name="unet_resnet18_aa4")
    loaded = load_checkpoint("unet_resnet18_aa4", tmp_path / "run")
    assert loaded.num_classes == 5
    assert all(torch.equal(v, saved.state_dict()[k]) for k, v in loaded.state_dict().items())
    baseline = r"^--weights: .*unet_resnet18 is the torchvision baseline.*use unet_resnet18_aa4$"
    with pytest.raises(ValueError, match=baseline):
        load_checkpoint("unet_resnet18", tmp_path / "run")
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_checkpoint("unet_resnet18_aa4", tmp_path)
