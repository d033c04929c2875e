"""Checkpoints of a fine-tuning run, all in its run directory and all written atomically:

- ``model.safetensors`` + ``config.json`` (``zoo.weights.io.save_model_dir``): the model, loadable with
  ``zoo.create(name, pretrained=DIR)`` and ``timm.create_model("local-dir:DIR", pretrained=True)``;
- ``train_state.pt``: everything ``train.resume`` needs (model weights, optimizer, schedule, epoch,
  history, early-stopping state, a fingerprint of what was trained), self-contained so that a run killed
  between the two writes still resumes exactly.

``train_state.pt`` is written first, into a temp file that replaces the previous one with ``os.replace``.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.io import atomic_path
from zoo.weights.io import save_model_dir

__all__ = [
    "STATE_NAME",
    "CheckpointError",
    "check_compatible",
    "load_train_state",
    "save_checkpoint",
]

STATE_NAME = "train_state.pt"
COMPAT_KEYS = ("model", "num_classes", "in_chans", "classes", "mode", "optimizer")


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed (corrupt, missing or trained with an incompatible setup)."""


def _write_state(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(
    run_dir: str | os.PathLike,
    model: nn.Module,
    *,
    name: str,
    state: dict[str, Any],
    pretrained_cfg: dict[str, Any],
    metadata: dict[str, Any],
    model_args: dict[str, Any] | None = None,
) -> Path:
    """Write ``train_state.pt`` (with the model weights), then ``model.safetensors`` + ``config.json``
    (``model_args``: the build arguments recorded there; default: ``save_model_dir``'s)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    _write_state(run_dir / STATE_NAME, {**state, "model": weights})
    extra = {"finetune.json": json.dumps(metadata, indent=2, default=str) + "\n"}
    save_model_dir(model, run_dir, name=name, model_args=model_args, pretrained_cfg=pretrained_cfg, extra_files=extra)
    return run_dir


def load_train_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``train_state.pt`` (a file or the run directory holding it); clear errors naming the file."""
    path = Path(path)
    if path.is_dir():
        path = path / STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume: {path} does not exist (train.resume takes a run directory)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated / foreign files
        raise CheckpointError(f"cannot read {path} (truncated or not a zoo fine-tuning checkpoint): {err}") from err
    if not isinstance(state, dict) or "fingerprint" not in state or "epoch" not in state:
        raise CheckpointError(f"{path} is not a zoo fine-tuning checkpoint (no fingerprint/epoch)")
    return state


def check_compatible(state: dict[str, Any], fingerprint: dict[str, Any], path: str | os.PathLike) -> None:
    """Raise ``CheckpointError`` listing every difference between the checkpoint and this run."""
    saved = state["fingerprint"]
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r}, this run {fingerprint.get(k)!r}"
        for k in COMPAT_KEYS
        if saved.get(k) != fingerprint.get(k)
    ]
    if diffs:
        raise CheckpointError(f"cannot resume from {path}: it was trained with a different setup ({'; '.join(diffs)})")
