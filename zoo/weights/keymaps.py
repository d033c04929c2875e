"""The one key-renaming step: official-release and torchvision state dicts -> zoo (torchvision) keys,
driven by the rename tables in ``keymaps/*.json`` (data, not code)."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

from torch import Tensor

__all__ = ["KEYMAP_DIR", "KEY_FORMATS", "is_official", "rename_keys", "to_zoo_keys"]

KEYMAP_DIR = Path(__file__).with_name("keymaps")
KEY_FORMATS = ("official", "torchvision", "zoo")


@cache
def _keymap(source: str) -> dict:
    path = KEYMAP_DIR / f"{source}.json"
    if not path.is_file():
        valid = ", ".join(p.stem for p in KEYMAP_DIR.glob("*.json"))
        raise ValueError(f"no key map for source {source!r}; available: {valid}")
    return json.loads(path.read_text())


def rename_keys(state_dict: dict[str, Tensor], arch: str, source: str = "official") -> dict[str, Tensor]:
    """Rewrite the keys of a ``source``-format state dict of ``arch`` into zoo (torchvision) keys."""
    keymap = _keymap(source)
    if arch not in keymap["archs"]:
        raise ValueError(f"no {source} key map for {arch!r}; covered: {', '.join(sorted(keymap['archs']))}")
    table = keymap["tables"][keymap["archs"][arch]]
    drop = [re.compile(p) for p in table.get("drop", [])]
    rules = [(re.compile(p), r) for p, r in table.get("rename", [])]
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if any(p.search(key) for p in drop):
            continue
        for pattern, replacement in rules:
            if pattern.search(key):
                key = pattern.sub(replacement, key, count=1)
                break
        out[key] = value
    return out


def is_official(state_dict: dict[str, Tensor]) -> bool:
    """An official-release state dict: its BlurPool buffers are named ``.filt``."""
    return any(k.endswith(".filt") for k in state_dict)


def to_zoo_keys(state_dict: dict[str, Tensor], arch: str, fmt: str | None = None) -> dict[str, Tensor]:
    """``state_dict`` in zoo keys. ``fmt`` is the declared format (``official``, ``torchvision`` or ``zoo``);
    ``None`` recognises an official checkpoint by its ``.filt`` buffers. Every rename goes through here."""
    if fmt is None:
        fmt = "official" if is_official(state_dict) else "zoo"
    if fmt == "official":
        return rename_keys(state_dict, arch, source="official")
    if fmt in ("torchvision", "zoo"):
        return state_dict
    raise ValueError(f"unknown weights format {fmt!r}; valid: {', '.join(KEY_FORMATS)}")
