"""Datasets for fine-tuning: the embedded scikit-learn digits, an ImageFolder tree, Hugging Face ``datasets``.

Three splits: ``train``; ``val`` (``data.val_fraction`` of the training images, seeded and stratified),
which selects the best epoch and drives early stopping; ``test`` (the eval folder/split, or
``data.eval_fraction`` held out), which is reported and never used for a decision. ``data.limit_*``
take seeded stratified samples (every class in proportion, at least one image each).

Every dataset yields ``(image, label, index)`` so the shift-consistency metric can key its per-image
offsets by the global image index (identical figures in 1 or N processes).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from zoo.constants import IMAGE_EXTENSIONS
from zoo.data import DatasetError, image_files, stratified_sample, stratified_split
from zoo.data.digits import digits_tensors
from zoo.train.config import DataConfig

__all__ = [
    "DataBundle",
    "DatasetError",
    "FileImages",
    "RecordImages",
    "TensorImages",
    "build_data",
    "digits_tensors",
    "scan_image_folder",
    "stratified_sample",
]


@dataclass
class DataBundle:
    """Train, validation and test datasets plus what the run reports about them."""

    train: Dataset
    val: Dataset  # model selection and early stopping
    test: Dataset  # reported only
    classes: list[str]
    description: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) of unreadable images

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class TensorImages(Dataset):
    """Images held in memory as a float tensor (N, C, H, W) in [0, 1]."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable[[Tensor], Tensor]) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        return self.transform(self.images[i]), int(self.labels[i]), i


class FileImages(Dataset):
    """Image files decoded with PIL (``mode`` "RGB" or "L") then transformed."""

    def __init__(self, files: Sequence[Path], labels: Sequence[int], mode: str, transform: Callable) -> None:
        self.files, self.labels, self.mode, self.transform = list(files), list(labels), mode, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        with Image.open(self.files[i]) as img:
            image = img.convert(self.mode)
        return self.transform(image), self.labels[i], i


class RecordImages(Dataset):
    """Rows ``indices`` of a Hugging Face dataset (or any sequence of dicts) with an image and a label column.

    Rows are read lazily, so a large dataset is never decoded up front.
    """

    def __init__(
        self, rows: Any, indices: Sequence[int], keys: tuple[str, str], mode: str, transform: Callable
    ) -> None:
        self.rows, self.indices, self.keys, self.mode, self.transform = (
            rows,
            [int(i) for i in indices],
            keys,
            mode,
            transform,
        )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        row = self.rows[self.indices[i]]
        image = row[self.keys[0]]
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        return self.transform(image.convert(self.mode)), int(row[self.keys[1]]), i


# ---------------------------------------------------------------- transforms


def _transforms(
    cfg: DataConfig, mean: Sequence[float], std: Sequence[float], train: bool, from_files: bool
) -> v2.Compose:
    size, aug = cfg.image_size, cfg.augment
    steps: list[Any] = [v2.ToImage()] if from_files else []
    if from_files and not (train and aug.random_resized_crop):
        steps += [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
    if train and aug.random_resized_crop:
        steps.append(v2.RandomResizedCrop(size, scale=(aug.rrc_scale_min, 1.0), antialias=True))
    if train and aug.shift:
        steps.append(v2.RandomCrop(size, padding=aug.shift, padding_mode="reflect"))
    if train and aug.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if train and aug.color_jitter:
        steps.append(v2.ColorJitter(aug.color_jitter, aug.color_jitter, aug.color_jitter))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


def _splits(
    labels: np.ndarray, cfg: DataConfig, test_labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train, val, test)`` positions: test from ``test_labels`` when given, else held out of ``labels``.

    ``train``/``val`` index ``labels``; ``test`` indexes ``test_labels`` (or ``labels``).
    """
    rest = np.arange(len(labels))
    if test_labels is None:
        rest, test = stratified_split(labels, cfg.eval_fraction, cfg.split_seed)
        test_labels = labels
    else:
        test = np.arange(len(test_labels))
    if len(rest) < 2:
        raise DatasetError(f"only {len(rest)} training image(s): a validation split needs at least 2")
    tr, va = stratified_split(labels[rest], cfg.val_fraction, cfg.split_seed)
    train, val = rest[tr], rest[va]
    seed = cfg.split_seed
    train = train[stratified_sample(labels[train], cfg.limit_train, seed, "data.limit_train")]
    val = val[stratified_sample(labels[val], cfg.limit_eval, seed + 1, "data.limit_eval")]
    test = test[stratified_sample(test_labels[test], cfg.limit_eval, seed + 2, "data.limit_eval")]
    return train, val, test


def _sizes(train: Dataset, val: Dataset, test: Dataset) -> str:
    return f"{len(train)} train / {len(val)} val / {len(test)} test images"


# ---------------------------------------------------------------- digits


def _digits(cfg: DataConfig, in_chans: int, mean: Sequence[float], std: Sequence[float]) -> DataBundle:
    images, labels = digits_tensors(cfg.image_size, in_chans)
    train_idx, val_idx, test_idx = _splits(labels.numpy(), cfg, None)
    plain = _transforms(cfg, mean, std, False, False)
    train = TensorImages(images[train_idx], labels[train_idx], _transforms(cfg, mean, std, True, False))
    val = TensorImages(images[val_idx], labels[val_idx], plain)
    test = TensorImages(images[test_idx], labels[test_idx], plain)
    desc = (
        f"digits (scikit-learn, 1,797 scanned 8x8 digits upsampled to {cfg.image_size}x{cfg.image_size}): "
        f"{_sizes(train, val, test)}, stratified, split seed {cfg.split_seed}"
    )
    return DataBundle(train, val, test, [str(d) for d in range(10)], desc)


# ---------------------------------------------------------------- image folders


def _check_image(path: Path) -> str | None:
    """None when PIL decodes the file completely, else the reason it cannot."""
    try:
        with Image.open(path) as img:
            img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def scan_image_folder(
    root: str | os.PathLike, classes: Sequence[str] | None = None
) -> tuple[list[Path], list[int], list[str], list[tuple[str, str]]]:
    """``(files, labels, classes, skipped)`` of a ``root/<class>/<image>`` tree.

    Every file with an image extension is decoded once; unreadable ones are skipped and returned in
    ``skipped`` as ``(path, reason)``. Raises ``DatasetError`` for a missing root, no class folders, a
    class folder without readable images, or class folders differing from ``classes``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise DatasetError(f"{root} has no class folders: expected {root}/<class name>/<image files>")
    if classes is not None and list(classes) != found:
        raise DatasetError(
            f"class folders of {root} ({', '.join(found)}) differ from the training classes ({', '.join(classes)})"
        )
    files: list[Path] = []
    labels: list[int] = []
    skipped: list[tuple[str, str]] = []
    for label, name in enumerate(found):
        candidates = image_files(root / name)
        good = 0
        for path in candidates:
            reason = _check_image(path)
            if reason is None:
                files.append(path)
                labels.append(label)
                good += 1
            else:
                skipped.append((str(path), reason))
        if good == 0:
            what = f"{len(candidates)} unreadable image(s)" if candidates else "no image files"
            raise DatasetError(
                f"class folder {root / name} has {what}; every class needs at least one readable image "
                f"(extensions: {', '.join(IMAGE_EXTENSIONS)})"
            )
    return files, labels, found, skipped


def _image_folder(cfg: DataConfig, mode: str, mean: Sequence[float], std: Sequence[float]) -> DataBundle:
    root = Path(cfg.path or "")
    if not root.is_dir():
        raise FileNotFoundError(f"data.path {root} does not exist (expected a folder of class sub-folders)")
    train_root = root / cfg.train_split if (root / cfg.train_split).is_dir() else root
    eval_root = root / cfg.eval_split
    if train_root == root and eval_root.is_dir():
        raise DatasetError(f"{root} has a {cfg.eval_split}/ folder but no {cfg.train_split}/ folder")
    files, labels, classes, skipped = scan_image_folder(train_root)
    if eval_root.is_dir():
        test_files, test_labels, _, eval_skipped = scan_image_folder(eval_root, classes)
        skipped += eval_skipped
        split = f"test: {cfg.eval_split}/ folder"
    else:
        test_files, test_labels = files, labels
        split = f"test: {cfg.eval_fraction:.0%} held out of {train_root}"
    train_idx, val_idx, test_idx = _splits(
        np.asarray(labels), cfg, np.asarray(test_labels) if eval_root.is_dir() else None
    )
    plain = _transforms(cfg, mean, std, False, True)

    def subset(src_files: list[Path], src_labels: list[int], idx: np.ndarray, transform: Callable) -> FileImages:
        return FileImages([src_files[i] for i in idx], [src_labels[i] for i in idx], mode, transform)

    train = subset(files, labels, train_idx, _transforms(cfg, mean, std, True, True))
    val = subset(files, labels, val_idx, plain)
    test = subset(test_files, test_labels, test_idx, plain)
    desc = (
        f"image folder {root}: {len(classes)} classes, {_sizes(train, val, test)} "
        f"({split}; val: {cfg.val_fraction:.0%} of the training images; split seed {cfg.split_seed})"
    )
    return DataBundle(train, val, test, classes, desc, skipped)


# ---------------------------------------------------------------- Hugging Face datasets


def _hf_rows(cfg: DataConfig) -> tuple[Any, Any | None]:
    try:
        import datasets
    except ImportError as err:
        raise RuntimeError(
            "data.source=hf needs the `datasets` package: pip install 'antialiased-zoo[datasets]'"
        ) from err
    if cfg.path:
        if not Path(cfg.path).exists():
            raise FileNotFoundError(f"data.path {cfg.path} does not exist (expected a `save_to_disk` folder)")
        ds = datasets.load_from_disk(cfg.path)
    else:
        ds = datasets.load_dataset(cfg.hf_name, cfg.hf_config)
    if not isinstance(ds, Mapping):  # a single split saved to disk
        return ds, None
    if cfg.train_split not in ds:
        raise DatasetError(f"dataset has no split {cfg.train_split!r}; splits: {', '.join(ds)}")
    return ds[cfg.train_split], ds.get(cfg.eval_split)


def _labels(rows: Any, key: str) -> np.ndarray:
    """The label column (column access on a Hugging Face dataset avoids decoding the images)."""
    try:
        column = rows[key]
    except (TypeError, KeyError, IndexError):
        column = [row[key] for row in rows]
    return np.asarray([int(v) for v in column])


def records_bundle(
    cfg: DataConfig,
    train_rows: Any,
    eval_rows: Any | None,
    classes: list[str] | None,
    mode: str,
    mean: Sequence[float],
    std: Sequence[float],
) -> DataBundle:
    """Train/eval datasets from row sequences (Hugging Face splits); no eval rows -> seeded held-out split."""
    if len(train_rows) == 0:
        raise DatasetError(f"split {cfg.train_split!r} is empty")
    first = train_rows[0]
    for key in (cfg.image_key, cfg.label_key):
        if key not in first:
            raise DatasetError(
                f"rows have no column {key!r}; columns: {', '.join(first)} (set data.image_key / data.label_key)"
            )
    labels = _labels(train_rows, cfg.label_key)
    if classes is None:
        classes = [str(c) for c in range(int(labels.max()) + 1)]
    keys = (cfg.image_key, cfg.label_key)
    if eval_rows is None:
        test_source, test_labels = train_rows, None
        split = f"test: {cfg.eval_fraction:.0%} held out of {cfg.train_split!r}"
    else:
        test_source, test_labels = eval_rows, _labels(eval_rows, cfg.label_key)
        split = f"test: split {cfg.eval_split!r}"
    train_idx, val_idx, test_idx = _splits(labels, cfg, test_labels)
    plain = _transforms(cfg, mean, std, False, True)
    train = RecordImages(train_rows, train_idx, keys, mode, _transforms(cfg, mean, std, True, True))
    val = RecordImages(train_rows, val_idx, keys, mode, plain)
    test = RecordImages(test_source, test_idx, keys, mode, plain)
    desc = (
        f"{cfg.hf_name or cfg.path}: {len(classes)} classes, {_sizes(train, val, test)} "
        f"({split}; val: {cfg.val_fraction:.0%} of the training rows; split seed {cfg.split_seed})"
    )
    return DataBundle(train, val, test, list(classes), desc)


def _hf(cfg: DataConfig, mode: str, mean: Sequence[float], std: Sequence[float]) -> DataBundle:
    train_rows, eval_rows = _hf_rows(cfg)
    feature = getattr(train_rows, "features", {}).get(cfg.label_key)
    classes = list(feature.names) if hasattr(feature, "names") else None
    return records_bundle(cfg, train_rows, eval_rows, classes, mode, mean, std)


def build_data(cfg: DataConfig, in_chans: int, mean: Sequence[float], std: Sequence[float]) -> DataBundle:
    """The train/eval datasets of ``cfg`` (images normalized with ``mean``/``std``)."""
    if len(mean) != in_chans or len(std) != in_chans:
        raise DatasetError(
            f"data.mean/data.std need {in_chans} values (one per input channel), got {list(mean)} / {list(std)}"
        )
    mode = "L" if in_chans == 1 else "RGB"
    if cfg.source != "digits" and in_chans not in (1, 3):
        raise DatasetError(f"image files give 1 (L) or 3 (RGB) channels; model.in_chans={in_chans} is not supported")
    if cfg.source == "digits":
        return _digits(cfg, in_chans, mean, std)
    if cfg.source == "imagefolder":
        return _image_folder(cfg, mode, mean, std)
    return _hf(cfg, mode, mean, std)
