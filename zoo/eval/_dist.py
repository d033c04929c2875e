"""Data-parallel evaluation: shard the image stream, gather per-image records.

Under ``torchrun`` each process evaluates a shard of the images; every metric keeps per-image
records keyed by the global image index and :func:`gather_records` merges them in index order on
every rank, so the summary is computed from exactly the same numbers as in a single process.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["gather_records", "init_from_env", "is_main", "rank_world", "shard_positions"]


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_world()[0] == 0


def init_from_env(backend: str = "gloo") -> bool:
    """Join the process group described by torchrun's environment (``WORLD_SIZE`` > 1).

    Returns True when this call created the group (the caller should destroy it at the end).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    dist.init_process_group(backend=backend)
    return True


def shard_positions(n: int, rank: int, world: int, unit: int = 2) -> list[int]:
    """Positions ``0..n-1`` of one rank: blocks of ``unit`` consecutive images, dealt round-robin.

    Blocks of 2 keep the image pairs ``(2j, 2j+1)`` (used by pairwise metrics) in one process.
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= rank < world, got rank={rank}, world={world}")
    return [i for i in range(n) if (i // unit) % world == rank]


def gather_records(records: dict[int, Any]) -> dict[int, Any]:
    """Merge ``{global_index: record}`` dicts of all ranks (every rank gets all, sorted by index).

    An image index that several ranks evaluated (the padding of ``DistributedSampler``, which repeats
    images to even out the shards) is counted once: its offsets are the same everywhere.
    """
    world = rank_world()[1]
    if world > 1:
        parts: list[dict[int, Any] | None] = [None] * world
        dist.all_gather_object(parts, _to_cpu(records))
        merged: dict[int, Any] = {}
        for part in parts:  # an index seen by two ranks (DistributedSampler padding) counts once
            for index, record in (part or {}).items():
                merged.setdefault(index, record)
        records = merged
    return {k: records[k] for k in sorted(records)}


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
