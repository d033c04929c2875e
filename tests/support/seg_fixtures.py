"""A tiny segmentation folder whose masks are a pointwise function of the image (so an oracle exists)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn


def quantize(red: np.ndarray | Tensor, classes: int) -> np.ndarray | Tensor:
    """Class of a pixel: its red value (0..255) in ``classes`` equal bins."""
    return (red * classes) // 256


def make_seg_folder(root: Path, count: int = 8, size: int = 32, classes: int = 3, seed: int = 0) -> Path:
    """``root/images/*.png`` of random blocks and ``root/masks/*.png`` = ``quantize(red)``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        blocks = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        img = np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))
        Image.fromarray(img).save(root / "images" / f"im{i:02d}.png")
        Image.fromarray(quantize(img[..., 0].astype(np.int64), classes).astype(np.uint8), mode="L").save(
            root / "masks" / f"im{i:02d}.png"
        )
    return root


class Oracle(nn.Module):
    """One-hot logits of ``quantize(red)``: the masks of ``make_seg_folder`` exactly (a pointwise model)."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.num_classes = classes

    def forward(self, x: Tensor) -> Tensor:
        red = torch.round(x[:, 0] * 255).long()
        return nn.functional.one_hot(quantize(red, self.num_classes), self.num_classes).permute(0, 3, 1, 2).float()


class Constant(nn.Module):
    """Predicts class ``k`` everywhere."""

    def __init__(self, classes: int, k: int = 0) -> None:
        super().__init__()
        self.num_classes, self.k = classes, k

    def forward(self, x: Tensor) -> Tensor:
        out = torch.zeros(x.shape[0], self.num_classes, *x.shape[-2:])
        out[:, self.k] = 1.0
        return out
