"""ImageNet-C corruptions applied in memory with the ``imagecorruptions`` package (optional extra).

``imagecorruptions`` 1.1.2 calls ``skimage.filters.gaussian(..., multichannel=True)``, which
scikit-image >= 0.19 no longer accepts, and draws its impulse noise from an unseeded generator. While
a corruption runs, :func:`corrupt` gives the package's module a ``gaussian`` that maps ``multichannel``
to ``channel_axis``, a numpy that still has ``np.float_`` and an impulse-noise generator seeded from
numpy's global state, which it sets from ``(seed, image, corruption, severity)``, then restores
everything (the global state included).
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import types
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from zoo.eval._seeding import image_rng

__all__ = ["COMMON", "EXTRA", "GROUPS", "corrupt", "corruption_module"]

# Hendrycks & Dietterich (ICLR 2019): 15 corruptions in 4 groups, 4 held-out extras
GROUPS: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
COMMON: tuple[str, ...] = tuple(c for names in GROUPS.values() for c in names)
EXTRA: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
_LOCK = threading.Lock()


def corruption_module() -> Any:
    """The ``imagecorruptions`` package, or a one-line error saying how to install it."""
    try:
        with warnings.catch_warnings():  # its pkg_resources / scipy.ndimage.interpolation imports warn
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            return importlib.import_module("imagecorruptions")
    except ImportError as err:
        raise RuntimeError(
            "the corruptions metric needs the imagecorruptions package: pip install 'antialiased-zoo[corruptions]'"
        ) from err


class _Numpy(types.ModuleType):
    """numpy with the NumPy 1 alias ``float_`` (removed in NumPy 2) that the package still uses."""

    float_ = np.float64

    def __init__(self) -> None:
        super().__init__("numpy")

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


@contextlib.contextmanager
def _patched(module: Any) -> Iterator[None]:
    impl = module.corruptions
    from skimage import filters, util

    def gaussian(image: np.ndarray, sigma: Any = 1, multichannel: bool | None = None, **kw: Any) -> np.ndarray:
        if multichannel is not None:
            kw.setdefault("channel_axis", -1 if multichannel else None)
        return filters.gaussian(image, sigma=sigma, **kw)

    def random_noise(image: np.ndarray, **kw: Any) -> np.ndarray:
        kw.setdefault("rng", int(np.random.randint(0, 2**31 - 1)))  # seeded via numpy's global state
        return util.random_noise(image, **kw)

    saved = impl.gaussian, impl.sk, impl.np
    impl.gaussian = gaussian
    impl.sk = types.SimpleNamespace(
        color=importlib.import_module("skimage.color"), util=types.SimpleNamespace(random_noise=random_noise)
    )
    impl.np = _Numpy()
    state = np.random.get_state()
    try:
        yield
    finally:
        impl.gaussian, impl.sk, impl.np = saved
        np.random.set_state(state)


def corrupt(image: np.ndarray, name: str, severity: int, *, seed: int = 0, index: int = 0) -> np.ndarray:
    """``image`` (H, W, 3) uint8, H and W >= 32, with corruption ``name`` at ``severity`` 1..5 (uint8).

    The random draws depend on ``(seed, index, name, severity)`` only.
    """
    if name not in COMMON + EXTRA:
        raise ValueError(f"unknown corruption {name!r}; valid: {', '.join(COMMON + EXTRA)}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be 1..5, got {severity!r}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 32:
        raise ValueError(f"corrupt needs an (H, W, 3) uint8 image with H, W >= 32, got {image.dtype} {image.shape}")
    module = corruption_module()
    with _LOCK, _patched(module):
        np.random.seed(int(image_rng(seed, f"corruptions/{name}/{severity}", index).integers(0, 2**31 - 1)))
        out = module.corrupt(image, severity=severity, corruption_name=name)
    out = np.asarray(out)
    if out.shape != image.shape:  # some corruptions (frost on odd sizes) may return a different size
        from PIL import Image

        out = np.asarray(Image.fromarray(out).resize((image.shape[1], image.shape[0]), Image.BILINEAR))
    return np.ascontiguousarray(out.astype(np.uint8))
