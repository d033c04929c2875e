"""Segmentation data: a folder of images and masks, and the embedded pasted-digits demo set.

Folder layout: ``root/images/<stem>.<ext>`` and ``root/masks/<stem>.png`` with matching stems; a mask is a
single-channel PNG (mode ``L``, ``P`` or ``I``) of class ids, the same size as its image (``255`` = ignored).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from zoo.data.digits import digits_tensors
from zoo.data.files import image_files

__all__ = ["SegmentationFolder", "pasted_digits", "scan_segmentation_folder"]


def scan_segmentation_folder(root: str | os.PathLike) -> list[tuple[Path, Path]]:
    """The ``(image, mask)`` pairs of ``root`` (``images/`` and ``masks/`` with matching stems), sorted by stem."""
    root = Path(root)
    img_dir, mask_dir = root / "images", root / "masks"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"segmentation folder {root} needs images/ and masks/ subfolders; {d} is missing")
    images = {p.stem: p for p in image_files(img_dir, recursive=False)}
    masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() == ".png"}
    if not images:
        raise FileNotFoundError(f"no images in {img_dir}")
    lonely = sorted(set(images) - set(masks))
    if lonely:
        raise ValueError(f"{len(lonely)} image(s) in {img_dir} without a mask masks/<stem>.png, e.g. {lonely[0]!r}")
    extra = sorted(set(masks) - set(images))
    if extra:
        raise ValueError(f"{len(extra)} mask(s) in {mask_dir} without an image, e.g. {extra[0]!r}")
    return [(images[s], masks[s]) for s in sorted(images)]


class SegmentationFolder(Dataset):
    """``(image (3, H, W) float in [0, 1], mask (H, W) long)`` pairs of a folder (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, num_classes: int | None = None, ignore_index: int = 255) -> None:
        self.pairs = scan_segmentation_folder(root)
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        img_path, mask_path = self.pairs[i]
        with Image.open(img_path) as im:
            image = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
        with Image.open(mask_path) as m:
            if m.mode not in ("L", "P", "I", "I;16"):
                raise ValueError(f"mask {mask_path} must be a single-channel PNG of class ids, got mode {m.mode}")
            mask = torch.from_numpy(np.asarray(m, dtype=np.int64).copy())
        if tuple(mask.shape) != tuple(image.shape[-2:]):
            raise ValueError(f"mask {mask_path} is {tuple(mask.shape)}, its image {tuple(image.shape[-2:])} (H, W)")
        if self.num_classes is not None:
            bad = (mask != self.ignore_index) & ((mask < 0) | (mask >= self.num_classes))
            if bool(bad.any()):
                raise ValueError(f"mask {mask_path} has class id {int(mask[bad][0])}; valid: 0..{self.num_classes - 1} "
                                 f"or {self.ignore_index} (ignored)")  # fmt: skip
        return image, mask


def pasted_digits(
    count: int, size: int = 64, digit_size: int = 16, per_image: int = 2, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """``count`` canvases ``(N, 3, size, size)`` with ``per_image`` scikit-learn digits pasted at random positions.

    Masks ``(N, size, size)``: background 0, a digit pixel (intensity > 0.25) is its class + 1 (classes 1..10);
    later digits are pasted over earlier ones. Deterministic for a given ``seed``.
    """
    digits, labels = digits_tensors(digit_size, 1)
    gen = torch.Generator().manual_seed(seed)
    images = torch.zeros(count, 1, size, size)
    masks = torch.zeros(count, size, size, dtype=torch.long)
    pick = torch.randint(0, len(digits), (count, per_image), generator=gen)
    pos = torch.randint(0, size - digit_size + 1, (count, per_image, 2), generator=gen)
    for n in range(count):
        for k in range(per_image):
            d = digits[pick[n, k], 0]
            top, left = int(pos[n, k, 0]), int(pos[n, k, 1])
            region = images[n, 0, top : top + digit_size, left : left + digit_size]
            ink = d > 0.25
            region[ink] = d[ink]
            masks[n, top : top + digit_size, left : left + digit_size][ink] = int(labels[pick[n, k]]) + 1
    return images.expand(-1, 3, -1, -1).contiguous(), masks
