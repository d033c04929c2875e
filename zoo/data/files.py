"""Image files: the one test of "is this an image?" and the one folder scanner (eval and train alike)."""

from __future__ import annotations

import os
from pathlib import Path

from zoo.constants import IMAGE_EXTENSIONS

__all__ = ["image_files", "is_image_file"]


def is_image_file(path: str | os.PathLike) -> bool:
    """A regular file whose extension (any case) is one of ``zoo.constants.IMAGE_EXTENSIONS``."""
    path = Path(path)
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def image_files(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """The image files under ``folder`` (in sub-folders too when ``recursive``), sorted by path."""
    folder = Path(folder)
    return sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if is_image_file(p))
