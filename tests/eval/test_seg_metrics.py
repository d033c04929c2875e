"""Known answers of the dense metrics: mIoU of a hand-made case, shift consistency of constructed models."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from zoo.eval.segmentation import (
    confusion_matrices,
    evaluate_segmentation,
    iou_per_class,
    miou,
    paired_segmentation,
    shift_agreement,
)


def test_miou_of_a_hand_made_pair() -> None:
    target = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1], [0, 0, 1, 2], [2, 2, 0, 0]]])
    conf = confusion_matrices(pred, target, 3)[0]
    # class 0: TP 3, FP 1 (a 2 predicted 0), FN 1 -> 3/5; class 1: TP 3, FP 1, FN 1 -> 3/5; class 2: TP 2, FP 1, FN 1
    assert iou_per_class(conf).tolist() == pytest.approx([3 / 5, 3 / 5, 2 / 4])
    assert miou(conf) == pytest.approx((0.6 + 0.6 + 0.5) / 3)
    assert int(conf.sum()) == 11  # the ignored pixel is not counted


def test_absent_classes_are_left_out_and_bad_masks_refused() -> None:
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    assert miou(confusion_matrices(target, target, 4)[0]) == 1.0
    with pytest.raises(ValueError, match=r"class ids 0\.\.3"):
        confusion_matrices(target, target + 7, 4)


class Pointwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class FixedMap(nn.Module):
    """Predicts class 1 on the left half of the image, 0 on the right half, whatever the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[-1]
        left = (torch.arange(w) < w // 2).float().expand(x.shape[0], x.shape[-2], w)
        return torch.stack([1 - left, left], 1)


def test_consistency_is_one_for_a_pointwise_model() -> None:
    x = torch.randn(3, 3, 16, 16)
    assert shift_agreement(Pointwise(), x, [(1, 0), (3, -5), (0, 7)]).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(("dx", "expected"), [(1, 1 - 2 / 16), (3, 1 - 6 / 16), (8, 0.0)])
def test_consistency_of_a_fixed_map(dx: int, expected: float) -> None:
    x = torch.randn(2, 3, 8, 16)
    assert shift_agreement(FixedMap(), x, [(0, dx)]).tolist() == pytest.approx([expected] * 2)
    # vertical shifts leave the half/half map unchanged
    assert shift_agreement(FixedMap(), x, [(5, 0), (0, dx)]).tolist() == pytest.approx([(1 + expected) / 2] * 2)


def test_evaluate_and_pair() -> None:
    torch.manual_seed(0)
    batches = [(torch.randn(4, 3, 8, 16), torch.randint(0, 2, (4, 8, 16))) for _ in range(3)]
    fixed = evaluate_segmentation(FixedMap(), batches, 2, shifts=[(0, 2)], rounds=200)
    assert fixed.n == 12 and fixed.consistency == pytest.approx(1 - 4 / 16)
    lo, hi = fixed.miou_ci95
    assert lo <= fixed.miou <= hi and not math.isnan(lo)
    same = paired_segmentation(fixed, fixed, rounds=200)
    assert same["consistency"]["diff"] == 0.0 and same["iou"]["diff"] == 0.0
