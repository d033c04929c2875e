"""The base of the typed result records of ``zoo eval``.

Every metric returns a dataclass derived from :class:`Result` (or ``{protocol: record}``), defined next to
the metric. ``record.to_dict()`` is its JSON form (what ``results.json`` holds); the record also reads as a
read-only mapping of the same keys (``record["n"]``, ``"n" in record``), for code written against dicts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["OPTIONAL", "PerImage", "Result", "optional_with"]

PerImage = dict[str, list[Any]]  # per-image columns: "index" (global image numbers) and one list per outcome

_WHEN = "zoo.eval.present_when"
# ``field(default=None, metadata=OPTIONAL)``: a field left out of the record's keys while it is None
OPTIONAL: Mapping[str, Any] = MappingProxyType({_WHEN: None})


def optional_with(other: str) -> Mapping[str, Any]:
    """Field metadata: left out of the record's keys while the field ``other`` is ``None`` (e.g. the scores
    relative to a reference model, present once ``reference_model`` is set, even when they are ``None``)."""
    return MappingProxyType({_WHEN: other})


@dataclasses.dataclass
class Result(Mapping[str, Any]):
    """A metric result: typed fields; ``to_dict()`` and mapping access give its present fields."""

    def __iter__(self) -> Iterator[str]:
        for f in dataclasses.fields(self):
            if _WHEN not in f.metadata or getattr(self, f.metadata[_WHEN] or f.name) is not None:
                yield f.name

    def __getitem__(self, key: str) -> Any:
        if key not in list(self):
            raise KeyError(f"{type(self).__name__} has no {key!r}; present: {', '.join(self)}")
        return getattr(self, key)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def to_dict(self) -> dict[str, Any]:
        """The present fields as plain dicts and lists (nested records converted too)."""
        return {key: _plain(getattr(self, key)) for key in self}


def _plain(value: Any) -> Any:
    if isinstance(value, Result):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value
