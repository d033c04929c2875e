"""Data-parallel plumbing shared by ``zoo eval`` and ``zoo finetune``: join torchrun's process group (gloo on
CPU, nccl on GPU), pick devices, shard the images, reduce and gather results.

Under ``torchrun`` each process evaluates a shard of the images; every metric keeps per-image records keyed
by the global image index and :func:`gather_records` merges them in index order on every rank, so the
summary is computed from exactly the same numbers as in a single process. Training sums its per-batch
figures with :func:`reduce_sums`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistContext",
    "broadcast_object",
    "gather_records",
    "is_main",
    "rank_world",
    "reduce_sums",
    "setup",
    "shard_positions",
]


@dataclass
class DistContext:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _device(name: str, local_rank: int, option: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"{option}={name} but CUDA is not available here; use {option}=cpu")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    return torch.device(name)


def setup(device: str = "auto", option: str = "train.device") -> DistContext:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); pick this process's device.

    ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda`` (this process's local GPU) or ``cuda:N``;
    ``option`` names the setting in the error raised when CUDA is asked for but missing.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device(device, local_rank, option)
    owns = False
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    return DistContext(rank, world, local_rank, dev, owns)


def reduce_sums(values: list[float], ctx: DistContext) -> list[float]:
    """Sum ``values`` over all processes (identity in a single process)."""
    if not ctx.distributed:
        return list(values)
    backend_device = ctx.device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=backend_device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_world()[0] == 0


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
