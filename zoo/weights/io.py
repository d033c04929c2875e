"""Reading and writing weights: atomic files, ``save_model_dir`` (timm-compatible folder) and
``load_state_dict_file`` (safetensors or torch checkpoints)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from zoo.io import atomic_path, atomic_write, jsonable
from zoo.pretrained import PretrainedCfg, to_timm_cfg
from zoo.registry import APS_SUFFIX, get_entry
from zoo.weights.errors import CorruptWeightsError

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "load_state_dict_file",
    "read_model_dir",
    "save_model_dir",
    "save_state_dict",
    "sha256_file",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_CHECKPOINT_WRAPPERS = ("state_dict", "model", "state_dict_ema")


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def save_state_dict(state_dict: Mapping[str, Tensor], path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Save a state dict as safetensors, atomically (tensors made contiguous, CPU)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", **(metadata or {})})
    return Path(path)


def _default_model_args(model: nn.Module, name: str) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for key in ("num_classes", "in_chans"):
        if hasattr(model, key):
            args[key] = getattr(model, key)
    if getattr(model, "pad_mode", "reflect") != "reflect":
        args["pad_mode"] = model.pad_mode
    if getattr(model, "aa_stem", False):
        args["aa_stem"] = True
    try:
        named_k = get_entry(name).filter_size
    except KeyError:  # not a registry name: the model's own filter size is the only record
        named_k = None
    if named_k is None and name.endswith(APS_SUFFIX):
        named_k = 1  # ``{arch}_aps`` (and its U-Net) is built with filter size 1: no low-pass
    if getattr(model, "filter_size", None) is not None and model.filter_size != named_k:
        args["filter_size"] = model.filter_size  # a filter_size= override of the name's K
    return args


def save_model_dir(
    model: nn.Module,
    out_dir: str | os.PathLike,
    *,
    name: str,
    model_args: dict | None = None,
    pretrained_cfg: dict | None = None,
    extra_files: dict[str, str | bytes] | None = None,
) -> Path:
    """Write ``model.safetensors`` and a timm-compatible ``config.json`` (plus ``extra_files``) to ``out_dir``.

    ``config.json`` holds ``architecture`` (= ``name``), ``num_classes``, ``num_features``,
    ``pretrained_cfg`` (default: ``model.pretrained_cfg``) and ``model_args`` (default: the
    model's ``num_classes``/``in_chans``, any non-default ``pad_mode``/``aa_stem`` and a ``filter_size``
    that differs from the K of ``name``), so both
    ``zoo.create(name, pretrained=out_dir)`` and ``timm.create_model("local-dir:" + out_dir)``
    rebuild the model. Every file is written atomically. Returns ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model_args is None:
        model_args = _default_model_args(model, name)
    record = PretrainedCfg.from_dict(
        pretrained_cfg if pretrained_cfg is not None else getattr(model, "pretrained_cfg", {})
    )
    num_classes = int(getattr(model, "num_classes", record.num_classes or 0))
    transient = dict.fromkeys(("file", "source", "hf_hub_id", "hf_hub_filename", "url", "state_dict"))
    cfg = to_timm_cfg(record.replace(transient, architecture=name, num_classes=num_classes))
    config = {
        "architecture": name,
        "num_classes": cfg["num_classes"],
        "num_features": int(getattr(model, "num_features", 0)),
        "pretrained_cfg": jsonable(cfg),
        "model_args": jsonable(model_args),
    }
    save_state_dict(model.state_dict(), out / WEIGHTS_NAME)
    atomic_write(out / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    for rel, data in (extra_files or {}).items():
        atomic_write(out / rel, data)
    return out


def _unwrap_checkpoint(obj: Any, path: Path) -> dict[str, Tensor]:
    for _ in range(2):
        if isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _CHECKPOINT_WRAPPERS if k in obj), None)
            if inner is not None:
                obj = inner
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CorruptWeightsError(
            f"{path} is not a state dict: expected a dict of tensors (optionally under "
            f"{'/'.join(_CHECKPOINT_WRAPPERS)}), got {type(obj).__name__}"
        )
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Load a state dict from ``.safetensors`` or a torch checkpoint (``.pth``/``.pt``/``.bin``/``.ckpt``).

    Torch files are read with ``torch.load(weights_only=True)``; ``{"state_dict": ...}`` /
    ``{"model": ...}`` wrappers and a DataParallel ``module.`` prefix are removed.
    Raises ``FileNotFoundError`` for a missing file and ``CorruptWeightsError`` (naming the
    file) for a truncated, corrupt or unsupported one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise CorruptWeightsError(f"cannot read safetensors file {path} (truncated or corrupt?): {err}") from err
    if suffix in TORCH_SUFFIXES:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types (UnpicklingError, RuntimeError, EOFError...)
            raise CorruptWeightsError(
                f"cannot read torch checkpoint {path} (truncated, corrupt, or not a weights-only "
                f"checkpoint): {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            ) from err
        return _unwrap_checkpoint(obj, path)
    raise CorruptWeightsError(
        f"unsupported weights file {path}: expected .safetensors or one of {', '.join(TORCH_SUFFIXES)}"
    )


def read_model_dir(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Load ``(state_dict, config)`` from a folder written by ``save_model_dir`` (or a timm hub folder)."""
    folder = Path(path)
    config_file = folder / CONFIG_NAME
    config: dict[str, Any] = {}
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise CorruptWeightsError(f"cannot parse {config_file}: {err}") from err
    candidates = [folder / WEIGHTS_NAME, *sorted(folder.glob("*.safetensors")), folder / "pytorch_model.bin"]
    candidates += sorted(p for s in TORCH_SUFFIXES for p in folder.glob(f"*{s}"))
    weights = next((p for p in candidates if p.is_file()), None)
    if weights is None:
        raise FileNotFoundError(
            f"no weights in {folder}: expected {WEIGHTS_NAME} (or another .safetensors / .pth file)"
        )
    return load_state_dict_file(weights), config
