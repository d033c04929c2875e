"""``antialias(model)``: rewrite every subsampling point of a CNN with the official BlurPool placement.

Rules (Zhang, ICML 2019): MaxPool(k, s) -> MaxPool(k, 1) + blur(s); strided conv -> conv at stride 1, its norm and
activation, then blur(s); AvgPool(s) -> blur(s); a strided 1x1 projection -> blur(s), then the 1x1 conv; AlexNet's
stride-4 conv1 -> conv at stride 2, ReLU, blur(2). Adaptive pools are left alone; the stem conv stays strided unless
``aa_stem``. State-dict keys do not change (blur layers hold only non-persistent buffers).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import Tensor, nn

from zoo.layers import BlurPool2d, MaxBlurPool2d
from zoo.models.rules import BLOCK_BLUR_AFTER, MAXPOOL_OVERRIDES

__all__ = ["antialias"]

_ACTS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.GELU)
_NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)


def _qualname(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class _BlockForward:
    """Forward of a known residual block with ``self.aa`` after the activation of its strided conv."""

    @staticmethod
    def basic(self: nn.Module, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.aa(self.relu(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)

    @staticmethod
    def bottleneck(self: nn.Module, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.aa(self.relu(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


_BLOCK_FORWARDS = {"conv1": _BlockForward.basic, "conv2": _BlockForward.bottleneck}


def _swap_block(block: nn.Module, forward: Callable) -> None:
    cls = type(block)
    block.__class__ = type(f"AA{cls.__name__}", (cls,), {"forward": forward})


def antialias(
    model: nn.Module,
    filter_size: int = 4,
    pad_mode: str = "reflect",
    aa_stem: bool = False,
    inplace: bool = False,
    aa_layer: Callable[[int, tuple[int, int]], nn.Module] | None = None,
) -> nn.Module:
    """Return ``model`` with BlurPool at every subsampling point (a deep copy unless ``inplace``).

    Raises ``ValueError`` naming every strided module it cannot place (nothing is rewritten then).
    """
    if not inplace:
        model = copy.deepcopy(model)

    def blur(channels: int, stride: tuple[int, int]) -> nn.Module:
        if aa_layer is not None:
            return aa_layer(channels, stride)
        return BlurPool2d(channels, filter_size=filter_size, stride=stride, pad_mode=pad_mode)

    root = _qualname(model)
    edits: list[Callable[[], None]] = []
    placed: set[int] = set()
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    # The stem conv stays strided (official release), except a stride > 2 (AlexNet): that runs at half its stride.
    stem_kept = first_conv is not None and not aa_stem and max(_pair(first_conv.stride)) <= 2
    if stem_kept:
        placed.add(id(first_conv))

    for path, mod in model.named_modules():
        name = _qualname(mod)
        if name in BLOCK_BLUR_AFTER:
            conv = getattr(mod, BLOCK_BLUR_AFTER[name])
            stride = _pair(conv.stride)
            if stride != (1, 1):
                placed.add(id(conv))

                def edit(mod: nn.Module = mod, conv: nn.Conv2d = conv, stride: tuple[int, int] = stride) -> None:
                    conv.stride = (1, 1)
                    mod.aa = blur(conv.out_channels, stride)
                    _swap_block(mod, _BLOCK_FORWARDS[BLOCK_BLUR_AFTER[_qualname(mod)]])

                edits.append(edit)
            ds = getattr(mod, "downsample", None)
            if isinstance(ds, nn.Sequential) and isinstance(ds[0], nn.Conv2d) and _pair(ds[0].stride) != (1, 1):
                proj = ds[0]
                placed.add(id(proj))

                def edit_proj(ds: nn.Sequential = ds, proj: nn.Conv2d = proj) -> None:
                    stride = _pair(proj.stride)
                    proj.stride = (1, 1)
                    _prepend_blur(ds, 0, blur(proj.in_channels, stride))

                edits.append(edit_proj)
        if isinstance(mod, nn.Sequential):
            children = list(mod.named_children())
            for i, (key, child) in enumerate(children):
                if isinstance(child, nn.Conv2d) and _pair(child.stride) != (1, 1) and id(child) not in placed:
                    if child is first_conv and stem_kept:
                        continue
                    j = i + 1
                    while j < len(children) and isinstance(children[j][1], _NORMS):
                        j += 1
                    if j < len(children) and isinstance(children[j][1], _ACTS):
                        placed.add(id(child))
                        edits.append(_conv_edit(mod, child, children[j][0], blur))
                elif isinstance(child, nn.MaxPool2d) and _pair(child.stride) != (1, 1):
                    placed.add(id(child))
                    full = f"{path}.{key}" if path else key
                    over = MAXPOOL_OVERRIDES.get((root, full), {})
                    edits.append(_pool_edit(mod, key, child, over, filter_size, pad_mode, aa_layer, blur))
                elif isinstance(child, nn.AvgPool2d) and _pair(child.stride) != (1, 1):
                    placed.add(id(child))
                    edits.append(_avg_edit(mod, key, child, blur))
        elif isinstance(mod, nn.MaxPool2d) and _pair(mod.stride) != (1, 1) and id(mod) not in placed and path:
            parent_path, _, key = path.rpartition(".")
            parent = model.get_submodule(parent_path)
            placed.add(id(mod))
            over = MAXPOOL_OVERRIDES.get((root, path), {})
            edits.append(_pool_edit(parent, key, mod, over, filter_size, pad_mode, aa_layer, blur))

    missing = [
        p
        for p, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)) and _pair(m.stride) != (1, 1) and id(m) not in placed
    ]
    if missing:
        raise ValueError(f"antialias: cannot place blur for strided modules {', '.join(missing)} of {root}")
    for e in edits:
        e()
    return model


def _prepend_blur(seq: nn.Sequential, index: int, layer: nn.Module) -> None:
    """Run ``layer`` before ``seq[index]`` without changing state-dict keys (a forward pre-hook free wrapper)."""
    conv = seq[index]
    conv.blur = layer
    conv.__class__ = type(f"Blur{type(conv).__name__}", (type(conv),), {"forward": _blur_first_forward})


def _blur_first_forward(self: nn.Conv2d, x: Tensor) -> Tensor:
    return self._conv_forward(self.blur(x), self.weight, self.bias)


def _conv_edit(seq: nn.Sequential, conv: nn.Conv2d, act_key: str, blur: Callable) -> Callable[[], None]:
    def edit() -> None:
        stride = _pair(conv.stride)
        # AlexNet conv1 (stride 4): conv at stride 2, blur(2), as the official release does.
        dense = (stride[0] // 2, stride[1] // 2) if stride[0] > 2 or stride[1] > 2 else (1, 1)
        conv.stride = dense
        rest = (stride[0] // dense[0], stride[1] // dense[1])
        seq._modules[act_key] = nn.Sequential(seq._modules[act_key], blur(conv.out_channels, rest))

    return edit


def _pool_edit(parent, key, pool, over, filter_size, pad_mode, aa_layer, blur) -> Callable[[], None]:
    def edit() -> None:
        k = over.get("kernel_size", pool.kernel_size)
        p = over.get("padding", pool.padding)
        stride = _pair(pool.stride)
        if aa_layer is None:
            new: nn.Module = MaxBlurPool2d(None, k, stride, p, filter_size, pad_mode)
        else:
            new = nn.Sequential(nn.MaxPool2d(k, 1, p), aa_layer(0, stride))
        parent._modules[key] = new

    return edit


def _avg_edit(parent, key, pool, blur) -> Callable[[], None]:
    def edit() -> None:
        parent._modules[key] = blur(None, _pair(pool.stride))

    return edit
