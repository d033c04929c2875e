"""Image sources for evaluation, streamed in batches (no dataset is ever held in memory).

Sources: an ImageFolder directory (``root/class/xxx.jpg``, labels = sorted class folders), a flat
directory / glob / list file of images (no labels), a Hugging Face ``datasets`` dataset (optional
extra ``datasets``), and the embedded default: the real RGB photographs shipped in scikit-image.
"""

from __future__ import annotations

import functools
import glob as globlib
import importlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from zoo.data import image_files, is_image_file
from zoo.distributed import rank_world, shard_positions

__all__ = [
    "EMBEDDED_DISTINCT",
    "EMBEDDED_PHOTOS",
    "EMBEDDED_VIEWS",
    "EmbeddedSource",
    "FileListSource",
    "FolderSource",
    "HFSource",
    "ImageSource",
    "eval_transform",
    "image_order",
    "open_source",
    "position_groups",
    "stream_batches",
]

# Every distinct photograph scikit-image ships without a download (synthetic images, the binary
# horse silhouette and `cat`, a second copy of `chelsea`, are left out): (name, loader attribute,
# item of a tuple-returning loader or None, photo). Grey photos are repeated into 3 channels; the two
# stereo-motorcycle frames are one scene, so they share the photo (cluster) label.
EMBEDDED_PHOTOS: tuple[tuple[str, str, int | None, str], ...] = (
    ("astronaut", "astronaut", None, "astronaut"),
    ("brick", "brick", None, "brick"),
    ("camera", "camera", None, "camera"),
    ("cell", "cell", None, "cell"),
    ("chelsea", "chelsea", None, "chelsea"),
    ("clock", "clock", None, "clock"),
    ("coffee", "coffee", None, "coffee"),
    ("coins", "coins", None, "coins"),
    ("grass", "grass", None, "grass"),
    ("gravel", "gravel", None, "gravel"),
    ("hubble_deep_field", "hubble_deep_field", None, "hubble_deep_field"),
    ("immunohistochemistry", "immunohistochemistry", None, "immunohistochemistry"),
    ("microaneurysms", "microaneurysms", None, "microaneurysms"),
    ("moon", "moon", None, "moon"),
    ("motorcycle_left", "stereo_motorcycle", 0, "stereo_motorcycle"),
    ("motorcycle_right", "stereo_motorcycle", 1, "stereo_motorcycle"),
    ("page", "page", None, "page"),
    ("retina", "retina", None, "retina"),
    ("rocket", "rocket", None, "rocket"),
    ("text", "text", None, "text"),
)
EMBEDDED_DISTINCT = len({p[3] for p in EMBEDDED_PHOTOS})  # 19 distinct photos
# square views of each photo: (name, side as a fraction of the short side, centre y, centre x, mirrored)
EMBEDDED_VIEWS: tuple[tuple[str, float, float, float, bool], ...] = (
    ("centre", 1.0, 0.5, 0.5, False),
    ("centre_flip", 1.0, 0.5, 0.5, True),
    ("zoom_tl", 0.7, 0.4, 0.4, False),
    ("zoom_br", 0.7, 0.6, 0.6, False),
    ("zoom_tr_flip", 0.7, 0.4, 0.6, True),
    ("zoom_bl_flip", 0.7, 0.6, 0.4, True),
)


class ImageSource(Protocol):
    """Random access to ``(RGB PIL image, label or None)`` by position."""

    name: str

    def __len__(self) -> int: ...

    def load(self, i: int) -> tuple[Image.Image, int | None]: ...


def image_order(source: ImageSource, *, shuffle: bool = True, seed: int = 0, limit: int | None = None) -> list[int]:
    """The evaluation order of ``source`` (item numbers; position k in it is global image index k).

    ``shuffle``: a seeded permutation. When the source has clusters (``source.group(i)``, e.g. the
    views of one photo), the permutation is dealt round-robin over the clusters, so the first images
    come from as many distinct photos as possible and consecutive pairs (2j, 2j+1) from distinct ones.
    """
    n = len(source)
    order = (
        np.random.default_rng(np.random.SeedSequence([seed, 1])).permutation(n).tolist() if shuffle else list(range(n))
    )
    group = getattr(source, "group", None)
    if group is not None:
        first: dict[Any, int] = {}
        seen: dict[Any, int] = {}
        keyed = []
        for i in order:
            g = group(i)
            first.setdefault(g, len(first))
            keyed.append((seen.get(g, 0), first[g], i))
            seen[g] = seen.get(g, 0) + 1
        order = [i for _, _, i in sorted(keyed)]
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1 image, got {limit}")
        order = order[:limit]
    return order


def position_groups(source: ImageSource, order: Sequence[int]) -> list[Any]:
    """The cluster label of every position of ``order`` (the item itself when the source has none)."""
    group = getattr(source, "group", None)
    return [group(i) if group is not None else i for i in order]


def _rgb(path: str | Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


class FileListSource:
    """A list of image files (no labels)."""

    def __init__(self, paths: Sequence[str | Path], name: str = "files") -> None:
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError(f"no image files given ({name})")
        missing = [str(p) for p in self.paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"image file(s) not found: {', '.join(missing[:5])}")
        self.name = name

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> tuple[Image.Image, int | None]:
        return _rgb(self.paths[i]), None


class FolderSource:
    """``root/<class>/<image>`` (torchvision ImageFolder layout); label = index of the sorted class name."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        self.classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        self.items = [(p, label) for label, cls in enumerate(self.classes) for p in image_files(root / cls)]
        if not self.items:
            raise ValueError(f"{root}: no images in class sub-folders (expected root/<class>/<image>)")
        self.name = root.name

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> tuple[Image.Image, int | None]:
        path, label = self.items[i]
        return _rgb(path), label


class HFSource:
    """A Hugging Face ``datasets`` dataset (or anything indexable yielding dicts of image + label)."""

    def __init__(self, dataset: Any, image_key: str = "image", label_key: str | None = "label", name: str = "hf"):
        self.dataset, self.image_key, self.name = dataset, image_key, name
        first = dataset[0] if len(dataset) else {}
        if image_key not in first:
            raise ValueError(f"dataset {name}: no column {image_key!r}; columns: {', '.join(first)}")
        self.label_key = label_key if label_key and label_key in first else None
        feature = getattr(dataset, "features", {}).get(self.label_key) if self.label_key else None
        self.classes: list[str] | None = list(feature.names) if hasattr(feature, "names") else None

    @classmethod
    def open(cls, spec: str, split: str = "validation", **kwargs: Any) -> HFSource:
        """``spec`` = a dataset saved with ``save_to_disk`` or a Hub name (``name[:split]``)."""
        try:
            datasets = importlib.import_module("datasets")
        except ImportError as err:
            raise RuntimeError(
                "Hugging Face datasets are an optional extra: pip install 'antialiased-zoo[datasets]'"
            ) from err
        if Path(spec).exists():
            ds = datasets.load_from_disk(spec)
            if hasattr(ds, "keys"):  # DatasetDict
                if split not in ds:
                    raise ValueError(f"{spec}: no split {split!r}; splits: {', '.join(ds.keys())}")
                ds = ds[split]
        else:
            name, _, maybe_split = spec.partition(":")
            ds = datasets.load_dataset(name, split=maybe_split or split)
        return cls(ds, name=spec, **kwargs)

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, i: int) -> tuple[Image.Image, int | None]:
        row = self.dataset[int(i)]
        image = row[self.image_key]
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        label = int(row[self.label_key]) if self.label_key is not None else None
        return image.convert("RGB"), label


@functools.lru_cache(maxsize=len(EMBEDDED_PHOTOS))
def _photo(attr: str, item: int | None) -> np.ndarray:
    """One scikit-image photo as (H, W, 3) uint8 (cached: the photos take ~15 MB)."""
    array = getattr(importlib.import_module("skimage.data"), attr)()
    array = np.asarray(array[item] if item is not None else array)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3].astype(np.uint8))


class EmbeddedSource:
    """The photographs of scikit-image, each in the square views of ``EMBEDDED_VIEWS``.

    ``group(i)`` is the photo an item shows (views of one photo are one cluster for the intervals).
    """

    name = "embedded"

    def __init__(self, photos: Sequence[str] | None = None, views: Sequence[str] | None = None) -> None:
        known = {p[0]: p for p in EMBEDDED_PHOTOS}
        view_table = {v[0]: v for v in EMBEDDED_VIEWS}
        photos = list(photos or known)
        views = list(views or view_table)
        bad = [p for p in photos if p not in known] + [v for v in views if v not in view_table]
        if bad:
            raise ValueError(
                f"unknown embedded photo/view {bad}; photos: {', '.join(known)}; views: {', '.join(view_table)}"
            )
        self.items = [(known[p], view_table[v]) for p in photos for v in views]

    def __len__(self) -> int:
        return len(self.items)

    def group(self, i: int) -> str:
        return self.items[i][0][3]

    def load(self, i: int) -> tuple[Image.Image, int | None]:
        (_, attr, item, _photo_name), (_, frac, cy, cx, flip) = self.items[i]
        array = _photo(attr, item)
        h, w = array.shape[:2]
        side = round(frac * min(h, w))
        top = min(max(round(cy * h - side / 2), 0), h - side)
        left = min(max(round(cx * w - side / 2), 0), w - side)
        image = Image.fromarray(np.ascontiguousarray(array[top : top + side, left : left + side, :3]))
        return (image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else image), None


def open_source(
    spec: str | None, *, split: str = "validation", image_key: str = "image", label_key: str | None = "label"
) -> ImageSource:
    """A source from a string: ``None``/``"embedded"``, ``hf:NAME[:SPLIT]`` or ``hf:SAVED_DIR``, an
    ImageFolder directory, a flat directory of images, a glob (``'photos/**/*.jpg'``), a ``.txt`` list of
    paths (one per line, relative to the list), or one image file.
    """
    if spec is None or spec in ("embedded", "skimage"):
        return EmbeddedSource()
    if spec.startswith("hf:"):
        return HFSource.open(spec[3:], split=split, image_key=image_key, label_key=label_key)
    path = Path(spec).expanduser()
    if any(ch in spec for ch in "*?["):
        files = sorted(p for p in map(Path, globlib.glob(spec, recursive=True)) if is_image_file(p))
        if not files:
            raise FileNotFoundError(f"no image files match {spec!r}")
        return FileListSource(files, name=spec)
    if path.is_dir():
        if any(d.is_dir() and not d.name.startswith(".") for d in path.iterdir()):
            return FolderSource(path)
        return FileListSource(image_files(path, recursive=False), name=path.name)
    if path.is_file() and path.suffix.lower() == ".txt":
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        return FileListSource([p if Path(p).is_absolute() else path.parent / p for p in lines], name=path.name)
    if is_image_file(path):
        return FileListSource([path], name=path.name)
    raise FileNotFoundError(
        f"data {spec!r} not found; use 'embedded', hf:NAME[:SPLIT], an ImageFolder or image directory, "
        "a glob, a .txt list of image paths or an image file"
    )


def eval_transform(resize: int, crop: int, mean: Sequence[float], std: Sequence[float]) -> transforms.Compose:
    """Resize(short side) + CenterCrop + ToTensor + Normalize (bilinear, antialiased)."""
    if crop > resize:
        raise ValueError(f"crop ({crop}) must not exceed resize ({resize})")
    return transforms.Compose(
        [
            transforms.Resize(resize, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
            transforms.CenterCrop(crop),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


@dataclass
class _Shard(Dataset):
    source: ImageSource
    order: list[int]
    positions: list[int]
    transform: Any

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int) -> tuple[Tensor, int, int]:
        position = self.positions[k]
        image, label = self.source.load(self.order[position])
        return self.transform(image), -1 if label is None else label, position


def _collate(items: list[tuple[Tensor, int, int]]) -> tuple[Tensor, Tensor | None, Tensor]:
    images = torch.stack([it[0] for it in items])
    labels = torch.tensor([it[1] for it in items])
    return images, (None if (labels < 0).any() else labels), torch.tensor([it[2] for it in items])


def stream_batches(
    source: ImageSource,
    transform: Any,
    *,
    batch_size: int = 16,
    limit: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    shard: bool = True,
) -> Iterator[tuple[Tensor, Tensor | None, Tensor]]:
    """Yield ``(images, labels_or_None, positions)`` of this process's shard.

    The image order is :func:`image_order` (a seeded permutation, cluster-interleaved), cut to ``limit``; an image's
    position in it is its global index (the key of its random offsets). Under torch.distributed
    each rank reads only its own blocks of 2 positions (``shard=True``).
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    order = image_order(source, shuffle=shuffle, seed=seed, limit=limit)
    rank, world = rank_world() if shard else (0, 1)
    positions = shard_positions(len(order), rank, world)
    loader = DataLoader(
        _Shard(source, order, positions, transform),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
    )
    yield from loader
