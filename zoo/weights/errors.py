"""Errors of the weights subsystem (all ``RuntimeError`` subclasses, so the CLI prints them cleanly)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zoo.weights.manifest import WeightEntry

__all__ = [
    "CorruptWeightsError",
    "HashMismatchError",
    "IncompatibleWeightsError",
    "WeightsUnavailableError",
    "unavailable_hint",
]

OFFLINE_HINT = (
    "to use this machine offline, fetch the weights where the network is reachable with "
    "`zoo download NAME` (or copy the cache folders: $ZOO_CACHE_DIR and $HF_HOME/hub), then set HF_HUB_OFFLINE=1"
)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained; ``attempts`` lists ``(source, reason)`` pairs."""

    def __init__(self, message: str, attempts: Sequence[tuple[str, str]] = (), hint: str | None = None) -> None:
        self.attempts = list(attempts)
        self.hint = hint
        lines = [message]
        lines += [f"  - {source}: {reason}" for source, reason in self.attempts]
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))


class CorruptWeightsError(WeightsUnavailableError):
    """A weights file exists but cannot be read (truncated, corrupt or of an unknown format)."""


class HashMismatchError(WeightsUnavailableError):
    """A downloaded or cached file does not have the SHA-256 recorded for it."""


class IncompatibleWeightsError(WeightsUnavailableError):
    """Weights were obtained but do not fit the model (missing or unexpected keys, wrong shapes)."""


def unavailable_hint(entry: WeightEntry) -> str:
    """What to do when no source of ``entry`` answered: the offline how-to, the commercially usable
    torchvision-initialised tag of the same model (when there is one) and ``zoo doctor``."""
    lines = [OFFLINE_HINT]
    alt = entry.manifest.torchvision_init_tag(entry.model)
    if alt and alt != entry.tag:
        lines.append(
            f"commercially usable alternative: pretrained={alt!r} (torchvision's BSD-3-Clause weights with BlurPool "
            "inserted without fine-tuning: lower accuracy until fine-tuned)"
        )
    lines.append(f"`zoo doctor {entry.model}` checks each source, the caches and the network settings")
    return "\n".join(lines)
