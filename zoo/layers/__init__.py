"""Reusable anti-aliasing layers."""

from zoo.layers.blur import (
    PAD_MODES,
    BlurConv2d,
    BlurPool2d,
    MaxBlurPool2d,
    binomial_filter,
    blur_padding,
    check_filter_size,
    normalize_pad_mode,
)

__all__ = [
    "PAD_MODES",
    "BlurConv2d",
    "BlurPool2d",
    "MaxBlurPool2d",
    "binomial_filter",
    "blur_padding",
    "check_filter_size",
    "normalize_pad_mode",
]
