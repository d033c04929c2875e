"""``antialias(model)``: rewrite the subsampling points of a CNN with BlurPool (placement rules in ``rules.py``).

Scope of this version: torchvision ResNet-family blocks (``BasicBlock``/``Bottleneck`` and their projection
shortcuts), the ResNet stem max-pool, and ``Conv2dNormActivation`` (MobileNetV2-style) strided convs. Anything
else with a stride > 1 raises ``ValueError`` listing the modules that could not be placed: never a partial rewrite.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import Tensor, nn

from zoo.layers import BlurConv2d, BlurPool2d, MaxBlurPool2d
from zoo.models import rules

__all__ = ["antialias"]


def _stride(m: nn.Module) -> tuple[int, int]:
    s = m.stride
    return (s, s) if isinstance(s, int) else tuple(s)  # type: ignore[return-value]


class _NormActBlur(nn.Module):
    """Marker base: a norm whose output is followed by its clamp-type activation and the blur.

    The block applies the same activation again afterwards; a blur (a convex combination) of clamped values is
    already inside the clamp range, so the repeated ReLU/ReLU6 is exact identity.
    """


def _norm_act_blur(norm: nn.Module, act: nn.Module, blur: nn.Module) -> nn.Module:
    cls = type(norm)
    new_cls = type(f"{cls.__name__}ActBlur", (cls, _NormActBlur), {"forward": _nab_forward})
    norm.__class__ = new_cls
    norm.add_module("aa_act", copy.deepcopy(act))
    norm.add_module("aa", blur)
    return norm


def _nab_forward(self: nn.Module, x: Tensor) -> Tensor:
    base = next(c for c in type(self).__mro__[1:] if c is not _NormActBlur and "forward" in vars(c))
    return self.aa(self.aa_act(base.forward(self, x)))


def antialias(
    model: nn.Module,
    filter_size: int = 4,
    pad_mode: str = "reflect",
    aa_stem: bool = False,
    inplace: bool = False,
    aa_layer: Callable[[int, tuple[int, int]], nn.Module] | None = None,
) -> nn.Module:
    """Return ``model`` with every strided conv/pool split into a dense op and a blurred subsampling.

    State-dict keys and shapes are unchanged. ``aa_layer(channels, stride)`` builds the subsampling layer
    (default ``BlurPool2d(channels, filter_size, stride, pad_mode)``). Raises ``ValueError`` naming the
    modules it cannot place.
    """
    from torchvision.ops.misc import Conv2dNormActivation

    if not inplace:
        model = copy.deepcopy(model)

    def make(ch: int, stride: tuple[int, int]) -> nn.Module:
        if aa_layer is not None:
            return aa_layer(ch, stride)
        return BlurPool2d(ch, filter_size=filter_size, stride=stride, pad_mode=pad_mode)

    handled: set[int] = set()
    stem_done = False
    todo: list[Callable[[], None]] = []
    for mod in model.modules():
        kind = type(mod).__name__
        if isinstance(mod, Conv2dNormActivation) and isinstance(mod[0], nn.Conv2d):
            conv = mod[0]
            if _stride(conv) != (1, 1):
                handled.add(id(conv))
                is_stem = not stem_done
                stem_done = True
                if is_stem and not aa_stem:
                    continue
                s = _stride(conv)
                conv.stride = (1, 1)
                mod.append(make(conv.out_channels, s))
            stem_done = True
        for conv_n, norm_n, act_n in rules.ACT_AFTER_NORM.get(kind, ()):
            conv = getattr(mod, conv_n)
            if _stride(conv) != (1, 1):
                s = _stride(conv)
                conv.stride = (1, 1)
                handled.add(id(conv))
                _norm_act_blur(getattr(mod, norm_n), getattr(mod, act_n), make(conv.out_channels, s))
        if kind in rules.PROJECTION_PARENTS and isinstance(getattr(mod, "downsample", None), nn.Sequential):
            proj = mod.downsample[0]
            if type(proj) is nn.Conv2d and proj.kernel_size == (1, 1) and _stride(proj) != (1, 1):
                new = BlurConv2d(
                    proj.in_channels, proj.out_channels, 1, _stride(proj), proj.bias is not None, filter_size, pad_mode
                )
                if aa_layer is not None:
                    new.blur = aa_layer(proj.in_channels, _stride(proj))
                new.weight, new.bias = proj.weight, proj.bias
                mod.downsample[0] = new
                handled.add(id(new))
        children = list(mod.named_children())
        for i, (child_n, child) in enumerate(children):
            nxt = children[i + 1][1] if i + 1 < len(children) else None
            if (
                type(child) is nn.Conv2d
                and _stride(child) == rules.HALVED_STRIDE
                and isinstance(nxt, rules.CLAMP_ACTS)
                and id(child) not in handled
            ):
                # stride 4 (AlexNet conv1): conv at stride 2, its activation, then blur(2)
                child.stride = (2, 2)
                handled.add(id(child))
                stem_done = True
                act = nn.Sequential(nxt, make(child.out_channels, (2, 2)))
                todo.append(lambda m=mod, n=children[i + 1][0], v=act: setattr(m, n, v))
                continue
            rule = rules.MAXPOOL_RULES.get((kind, child_n))
            if rule is None and isinstance(child, nn.MaxPool2d) and _stride(child) != (1, 1) and not child.ceil_mode:
                k = child.kernel_size
                rule = (k if isinstance(k, int) else k[0], child.padding if isinstance(child.padding, int) else -1)
                if rule[1] < 0 or not isinstance(k, int):
                    rule = None
            if (
                isinstance(child, nn.AvgPool2d)
                and not child.ceil_mode
                and child.padding == 0
                and _stride(child) != (1, 1)
                and _pair_k(child.kernel_size) == _stride(child)
            ):
                blur = make(0, _stride(child))
                todo.append(lambda m=mod, n=child_n, v=blur: setattr(m, n, v))
                handled.add(id(child))
                continue
            if rule is not None and isinstance(child, nn.MaxPool2d):
                k, p = rule
                s = _stride(child)
                new_pool = MaxBlurPool2d(None, k, s, p, filter_size, pad_mode)
                if aa_layer is not None:
                    new_pool = nn.Sequential(nn.MaxPool2d(k, 1, p), aa_layer(0, s))
                todo.append(lambda m=mod, n=child_n, v=new_pool: setattr(m, n, v))
                handled.add(id(child))
    for fn in todo:
        fn()
    # stem: the first strided conv of a ResNet stays strided unless aa_stem
    first = getattr(model, "conv1", None)
    if isinstance(first, nn.Conv2d) and _stride(first) != (1, 1) and id(first) not in handled:
        handled.add(id(first))
        if aa_stem:
            bn, relu = model.bn1, model.relu
            s = _stride(first)
            first.stride = (1, 1)
            _norm_act_blur(bn, relu, make(first.out_channels, s))
    if not aa_stem:  # the first strided conv in module order (the stem) stays strided
        for mod in model.modules():
            if type(mod) is nn.Conv2d and _stride(mod) != (1, 1):
                handled.add(id(mod))
                break
            if id(mod) in handled:
                break
    bad = []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)) and not isinstance(mod, BlurConv2d):
            if id(mod) in handled:
                continue
            st = _stride(mod)
            if st != (1, 1) and not _inside_blur(model, name):
                bad.append(f"{name} ({type(mod).__name__}, stride {st})")
    if bad:
        raise ValueError("antialias: cannot place blur for these strided modules: " + ", ".join(bad))
    return model


def _inside_blur(model: nn.Module, name: str) -> bool:
    parts = name.split(".")
    for i in range(1, len(parts)):
        if isinstance(model.get_submodule(".".join(parts[:i])), (MaxBlurPool2d, BlurPool2d)):
            return True
    return False


def _pair_k(k: int | tuple[int, int]) -> tuple[int, int]:
    return (k, k) if isinstance(k, int) else tuple(k)  # type: ignore[return-value]
