"""Reusable anti-aliasing layers."""

from zoo.layers.blur import (
    BLUR_MODES,
    PAD_MODES,
    BlurConv2d,
    BlurPool2d,
    MaxBlurPool2d,
    binomial_filter,
    blur_mode,
    blur_padding,
    check_filter_size,
    get_blur_mode,
    normalize_pad_mode,
    set_blur_mode,
)

__all__ = [
    "BLUR_MODES",
    "PAD_MODES",
    "BlurConv2d",
    "BlurPool2d",
    "MaxBlurPool2d",
    "binomial_filter",
    "blur_mode",
    "blur_padding",
    "check_filter_size",
    "get_blur_mode",
    "normalize_pad_mode",
    "set_blur_mode",
]
