"""Common plumbing of the metrics: batch unpacking, global image indices, eval mode, devices."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from zoo.distributed import rank_world

__all__ = ["Batch", "evaluating", "iter_batches", "model_device", "run_chunked"]

Batch = tuple[Tensor, "Tensor | None", Tensor]


def model_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """``device`` if given, else the device of the model's first parameter (CPU without parameters)."""
    if device is not None:
        return torch.device(device)
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def evaluating(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """Eval mode + ``torch.no_grad()`` on ``device``; the previous train/eval mode is restored after."""
    was_training = model.training
    model.to(device).eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def iter_batches(batches: Iterable[Any], device: torch.device) -> Iterator[Batch]:
    """Yield ``(images, labels_or_None, global_indices)`` from ``batches``.

    ``batches`` yields ``(images, labels_or_None)`` or ``(images, labels_or_None, indices)`` (as the
    zoo's data sources do), or bare image tensors. Without indices, images are numbered by a running
    counter; under ``torch.distributed`` image ``k`` of rank ``r`` gets ``k * world + r``, which is
    its index in the dataset when a ``DistributedSampler(shuffle=False)`` made the shards.
    """
    rank, world = rank_world()
    counter = 0
    for item in batches:
        if isinstance(item, Tensor):
            images, labels, indices = item, None, None
        elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
            images, labels = item[0], item[1]
            indices = item[2] if len(item) == 3 else None
        else:
            raise ValueError(
                "each batch must be an image tensor, (images, labels_or_None) or (images, labels, indices); "
                f"got {type(item).__name__}"
            )
        if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be a float tensor (N, C, H, W) of normalized pixels, got {shape}")
        n = images.shape[0]
        if indices is None:
            indices = torch.arange(counter, counter + n) * world + rank
        indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if indices.numel() != n:
            raise ValueError(f"a batch of {n} images came with {indices.numel()} indices")
        counter += n
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
            if labels.numel() != n:
                raise ValueError(f"a batch of {n} images came with {labels.numel()} labels")
            labels = labels.to(device)
        yield images.to(device), labels, indices


def run_chunked(model: nn.Module, x: Tensor, chunk: int) -> Tensor:
    """``model(x)`` evaluated ``chunk`` samples at a time (bounded memory for big view batches)."""
    if chunk <= 0 or x.shape[0] <= chunk:
        return model(x)
    return torch.cat([model(part) for part in x.split(chunk)])
