"""Errors of the weights subsystem (all ``RuntimeError`` subclasses, so the CLI prints them cleanly)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["CorruptWeightsError", "HashMismatchError", "IncompatibleWeightsError", "WeightsUnavailableError"]

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
