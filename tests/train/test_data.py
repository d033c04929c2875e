from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.data import DatasetError, stratified_sample
from zoo.train.config import DataConfig
from zoo.train.data import build_data, digits_tensors, records_bundle, scan_image_folder

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def _img(path, color, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_digits_are_the_real_scans_upsampled():
    from sklearn.datasets import load_digits

    images, labels = digits_tensors(32, 3)
    assert images.shape == (1797, 3, 32, 32) and labels.shape == (1797,)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert torch.equal(labels, torch.as_tensor(load_digits().target))
    # 8x8 -> 32x32 bilinear keeps the mean intensity of each scan (up to border effects)
    raw = torch.as_tensor(load_digits().images[:5] / 16.0, dtype=torch.float32)
    assert torch.allclose(images[:5, 0].mean((1, 2)), raw.mean((1, 2)), atol=0.02)


def test_digits_split_is_seeded_stratified_and_normalized():
    cfg = DataConfig(image_size=16)
    a, b = build_data(cfg, 3, MEAN, STD), build_data(cfg, 3, MEAN, STD)
    assert (len(a.train), len(a.val), len(a.test)) == (1077, 270, 450)
    assert torch.equal(a.test.labels, b.test.labels) and torch.equal(a.val.labels, b.val.labels)
    assert np.bincount(a.test.labels.numpy()).min() >= 43  # every digit is in the test set
    assert np.bincount(a.val.labels.numpy()).min() >= 25  # and in the validation set
    other = build_data(DataConfig(image_size=16, split_seed=1), 3, MEAN, STD)
    assert not torch.equal(a.test.labels, other.test.labels)
    x, y, i = a.test[0]
    raw = a.test.images[0]
    assert torch.allclose(x, (raw - 0.5) / 0.25)
    assert (int(y), i) == (int(a.test.labels[0]), 0)


def test_shift_augmentation_translates_only_when_enabled():
    off = build_data(DataConfig(image_size=16, limit_train=10), 1, [0.0], [1.0])
    assert all(torch.equal(off.train[0][0], off.train.images[0]) for _ in range(4))
    cfg = DataConfig(image_size=16, limit_train=10)
    cfg.augment.shift = 3
    on = build_data(cfg, 1, [0.0], [1.0])
    torch.manual_seed(0)
    outs = [on.train[0][0] for _ in range(8)]
    assert any(not torch.equal(o, on.train.images[0]) for o in outs)
    assert all(o.shape == (1, 16, 16) for o in outs)


def test_image_folder_with_val_split_and_unreadable_files(tmp_path):
    for split in ("train", "val"):
        for k, cls in enumerate(("cat", "dog")):
            for j in range(3):
                _img(tmp_path / split / cls / f"{j}.png", (40 * k, 10 * j, 0))
    (tmp_path / "train" / "cat" / "broken.jpg").write_bytes(b"not an image at all")
    good = tmp_path / "train" / "dog" / "0.png"
    (tmp_path / "train" / "dog" / "truncated.png").write_bytes(good.read_bytes()[:40])
    (tmp_path / "train" / "dog" / "notes.txt").write_text("ignored: not an image extension")
    cfg = DataConfig(source="imagefolder", path=str(tmp_path), image_size=8)
    bundle = build_data(cfg, 3, MEAN, STD)
    assert bundle.classes == ["cat", "dog"]
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (4, 2, 6)  # val: 20% of train/, stratified
    assert sorted(bundle.val.labels) == [0, 1] and sorted(bundle.test.labels) == [0, 0, 0, 1, 1, 1]
    assert not set(bundle.train.files) & set(bundle.val.files)
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in bundle.skipped) == ["broken.jpg", "truncated.png"]
    x, y, i = bundle.train[3]
    assert x.shape == (3, 8, 8) and y == bundle.train.labels[3] and i == 3


def test_image_folder_without_val_holds_out_a_split(tmp_path):
    for cls in ("a", "b"):
        for j in range(8):
            _img(tmp_path / cls / f"{j}.png", (j, 0, 0))
    bundle = build_data(
        DataConfig(source="imagefolder", path=str(tmp_path), image_size=8, eval_fraction=0.25), 1, [0.5], [0.5]
    )
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (9, 3, 4)
    assert len({*bundle.train.files, *bundle.val.files, *bundle.test.files}) == 16  # disjoint
    assert bundle.train[0][0].shape == (1, 8, 8)


def test_missing_path_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data.path .*nowhere does not exist"):
        build_data(DataConfig(source="imagefolder", path=str(tmp_path / "nowhere")), 3, MEAN, STD)


def test_empty_class_folder_is_clear(tmp_path):
    _img(tmp_path / "cat" / "0.png", (1, 2, 3))
    (tmp_path / "dog").mkdir()
    with pytest.raises(DatasetError, match=r"class folder .*dog has no image files"):
        scan_image_folder(tmp_path)
    (tmp_path / "dog" / "x.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"dog has 1 unreadable image"):
        scan_image_folder(tmp_path)


def test_val_classes_must_match_train(tmp_path):
    _img(tmp_path / "train" / "cat" / "0.png", (1, 2, 3))
    _img(tmp_path / "val" / "dog" / "0.png", (1, 2, 3))
    with pytest.raises(DatasetError, match=r"differ from the training classes \(cat\)"):
        build_data(DataConfig(source="imagefolder", path=str(tmp_path), image_size=8), 3, MEAN, STD)


def test_records_bundle_reads_rows_like_hf_datasets():
    rows = [{"image": Image.new("RGB", (9, 9), (k * 20, 0, 0)), "label": k % 3} for k in range(12)]
    bundle = records_bundle(
        DataConfig(source="hf", hf_name="x", image_size=8), rows, rows[:3], ["a", "b", "c"], "RGB", MEAN, STD
    )
    assert (len(bundle.train), len(bundle.val), len(bundle.test), bundle.num_classes) == (9, 3, 3, 3)
    assert bundle.train[4][0].shape == (3, 8, 8) and bundle.train[4][1] == bundle.train.indices[4] % 3
    with pytest.raises(DatasetError, match="no column 'img'"):
        records_bundle(DataConfig(source="hf", hf_name="x", image_key="img"), rows, None, None, "RGB", MEAN, STD)


class _Columnar:
    """Like a Hugging Face Dataset: ``ds["label"]`` is a column, ``ds[i]`` a row (decoded on access)."""

    def __init__(self, n):
        self.n, self.decoded = n, 0

    def __len__(self):
        return self.n

    def __getitem__(self, key):
        if key == "label":
            return [k % 2 for k in range(self.n)]
        self.decoded += 1
        return {"image": np.full((6, 6, 3), key * 10, dtype=np.uint8), "label": key % 2}


def test_records_are_read_lazily_with_a_held_out_split():
    rows = _Columnar(20)
    bundle = records_bundle(DataConfig(source="hf", hf_name="x", image_size=8), rows, None, None, "RGB", MEAN, STD)
    assert (len(bundle.train), len(bundle.val), len(bundle.test), bundle.classes) == (12, 3, 5, ["0", "1"])
    assert rows.decoded == 1  # only the column check read a row: labels came from the column
    assert len({*bundle.train.indices, *bundle.val.indices, *bundle.test.indices}) == 20  # disjoint
    x, y, i = bundle.test[2]
    assert x.shape == (3, 8, 8) and y in (0, 1) and i == 2


def test_hf_source_without_datasets_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(RuntimeError, match=r"pip install 'antialiased-zoo\[datasets\]'"):
        build_data(DataConfig(source="hf", hf_name="mnist"), 3, MEAN, STD)


def _class_ordered_rows(n_classes=5, per_class=10):
    """Rows sorted by class, like an image folder read class by class."""
    return [
        {"image": Image.new("RGB", (9, 9), (k, j, 0)), "label": k} for k in range(n_classes) for j in range(per_class)
    ]


def _labels(bundle_split, rows):
    return np.asarray([rows[i]["label"] for i in bundle_split.indices])


def test_limits_take_a_seeded_stratified_sample_not_the_first_classes():
    rows = _class_ordered_rows()
    cfg = DataConfig(source="hf", hf_name="x", image_size=8, limit_train=10, limit_eval=5)
    a = records_bundle(cfg, rows, None, None, "RGB", MEAN, STD)
    b = records_bundle(cfg, rows, None, None, "RGB", MEAN, STD)
    for split in ("train", "test"):
        counts = np.bincount(_labels(getattr(a, split), rows), minlength=5)
        assert counts.min() >= 1, (split, counts)  # every class: the first 10 rows in class order hold 1 or 2
    assert np.bincount(_labels(a.train, rows), minlength=5).tolist() == [2, 2, 2, 2, 2]
    assert a.train.indices == b.train.indices and a.test.indices == b.test.indices  # seeded
    cfg.split_seed = 1
    other = records_bundle(cfg, rows, None, None, "RGB", MEAN, STD)
    assert other.train.indices != a.train.indices


def test_stratified_sample_is_proportional_and_seeded():
    labels = np.repeat(np.arange(10), [50, 40, 30, 20, 10, 5, 5, 5, 5, 3])
    pick = stratified_sample(labels, 50, seed=0)
    # largest remainder of 50 * counts / 173, at least one each: worked out by hand
    assert np.bincount(labels[pick], minlength=10).tolist() == [15, 12, 9, 6, 3, 1, 1, 1, 1, 1]
    assert len(set(pick.tolist())) == 50
    assert np.array_equal(pick, stratified_sample(labels, 50, seed=0))
    assert not np.array_equal(pick, stratified_sample(labels, 50, seed=1))
    assert np.array_equal(stratified_sample(labels, None, 0), np.arange(173))
    with pytest.raises(DatasetError, match=r"data.limit_train=4 is smaller than the 10 classes"):
        stratified_sample(labels, 4, 0, "data.limit_train")
