"""``antialias(model)``: rewrite every subsampling point of a CNN with the official BlurPool placement.

Rules (Zhang, ICML 2019; the table is docs/antialias.md): MaxPool(k, s) -> MaxPool(k, 1) + blur(s); strided conv ->
conv at stride 1, its norm and activation, then blur(s); a strided conv with a norm and no activation -> conv at
stride 1, norm, blur(s); AvgPool(s) -> blur(s); a strided 1x1 conv -> blur(s), then the 1x1 conv; a stem conv of
stride > 2 (AlexNet, ConvNeXt's patchify stem with ``aa_stem``) -> conv at half its stride, then blur(2). Adaptive
pools are left alone; the stem conv stays strided unless ``aa_stem`` (or its stride is > 2 and an activation
follows: AlexNet). Known blocks with a functional ReLU or max-pool (``zoo.models.rules``) get a swapped forward;
timm blocks with an ``aa`` slot get the blur in that slot, and blocks whose strided conv feeds a norm + activation
module (timm's ``BatchNormAct2d``) get the blur after that module (``zoo.models.rules``). State-dict keys do not
change (blur layers hold only non-persistent buffers).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import Tensor, nn

from zoo.layers import BlurPool2d, MaxBlurPool2d
from zoo.models import antialias_fx
from zoo.models.rules import (
    BLOCK_BLUR_AFTER,
    BLUR_AFTER_BLOCKS,
    CONV_ACT_BLOCKS,
    CONV_BLUR_AFTER,
    FUNCTIONAL_POOL_BLOCKS,
    MAXPOOL_OVERRIDES,
    SLOT_BLOCKS,
)

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

    @staticmethod
    def conv_bn_relu(self: nn.Module, x: Tensor) -> Tensor:
        return self.aa(nn.functional.relu(self.bn(self.conv(x))))

    @staticmethod
    def inception_b(self: nn.Module, x: Tensor) -> list[Tensor]:
        branch3x3 = self.branch3x3(x)
        dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [branch3x3, dbl, self.pool_aa(x)]

    @staticmethod
    def inception_d(self: nn.Module, x: Tensor) -> list[Tensor]:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return [branch3x3, b7, self.pool_aa(x)]


_BLOCK_FORWARDS = {"conv1": _BlockForward.basic, "conv2": _BlockForward.bottleneck}
_POOL_FORWARDS = {"InceptionB": _BlockForward.inception_b, "InceptionD": _BlockForward.inception_d}


def _swap_block(block: nn.Module, forward: Callable, attr: str = "forward") -> None:
    cls = type(block)
    block.__class__ = type(f"AA{cls.__name__}", (cls,), {attr: forward})


def antialias(
    model: nn.Module,
    filter_size: int = 4,
    pad_mode: str = "reflect",
    aa_stem: bool = False,
    inplace: bool = False,
    aa_layer: Callable[[int, tuple[int, int]], nn.Module] | None = None,
) -> nn.Module:
    """Return ``model`` with BlurPool at every subsampling point (a deep copy unless ``inplace``).

    What the structural rules leave goes to the ``torch.fx`` fallback (``zoo.models.antialias_fx``): a strided
    conv or functional pool inside a traceable block is placed in that block's graph, and the block becomes a
    ``torch.fx.GraphModule`` with the same state-dict keys (the model itself, returned, when it is that block).
    Raises ``ValueError`` naming every strided module or functional op it cannot place (nothing is rewritten then).
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
    stem_kept = first_conv is not None and not aa_stem and _stem_kept(model, first_conv)
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
        if name in SLOT_BLOCKS or name in BLUR_AFTER_BLOCKS:
            conv_attr, target = SLOT_BLOCKS[name] if name in SLOT_BLOCKS else BLUR_AFTER_BLOCKS[name]
            conv = getattr(mod, conv_attr, None)
            if _rewritable(conv, placed) and _pair(conv.kernel_size) != (1, 1):
                if name in SLOT_BLOCKS and _empty_slot(getattr(mod, target, None)):
                    placed.add(id(conv))
                    edits.append(_slot_edit(mod, conv, target, blur))
                elif name in BLUR_AFTER_BLOCKS:
                    placed.add(id(conv))
                    edits.append(_after_edit(conv, mod, target, blur))
        if (root, path) in CONV_BLUR_AFTER and _rewritable(mod, placed):
            placed.add(id(mod))
            parent_path, _, key = CONV_BLUR_AFTER[(root, path)].rpartition(".")
            edits.append(_after_edit(mod, model.get_submodule(parent_path), key, blur))
        if name in CONV_ACT_BLOCKS and _pair(mod.conv.stride) != (1, 1) and not (stem_kept and mod.conv is first_conv):
            placed.add(id(mod.conv))
            edits.append(_conv_act_block_edit(mod, blur))
        if name in FUNCTIONAL_POOL_BLOCKS:
            edits.append(_functional_pool_edit(mod, FUNCTIONAL_POOL_BLOCKS[name], filter_size, pad_mode, aa_layer))
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
                    elif _pair(child.kernel_size) == (1, 1):
                        placed.add(id(child))
                        edits.append(_prepend_edit(child, blur))
                    elif j == len(children) or j > i + 1:  # conv [+ norms] and no activation: blur after them
                        placed.add(id(child))
                        edits.append(_conv_no_act_edit(mod, child, children[j - 1][0], blur))
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

    for path, mod in model.named_modules():  # rules that hold wherever the module sits
        if id(mod) in placed or not path:
            continue
        if _rewritable(mod, placed) and _pair(mod.kernel_size) == (1, 1):  # DownsampleConv, ConvNormAct 1x1
            placed.add(id(mod))
            edits.append(_prepend_edit(mod, blur))
        elif isinstance(mod, nn.AvgPool2d) and _pair(mod.stride) != (1, 1):  # DownsampleAvg.pool
            parent_path, _, key = path.rpartition(".")
            placed.add(id(mod))
            edits.append(_avg_edit(model.get_submodule(parent_path), key, mod, blur))

    def max_blur(kernel: int, stride: tuple[int, int], padding: int) -> nn.Module:
        if aa_layer is None:
            return MaxBlurPool2d(None, kernel, stride, padding, filter_size, pad_mode)
        return nn.Sequential(nn.MaxPool2d(kernel, 1, padding), aa_layer(0, stride))

    unplaced = [p for p, m in model.named_modules() if _subsamples(m) and id(m) not in placed]
    fx_plan = antialias_fx.plan(model, unplaced, antialias_fx.Makers(blur, max_blur, _stride_split))
    if fx_plan.missing or fx_plan.ops_missing:
        head = (f"strided modules {', '.join(fx_plan.missing)} of {root}" if fx_plan.missing
                else f"functional subsampling in {root}")  # fmt: skip
        details = "; ".join(fx_plan.reasons + fx_plan.ops_missing)
        raise ValueError(f"antialias: cannot place blur for {head} ({details}); {antialias_fx.SUPPORTED}")
    for e in edits:
        e()
    return fx_plan.apply(model)


def _rewritable(conv: object, placed: set[int]) -> bool:
    """A strided ``nn.Conv2d`` (or subclass: timm's ``Conv2dSame``, ``StdConv2d``) that no rule has placed yet."""
    return isinstance(conv, nn.Conv2d) and _pair(conv.stride) != (1, 1) and id(conv) not in placed


def _subsamples(m: nn.Module) -> bool:
    """Strided convs and pools, and any other module with weights and a stride (timm's ``CondConv2d``)."""
    if isinstance(m, nn.modules.conv._ConvTransposeNd) or not hasattr(m, "stride"):
        return False
    if not isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d)) and "weight" not in m._parameters:
        return False
    s = m.stride
    return any(int(v) != 1 for v in (s if isinstance(s, (tuple, list)) else (s,)))


def _empty_slot(slot: object) -> bool:
    """timm's disabled ``aa`` slot: ``nn.Identity`` (blocks) or ``None`` (``ConvNormAct``)."""
    return slot is None or type(slot) is nn.Identity


def _slot_edit(block: nn.Module, conv: nn.Conv2d, slot: str, blur: Callable) -> Callable[[], None]:
    """Conv at stride 1 (half a stride > 2); the block's own ``aa`` slot, after its norm + act, holds the blur."""

    def edit() -> None:
        dense, rest = _stride_split(_pair(conv.stride))
        conv.stride = dense
        setattr(block, slot, blur(conv.out_channels, rest))

    return edit


def _stateless(m: nn.Module) -> bool:
    return not any(True for _ in m.parameters()) and not any(True for _ in m.buffers())


def _after_edit(conv: nn.Conv2d, parent: nn.Module, key: str, blur: Callable) -> Callable[[], None]:
    """Conv at stride 1 (half a stride > 2), then the blur on the output of ``parent.<key>`` (its norm + act, or the
    conv itself), without changing state-dict keys: inserted after it when ``parent`` is a ``Sequential``; a
    stateless module (an activation) becomes ``Sequential(act, blur)``; a norm holding a stateless ``act`` (timm's
    ``BatchNormAct2d``) gets ``act`` wrapped so; anything else runs the blur in a subclass forward (not scriptable:
    ``torch.jit.script`` then raises ``TypeError``)."""

    def edit() -> None:
        dense, rest = _stride_split(_pair(conv.stride))
        conv.stride = dense
        layer = blur(conv.out_channels, rest)
        target = getattr(parent, key)
        act = getattr(target, "act", None)
        if isinstance(parent, nn.Sequential):
            _insert_after(parent, key, f"{key}_aa", layer)
        elif _stateless(target):
            setattr(parent, key, nn.Sequential(target, layer))
        elif isinstance(act, nn.Module) and _stateless(act):
            target.act = nn.Sequential(act, layer)
        else:
            target.aa = layer
            base = type(target)

            def forward(self: nn.Module, x: Tensor) -> Tensor:
                return self.aa(base.forward(self, x))

            def refuse(self: nn.Module) -> nn.Module:
                raise TypeError(f"antialias: torch.jit.script is not supported for {base.__name__} with a blur after "
                                "it; use torch.jit.trace or torch.fx")  # fmt: skip

            target.__class__ = type(
                f"Blurred{base.__name__}", (base,), {"forward": forward, "__prepare_scriptable__": refuse}
            )

    return edit


def _stem_kept(model: nn.Module, stem: nn.Conv2d) -> bool:
    """The stem conv stays strided (official release), except a stride > 2 followed by an activation (AlexNet's
    conv1, which runs at half its stride); a stride > 2 stem with no activation (ConvNeXt's patchify) is kept."""
    if max(_pair(stem.stride)) <= 2:
        return True
    for mod in model.modules():
        if isinstance(mod, nn.Sequential):
            children = list(mod.children())
            if any(c is stem for c in children):
                i = next(i for i, c in enumerate(children) if c is stem) + 1
                while i < len(children) and isinstance(children[i], _NORMS):
                    i += 1
                return not (i < len(children) and isinstance(children[i], _ACTS))
    return False


def _stride_split(stride: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """(dense stride, blur stride): a stride > 2 runs at half of it (blur 2), else at 1 (blur = stride)."""
    dense = (stride[0] // 2, stride[1] // 2) if stride[0] > 2 or stride[1] > 2 else (1, 1)
    dense = (max(dense[0], 1), max(dense[1], 1))
    return dense, (stride[0] // dense[0], stride[1] // dense[1])


def _insert_after(seq: nn.Sequential, key: str, new_key: str, layer: nn.Module) -> None:
    """Insert ``layer`` into ``seq`` right after ``seq._modules[key]`` under ``new_key`` (keys stay as they are)."""
    items = list(seq._modules.items())
    seq._modules.clear()
    for k, m in items:
        seq._modules[k] = m
        if k == key:
            seq._modules[new_key] = layer


def _conv_no_act_edit(seq: nn.Sequential, conv: nn.Conv2d, last_key: str, blur: Callable) -> Callable[[], None]:
    """Strided conv followed by norms and no activation (ConvNeXt downsample, ShuffleNet depthwise): conv at stride
    1 (half a stride > 2), its norms, then blur."""

    def edit() -> None:
        dense, rest = _stride_split(_pair(conv.stride))
        conv.stride = dense
        _insert_after(seq, last_key, f"{last_key}_aa", blur(conv.out_channels, rest))

    return edit


def _prepend_edit(conv: nn.Conv2d, blur: Callable) -> Callable[[], None]:
    """A strided 1x1 conv (projection shortcut): blur, then the conv at stride 1 (they commute)."""

    def edit() -> None:
        stride = _pair(conv.stride)
        conv.stride = (1, 1)
        conv.blur = blur(conv.in_channels, stride)
        _swap_blur_first(conv)

    return edit


def _swap_blur_first(conv: nn.Conv2d) -> None:
    """``conv`` runs ``conv.blur`` on its input first; a subclass of ``nn.Conv2d`` (timm's ``StdConv2d``,
    ``Conv2dSame``) keeps its own forward after the blur."""
    base = type(conv)
    if base is nn.Conv2d:
        forward = _blur_first_forward
    else:

        def forward(self: nn.Conv2d, x: Tensor) -> Tensor:
            return base.forward(self, self.blur(x))

    conv.__class__ = type(f"Blur{base.__name__}", (base,), {"forward": forward})


def _conv_act_block_edit(block: nn.Module, blur: Callable) -> Callable[[], None]:
    def edit() -> None:
        dense, rest = _stride_split(_pair(block.conv.stride))
        block.conv.stride = dense
        block.aa = blur(block.conv.out_channels, rest)
        _swap_block(block, _BlockForward.conv_bn_relu)

    return edit


def _functional_pool_edit(block, kernel_stride, filter_size, pad_mode, aa_layer) -> Callable[[], None]:
    kernel, stride = kernel_stride

    def edit() -> None:
        if aa_layer is None:
            block.pool_aa = MaxBlurPool2d(None, kernel, stride, 0, filter_size, pad_mode)
        else:
            block.pool_aa = nn.Sequential(nn.MaxPool2d(kernel, 1), aa_layer(0, (stride, stride)))
        _swap_block(block, _POOL_FORWARDS[type(block).__name__], "_forward")

    return edit


def _prepend_blur(seq: nn.Sequential, index: int, layer: nn.Module) -> None:
    """Run ``layer`` before ``seq[index]`` without changing state-dict keys (a forward pre-hook free wrapper)."""
    conv = seq[index]
    conv.blur = layer
    _swap_blur_first(conv)


def _blur_first_forward(self: nn.Conv2d, x: Tensor) -> Tensor:
    return self._conv_forward(self.blur(x), self.weight, self.bias)


def _conv_edit(seq: nn.Sequential, conv: nn.Conv2d, act_key: str, blur: Callable) -> Callable[[], None]:
    def edit() -> None:
        # AlexNet conv1 (stride 4): conv at stride 2, blur(2), as the official release does.
        dense, rest = _stride_split(_pair(conv.stride))
        conv.stride = dense
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
