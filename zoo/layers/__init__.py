"""Reusable anti-aliasing layers: the modules and their dispatch (:mod:`zoo.layers.blur`) over the kernels
(:mod:`zoo.layers.kernels`)."""

from zoo.layers import aps, blur, kernels
from zoo.layers.aps import *  # noqa: F403 (the public names are aps.__all__)
from zoo.layers.blur import *  # noqa: F403 (the public names are blur.__all__)
from zoo.layers.blur_nd import BlurPool1d, BlurPool3d, MaxBlurPool1d, MaxBlurPool3d

__all__ = [
    *blur.__all__,
    *aps.__all__,
    "BlurPool1d",
    "BlurPool3d",
    "MaxBlurPool1d",
    "MaxBlurPool3d",
]
_MODULES = (blur, kernels)  # submodules reachable as zoo.layers.blur / zoo.layers.kernels
