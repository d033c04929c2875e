"""The embedded digits: scikit-learn's 1,797 scanned 8x8 digits, the data of the offline demos."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["digits_tensors"]


def digits_tensors(image_size: int, in_chans: int) -> tuple[Tensor, Tensor]:
    """scikit-learn's 1,797 scanned 8x8 digits as (N, in_chans, S, S) floats in [0, 1] (bilinear upsampling)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = images.clamp_(0.0, 1.0).expand(-1, in_chans, -1, -1).contiguous()
    return images, torch.as_tensor(digits.target, dtype=torch.long)
