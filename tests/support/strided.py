"""What an anti-aliasing rewrite may leave behind: subsampling outside a blur layer."""

from __future__ import annotations

import torch
from torch import nn

_POOLS = (nn.functional.max_pool2d, nn.functional.avg_pool2d, torch.max_pool2d, torch._C._nn.avg_pool2d)


def stride_pair(m: nn.Module) -> tuple[int, int]:
    s = m.stride
    return (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))


def strided_left(model: nn.Module, skip: str | None = None) -> list[str]:
    """Strided conv / pool modules (not blur layers, not the module at path ``skip``) and strided pools called in
    ``forward`` (found by an fx trace)."""
    left = [p for p, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))
            and stride_pair(m) != (1, 1) and "BlurPool" not in type(m).__name__ and p != skip]  # fmt: skip
    for node in torch.fx.symbolic_trace(model).graph.nodes:
        if node.op == "call_function" and node.target in _POOLS:
            stride = node.kwargs.get("stride", node.args[2] if len(node.args) > 2 else None)
            if stride not in (1, (1, 1), [1, 1]):
                left.append(node.name)
    return left
