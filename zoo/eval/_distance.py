"""Distances between feature maps."""

from __future__ import annotations

from torch import Tensor

__all__ = ["cosine_distance"]


def cosine_distance(a: Tensor, b: Tensor, eps: float = 1e-12) -> Tensor:
    """``1 - cos(a_i, b_i)`` per sample over all non-batch dims, computed as ``|â - b̂|² / 2``.

    The second form is exactly 0 for identical inputs (no rounding of ``1 - 0.9999999``). All-zero
    maps are treated as the zero direction: two zero maps have distance 0.
    """
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    a = a / a.norm(dim=1, keepdim=True).clamp_min(eps)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(eps)
    return 0.5 * (a - b).pow(2).sum(dim=1)
