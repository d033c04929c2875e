"""Data sources and the sharded, seeded batch stream."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.distributed import shard_positions
from zoo.eval.data import EmbeddedSource, HFSource, eval_transform, open_source, stream_batches

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _write(path, value: int, size=(20, 14)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)


def test_image_folder_labels_and_flat_sources(tmp_path) -> None:
    for cls, value in (("b_cls", 10), ("a_cls", 200)):
        for k in range(2):
            _write(tmp_path / "folder" / cls / f"{k}.png", value)
    folder = open_source(str(tmp_path / "folder"))
    assert folder.classes == ["a_cls", "b_cls"] and len(folder) == 4
    image, label = folder.load(0)
    assert label == 0 and image.getpixel((0, 0)) == (200, 200, 200)
    assert len(open_source(str(tmp_path / "folder" / "a_cls"))) == 2  # flat directory, no labels
    assert open_source(str(tmp_path / "folder" / "**" / "*.png")).load(0)[1] is None
    listing = tmp_path / "list.txt"
    listing.write_text("# images\nfolder/a_cls/0.png\nfolder/b_cls/1.png\n")
    assert len(open_source(str(listing))) == 2
    with pytest.raises(FileNotFoundError, match="not found; use"):
        open_source(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no image files match"):
        open_source(str(tmp_path / "*.jpg"))


def test_embedded_photos_are_rgb_squares() -> None:
    source = open_source(None)
    assert isinstance(source, EmbeddedSource) and len(source) == 120
    image, label = source.load(7)
    assert image.mode == "RGB" and image.size[0] == image.size[1] and label is None
    with pytest.raises(ValueError, match="unknown embedded photo"):
        EmbeddedSource(photos=["lena"])


def test_hf_source_adapter_and_missing_extra(monkeypatch) -> None:
    rows = [{"image": Image.new("RGB", (8, 8), (k, k, k)), "label": k % 2} for k in range(3)]
    source = HFSource(rows, name="fake")
    assert len(source) == 3 and source.load(2)[1] == 0
    assert HFSource(rows, label_key="nope").load(1)[1] is None and source.classes is None

    class Labelled(list):  # a datasets.Dataset exposes its ClassLabel names under .features
        features = {"label": type("ClassLabel", (), {"names": ["cat", "dog"]})()}

    assert HFSource(Labelled(rows)).classes == ["cat", "dog"]
    with pytest.raises(ValueError, match="no column 'img'"):
        HFSource(rows, image_key="img")
    monkeypatch.setitem(sys.modules, "datasets", None)  # the optional extra is not installed
    with pytest.raises(RuntimeError, match=r"pip install 'antialiased-zoo\[datasets\]'"):
        open_source("hf:some/dataset")


def test_stream_is_seeded_limited_and_batch_independent(tmp_path) -> None:
    for k in range(7):
        _write(tmp_path / f"{k}.png", 30 * k)
    source = open_source(str(tmp_path))
    transform = eval_transform(12, 12, MEAN, STD)

    def collect(batch_size: int, seed: int = 0) -> tuple[torch.Tensor, list[int]]:
        parts = list(stream_batches(source, transform, batch_size=batch_size, limit=5, seed=seed))
        return torch.cat([p[0] for p in parts]), [i for p in parts for i in p[2].tolist()]

    images, positions = collect(2)
    assert positions == [0, 1, 2, 3, 4] and images.shape == (5, 3, 12, 12)
    assert torch.equal(collect(5)[0], images)
    assert not torch.equal(collect(2, seed=1)[0], images)  # another seed, another random subset/order


def test_shards_keep_pairs_and_cover_everything() -> None:
    shards = [shard_positions(11, r, 3) for r in range(3)]
    assert sorted(p for shard in shards for p in shard) == list(range(11))
    for shard in shards:
        assert all((p ^ 1) in shard for p in shard if (p ^ 1) < 11)
    with pytest.raises(ValueError, match="rank"):
        shard_positions(4, 2, 2)


def test_embedded_set_uses_every_distinct_skimage_photo_and_counts_them() -> None:
    from zoo.eval.data import EMBEDDED_DISTINCT, EmbeddedSource, image_order

    source = EmbeddedSource()
    photos = {source.group(i) for i in range(len(source))}
    assert EMBEDDED_DISTINCT == len(photos) == 19 and "chelsea" in photos and "camera" in photos
    assert "cat" not in photos  # skimage's cat() is chelsea again
    first = [source.group(i) for i in image_order(source, seed=3)[:19]]
    assert len(set(first)) == 19  # a limited run sees as many distinct photos as it can
    image, label = source.load(image_order(source)[0])
    assert image.mode == "RGB" and label is None
