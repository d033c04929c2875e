"""Settings shared by every CLI: the pretrained-weights policy and ``key=value`` overrides.

One vocabulary for "use pretrained weights?" in ``zoo eval --pretrained`` and ``zoo finetune
model.pretrained=``: ``auto`` (weights when obtainable, else random initialisation with a notice),
``required`` (fail without them) and ``none`` (random initialisation). The older fine-tuning spellings
``true``/``false`` still work and print a deprecation message.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

__all__ = ["PRETRAINED_POLICIES", "ConfigError", "deprecated", "parse_override", "pretrained_policy"]

PRETRAINED_POLICIES = ("auto", "required", "none")
_LEGACY_POLICIES = {True: "required", False: "none", "true": "required", "false": "none"}


class ConfigError(ValueError):
    """A configuration file or override is invalid (unknown key, wrong type, value out of range)."""


_SAID: set[tuple[str, str]] = set()


def deprecated(old: str, new: str) -> None:
    """Say once on stderr that spelling ``old`` is deprecated in favour of ``new`` (it keeps working)."""
    if (old, new) in _SAID:
        return
    _SAID.add((old, new))
    print(f"zoo: deprecated: {old} is now spelled {new} (the old spelling still works for now)", file=sys.stderr)


def pretrained_policy(value: Any, option: str = "pretrained", allow_source: bool = False) -> Any:
    """``value`` as one of :data:`PRETRAINED_POLICIES` (legacy ``true``/``false`` mapped, with a message).

    With ``allow_source`` any other string (a weight tag, a path, ``hf-hub:org/repo``) passes unchanged;
    otherwise it is a ``ConfigError`` naming the valid policies.
    """
    key = value.lower() if isinstance(value, str) else value
    if isinstance(key, (bool, str)) and key in _LEGACY_POLICIES:
        new = _LEGACY_POLICIES[key]
        deprecated(f"{option}={str(value).lower()}", f"{option}={new}")
        return new
    if value in PRETRAINED_POLICIES or (allow_source and isinstance(value, str) and value):
        return value
    extra = ", a weight tag, a path or hf-hub:org/repo" if allow_source else ""
    raise ConfigError(f"{option} must be one of {', '.join(PRETRAINED_POLICIES)}{extra}; got {value!r}")


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=0.1"`` -> ``("optim.lr", 0.1)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. train.epochs=3")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: cannot parse the value: {err}") from err
    return key.strip(), value
