"""The segmentation training step: it learns a pointwise task, and refuses mismatched sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.train.segmentation import segmentation_loss, train_segmentation


def test_loss_decreases_on_a_pointwise_task() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 3, 8, 8)
    y = (x[:, 0] > 0).long()
    model = nn.Conv2d(3, 2, 1)
    losses = train_segmentation(model, x, y, epochs=5, batch_size=16, lr=0.1, progress=False)
    assert losses[-1] < 0.5 * losses[0]


def test_size_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        segmentation_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, dtype=torch.long))
