"""zoo.data.files: one image test and one scanner, with the extensions of zoo.constants, for eval and train."""

from __future__ import annotations

from PIL import Image

from zoo.constants import IMAGE_EXTENSIONS
from zoo.data import image_files, is_image_file


def test_one_scanner_with_the_shared_extensions(tmp_path) -> None:
    (tmp_path / "a" / "deep").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "a" / "x.GIF", format="GIF")  # any case; .gif was eval-only before
    Image.new("RGB", (4, 4)).save(tmp_path / "a" / "deep" / "y.png")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / "folder.jpg").mkdir()  # a directory is never an image
    assert ".gif" in IMAGE_EXTENSIONS
    assert image_files(tmp_path / "a") == [tmp_path / "a" / "deep" / "y.png", tmp_path / "a" / "x.GIF"]
    assert image_files(tmp_path / "a", recursive=False) == [tmp_path / "a" / "x.GIF"]
    assert not is_image_file(tmp_path / "a" / "notes.txt") and not is_image_file(tmp_path / "missing.png")


def test_eval_and_train_read_the_same_folder_alike(tmp_path) -> None:
    from zoo.eval.data import open_source
    from zoo.train.data import scan_image_folder

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for j, ext in enumerate((".png", ".gif", ".webp")):
            Image.new("RGB", (8, 8), (40 * j, 0, 0)).save(tmp_path / cls / f"{j}{ext}")
    source = open_source(str(tmp_path))
    files, labels, classes, skipped = scan_image_folder(tmp_path)
    assert [p for p, _ in source.items] == files and [label for _, label in source.items] == labels
    assert classes == ["cat", "dog"] and not skipped and len(files) == 6
