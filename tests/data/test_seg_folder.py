"""Segmentation folders (pairs, one-line errors) and the pasted-digits demo set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.data.segmentation import SegmentationFolder, pasted_digits


def _write(root: Path, stems: list[str], mask_stems: list[str] | None = None, mask_value: int = 1) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for s in stems:
        Image.fromarray(np.full((6, 5, 3), 100, np.uint8)).save(root / "images" / f"{s}.jpg")
    for s in stems if mask_stems is None else mask_stems:
        mask = np.zeros((6, 5), np.uint8)
        mask[2:4, 1:3] = mask_value
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{s}.png")


def test_folder_pairs_by_stem(tmp_path: Path) -> None:
    _write(tmp_path, ["b", "a"])
    data = SegmentationFolder(tmp_path, num_classes=3)
    assert [p[0].stem for p in data.pairs] == ["a", "b"]
    image, mask = data[0]
    assert image.shape == (3, 6, 5) and mask.dtype == torch.long and int(mask.sum()) == 4


@pytest.mark.parametrize(
    ("stems", "masks", "match"),
    [(["a", "b"], ["a"], "without a mask"), (["a"], ["a", "c"], "without an image")],
)
def test_folder_mismatches(tmp_path: Path, stems: list[str], masks: list[str], match: str) -> None:
    _write(tmp_path, stems, masks)
    with pytest.raises(ValueError, match=match):
        SegmentationFolder(tmp_path)


def test_folder_missing_subfolder_and_bad_class(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="needs images/ and masks/"):
        SegmentationFolder(tmp_path)
    _write(tmp_path / "x", ["a"], mask_value=9)
    with pytest.raises(ValueError, match=r"class id 9; valid: 0\.\.2"):
        SegmentationFolder(tmp_path / "x", num_classes=3)[0]


def test_pasted_digits_masks_match_the_ink() -> None:
    images, masks = pasted_digits(8, seed=3)
    assert images.shape == (8, 3, 64, 64) and masks.shape == (8, 64, 64)
    assert torch.equal((masks > 0), images[:, 0] > 0.25)
    assert int(masks.max()) <= 10 and set(masks.unique().tolist()) - {0}
    again, _ = pasted_digits(8, seed=3)
    assert torch.equal(images, again)
