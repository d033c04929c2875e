"""Values shared across the package, each written once."""

from __future__ import annotations

__all__ = ["DEFAULT_FILTER_SIZE", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS"]

#: Per-channel ImageNet normalisation (RGB, inputs in [0, 1]) used by torchvision and the official release.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: File endings read as images by every data source (lower case, with the dot).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")

#: The blur filter size of the release's default weights (Tri-4).
DEFAULT_FILTER_SIZE = 4
