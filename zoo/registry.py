"""The one table of model names: ``{arch}`` (torchvision baseline twin) and ``{arch}_aa{K}``."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zoo.models import densenet, mobilenet, resnet, torchvision_cnn, vgg
from zoo.models._contract import ZooModel
from zoo.models.aps import APS_FAMILIES, APS_TORCHVISION, aps_family

FILTER_SIZES: tuple[int, ...] = (2, 3, 4, 5)
DEFAULT_FILTER_SIZE = 4
_FAMILIES: dict[str, tuple[type[ZooModel] | None, dict[str, dict[str, Any]]]] = {
    "resnet": (resnet.ResNet, resnet.VARIANTS),
    "vgg": (vgg.VGG, vgg.VARIANTS),
    "densenet": (densenet.DenseNet, densenet.VARIANTS),
    "mobilenet": (None, mobilenet.VARIANTS),
    "torchvision_cnn": (None, torchvision_cnn.VARIANTS),
}
_AA_NAME = re.compile(r"^(?P<arch>.+)_aa(?P<k>\d+)$")
APS_SUFFIX = "_aps"


@dataclass(frozen=True)
class ModelEntry:
    """A registered name: its architecture, family class, variant kwargs and filter size."""

    name: str
    arch: str
    family: str
    cls: type[ZooModel]
    variant: dict[str, Any] = field(hash=False)
    filter_size: int | None
    sampling: str = "stride"  # "aps": adaptive polyphase sampling (``{arch}_aps``, ``{arch}_aa{K}_aps``)

    @property
    def antialiased(self) -> bool:
        return self.filter_size is not None


def _build_table() -> dict[str, ModelEntry]:
    table: dict[str, ModelEntry] = {}
    for family, (family_cls, variants) in _FAMILIES.items():
        for arch, variant in variants.items():
            variant = dict(variant)
            cls = variant.pop("cls", family_cls)
            for k in (None, *FILTER_SIZES):
                name = arch if k is None else f"{arch}_aa{k}"
                table[name] = ModelEntry(name, arch, family, cls, variant, k)
    return table


REGISTRY: dict[str, ModelEntry] = _build_table()
ARCHS: tuple[str, ...] = tuple(dict.fromkeys(e.arch for e in REGISTRY.values()))


def register_family(family: str, cls: type[ZooModel] | None, variants: dict[str, dict[str, Any]]) -> list[str]:
    """Add a model family (its class and variant table) to the table of names; returns the new names.

    ``cls`` may be ``None`` when every variant names its class under ``"cls"``. Registered names are
    ``{arch}`` and ``{arch}_aa{K}`` for every ``K`` in ``FILTER_SIZES``, exactly as for the built-in families.
    """
    global ARCHS
    taken = sorted(set(variants) & set(ARCHS))
    if family in _FAMILIES or taken:
        raise ValueError(f"family {family!r} or architecture(s) {', '.join(taken) or '-'} already registered")
    _FAMILIES[family] = (cls, variants)
    new = _build_table()
    added = [name for name in new if name not in REGISTRY]
    REGISTRY.update({name: new[name] for name in added})
    ARCHS = tuple(dict.fromkeys(e.arch for e in REGISTRY.values()))
    return added


_RESOLVERS: list[Callable[[str], ModelEntry | None]] = []


def register_resolver(resolve: Callable[[str], ModelEntry | None]) -> None:
    """Add a resolver for a name pattern built on other names (e.g. ``unet_{encoder}``): ``get_entry`` asks it
    for names the table lacks; it returns an entry, or ``None`` when the name is not its pattern."""
    if resolve not in _RESOLVERS:
        _RESOLVERS.append(resolve)


def list_models(pattern: str | None = None, antialiased: bool | None = None) -> list[str]:
    """Registered names, optionally filtered by a glob ``pattern`` and by being anti-aliased."""
    names = [n for n, e in REGISTRY.items() if antialiased is None or e.antialiased == antialiased]
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return sorted(names)


def _classifier_entry(name: str) -> ModelEntry | None:
    """``{arch}`` or ``{arch}_aa{K}`` (any ``K >= 1``), else ``None``."""
    if name in REGISTRY:
        return REGISTRY[name]
    match = _AA_NAME.match(name)
    if match and match["arch"] in ARCHS and int(match["k"]) >= 1:
        base = REGISTRY[match["arch"]]
        return ModelEntry(name, base.arch, base.family, base.cls, base.variant, int(match["k"]))
    return None


def get_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; ``arch_aaK`` with any ``K >= 1`` resolves too, and ``{name}_aps``.

    Raises ``KeyError``-compatible ``UnknownModelError`` naming the closest registered names.
    """
    entry = _classifier_entry(name)
    if entry is not None:
        return entry
    if name.endswith(APS_SUFFIX) and (base := _classifier_entry(name[: -len(APS_SUFFIX)])) is not None:
        if aps_family(base.family, base.variant) is None:
            offered = ", ".join([*APS_FAMILIES, *APS_TORCHVISION])
            raise UnknownModelError(
                f"unknown model {name!r}: APS sampling (_aps) is offered for the {offered} families, not "
                f"{base.variant.get('family', base.family)} ({base.arch}); e.g. resnet18_aps or resnet18_aa4_aps"
            )
        return ModelEntry(name, base.arch, base.family, base.cls, base.variant, base.filter_size, "aps")
    for resolve in _RESOLVERS:  # name patterns over other names (``unet_{encoder}``), not listed among classifiers
        entry = resolve(name)
        if entry is not None:
            return entry
    close = difflib.get_close_matches(name, list(REGISTRY), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}{hint} (architectures: {', '.join(ARCHS)}; "
        f"append _aaK for the anti-aliased model with filter size K, e.g. resnet50_aa4)"
    )


class UnknownModelError(KeyError, ValueError):
    """An unregistered model name."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])
