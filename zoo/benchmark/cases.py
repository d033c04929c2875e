"""What is compared: model groups and layer cases, as data plus small builders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

# arch -> (torchvision baseline, zoo model, official package function, timm blur model)
MODEL_GROUPS: dict[str, dict[str, str]] = {
    "resnet18": {"torchvision": "resnet18", "zoo": "resnet18_aa4", "official": "resnet18", "timm": "resnetblur18"},
    "resnet50": {"torchvision": "resnet50", "zoo": "resnet50_aa4", "official": "resnet50", "timm": "resnetblur50"},
}
SOURCES: tuple[str, ...] = ("torchvision", "zoo", "official", "timm")


def build_model(source: str, name: str) -> nn.Module:
    """A randomly initialised model from one of ``SOURCES``."""
    if source == "torchvision":
        import torchvision

        return torchvision.models.get_model(name, weights=None)
    if source == "zoo":
        import zoo

        return zoo.create(name)
    if source == "official":
        import antialiased_cnns

        return getattr(antialiased_cnns, name)(pretrained=False, filter_size=4)
    if source == "timm":
        import timm

        return timm.create_model(name, pretrained=False)
    raise ValueError(f"unknown model source {source!r}; valid: {', '.join(SOURCES)}")


def build_group(arch: str) -> dict[str, nn.Module]:
    """The models of one group; the zoo model gets the official model's weights (same outputs)."""
    if arch not in MODEL_GROUPS:
        raise ValueError(f"unknown benchmark arch {arch!r}; valid: {', '.join(MODEL_GROUPS)}")
    from zoo.weights.keymaps import rename_keys

    torch.manual_seed(0)
    models = {src: build_model(src, name) for src, name in MODEL_GROUPS[arch].items()}
    models["zoo"].load_state_dict(rename_keys(models["official"].state_dict(), arch), strict=True)
    return models


# Timed next to every layer case: ``x.clone()``, a copy into a newly allocated tensor. A backward must return a
# new ``dx`` of the input's size, so this row shows how much of the floor gap is the allocator's fresh pages.
FRESH_COPY = "fresh copy"


@dataclass(frozen=True)
class LayerCase:
    """A layer benchmark: input shape, stride of the copy-bound floor, candidates by name."""

    name: str
    shape: tuple[int, int, int, int]
    stride: int
    candidates: dict[str, Callable[[int], nn.Module]]  # name -> builder(channels)

    @property
    def floor_factor(self) -> float:
        """Bytes moved by "read input once, write output once" relative to a same-size copy."""
        return (1 + 1 / self.stride**2) / 2


def _zoo_blur(impl: str) -> Callable[[int], nn.Module]:
    def build(c: int) -> nn.Module:
        from zoo.layers import BlurPool2d

        return BlurPool2d(c, filter_size=4, stride=2, impl=impl)

    return build


def _zoo_maxblur(impl: str) -> Callable[[int], nn.Module]:
    def build(c: int) -> nn.Module:
        from zoo.layers import MaxBlurPool2d

        return MaxBlurPool2d(c, kernel_size=2, stride=2, padding=0, filter_size=4, impl=impl)

    return build


def _official_blur(c: int) -> nn.Module:
    import antialiased_cnns

    return antialiased_cnns.BlurPool(c, filt_size=4, stride=2)


def _timm_blur(c: int) -> nn.Module:
    from timm.layers import BlurPool2d

    return BlurPool2d(c, filt_size=4, stride=2)


def _with_dense_max(build: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
    return lambda c: nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=1), build(c))


def layer_cases(quick: bool) -> list[LayerCase]:
    """BlurPool2d on a 16x256x56x56 map and the ResNet stem MaxBlurPool2d on 8x64x112x112."""
    blur_shape = (4, 128, 56, 56) if quick else (16, 256, 56, 56)
    stem_shape = (2, 64, 112, 112) if quick else (8, 64, 112, 112)
    zoo_modes = ("fast", "reference", "compiled")
    blur = {f"zoo[{m}]": _zoo_blur(m) for m in zoo_modes}
    blur |= {"official": _official_blur, "timm": _timm_blur}
    maxblur = {f"zoo[{m}]": _zoo_maxblur(m) for m in zoo_modes}
    maxblur |= {"official": _with_dense_max(_official_blur), "timm": _with_dense_max(_timm_blur)}
    return [
        LayerCase("BlurPool2d(k=4, s=2)", blur_shape, 2, blur),
        LayerCase("MaxBlurPool2d(2, s=2, k=4)", stem_shape, 2, maxblur),
    ]
