"""Capture intermediate feature maps of any ``nn.Module`` by module name (forward hooks)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from torch import Tensor, nn

__all__ = ["capture", "default_layers", "resolve_layers"]


def default_layers(model: nn.Module) -> list[str]:
    """The ``feature_info`` module names of a zoo / timm model (one per resolution level)."""
    info = getattr(model, "feature_info", None)
    names = [f["module"] for f in info] if isinstance(info, list) else []
    if not names:
        raise ValueError(
            f"{type(model).__name__} has no feature_info: pass layers=[...] with module names, e.g. {_available(model)}"
        )
    return names


def _available(model: nn.Module, limit: int = 20) -> str:
    names = [n for n, _ in model.named_modules() if n]
    more = f" ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def resolve_layers(model: nn.Module, layers: Sequence[str] | None) -> dict[str, nn.Module]:
    """``{name: module}`` for ``layers`` (default: :func:`default_layers`); clear error on a bad name."""
    names = list(layers) if layers else default_layers(model)
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(
            f"no module named {', '.join(map(repr, missing))} in {type(model).__name__}; available: {_available(model)}"
        )
    return {n: modules[n] for n in names}


@contextlib.contextmanager
def capture(layers: dict[str, nn.Module]) -> Iterator[dict[str, Tensor]]:
    """Within the block, each forward stores ``{name: output}`` of the hooked modules."""
    store: dict[str, Tensor] = {}

    def hook(name: str):
        def fn(_module: nn.Module, _inputs: object, output: Tensor) -> None:
            if not isinstance(output, Tensor):
                raise ValueError(f"layer {name!r} returns {type(output).__name__}, not a tensor")
            store[name] = output

        return fn

    handles = [module.register_forward_hook(hook(name)) for name, module in layers.items()]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()
