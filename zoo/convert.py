"""Whole-checkpoint conversions (``zoo convert``, ``scripts/convert_*.py``): official-release or torchvision
checkpoints -> a zoo folder, built with ``zoo.create`` and checked against the oracle. Above the builder."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

from zoo.builder import create
from zoo.pretrained import PretrainedCfg, to_timm_cfg
from zoo.registry import get_entry
from zoo.weights.errors import IncompatibleWeightsError
from zoo.weights.io import load_state_dict_file, save_model_dir
from zoo.weights.keymaps import to_zoo_keys
from zoo.weights.load import check_weights_filter_size, fit_problems, official_filter_size

__all__ = ["convert_official", "convert_torchvision", "official_model_name", "oracle_logits_diff"]


_OFFICIAL_NAME = re.compile(r"^(?P<arch>.+?)_lpf(?P<k>\d+)(?P<ft>_finetune)?(?:-[0-9a-f]+)?$")


def official_model_name(path: str | Path) -> tuple[str, bool]:
    """``resnet50_lpf4_finetune-cad66808.pth`` -> ``("resnet50_aa4", True)`` (zoo name, fine-tuned)."""
    stem = Path(path).name.split(".", 1)[0]
    match = _OFFICIAL_NAME.match(stem)
    if not match:
        raise ValueError(
            f"cannot infer the model from {Path(path).name!r}: expected ARCH_lpfK[_finetune][-HASH].pth "
            "(as published), or pass the zoo model name explicitly"
        )
    return f"{match['arch']}_aa{match['k']}", bool(match["ft"])


def _load_into(name: str, state: dict[str, Tensor], origin: str, filter_size: int | None = None) -> torch.nn.Module:
    """Build ``name`` and load ``state`` (zoo keys) strictly; a one-line ``IncompatibleWeightsError``
    naming the keys when it does not fit, or the filter size ``filter_size`` read from an official file
    when it differs from the model's."""
    model = create(name)
    problems = fit_problems(model, state)
    if problems:
        raise IncompatibleWeightsError(f"{origin} does not fit {name}: {problems}")
    if filter_size is not None:
        check_weights_filter_size(model, name, (filter_size, "read from their .filt buffers"), origin)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _check_out_dir(out_dir: str | Path) -> None:
    """Refuse an output folder that is an existing file (or lies under one) before any work is done."""
    out = Path(out_dir)
    for path in (out, *out.parents):
        if path.exists() and not path.is_dir():
            where = "is" if path == out else f"is inside {path}, which is"
            raise ValueError(f"output folder {out} {where} an existing file; give a folder path (created if missing)")


def convert_torchvision(source: str | Path, name: str, out_dir: str | Path) -> Path:
    """A torchvision checkpoint file, or a weights enum such as ``"ResNet50_Weights.IMAGENET1K_V1"``
    (downloaded by torchvision), -> a zoo folder (``model.safetensors`` + ``config.json``).

    Keys are matched by name (zoo keys == torchvision keys) with ``strict=True``; ``name`` may be
    the baseline (``resnet50``) or an anti-aliased model (``resnet50_aa4``: the blur has no weights).
    """
    _check_out_dir(out_dir)
    text = str(source)
    if Path(text).exists():
        state = load_state_dict_file(text)
        origin = Path(text).name
    else:
        import torchvision

        enum_name, _, member = text.partition(".")
        enum = getattr(torchvision.models, enum_name, None)
        if enum is None or not member or not hasattr(enum, member):
            raise ValueError(
                f"{text!r} is neither an existing checkpoint nor a torchvision weights enum like "
                "'ResNet50_Weights.IMAGENET1K_V1'"
            )
        weights = getattr(enum, member)
        state = weights.get_state_dict(progress=True)
        origin = weights.url
    model = _load_into(name, state, f"the torchvision checkpoint {origin}")
    record = PretrainedCfg.from_dict(model.pretrained_cfg)
    cfg = to_timm_cfg(record.replace(converted_from=origin, license="bsd-3-clause"))
    return save_model_dir(model, out_dir, name=name, model_args={}, pretrained_cfg=cfg)


def oracle_logits_diff(official_state: dict[str, Tensor], model, name: str, size: int = 64) -> float | None:
    """Max |logits| difference between ``model`` and the ``antialiased-cnns`` oracle loaded with the
    official state dict, on a seeded random batch; ``None`` when the oracle is not installed."""
    try:
        import antialiased_cnns
    except ImportError:
        return None
    entry = get_entry(name)
    oracle = getattr(antialiased_cnns, entry.arch)(filter_size=entry.filter_size)
    oracle.load_state_dict(official_state, strict=True)
    oracle.eval()
    generator = torch.Generator().manual_seed(0)
    for side in (max(size, int(getattr(model, "min_input_size", 1))), 128, 224):
        x = torch.randn(2, 3, side, side, generator=generator)
        try:
            with torch.no_grad():
                return float((oracle(x) - model.eval()(x)).abs().max())
        except RuntimeError:  # the oracle's reflect padding needs larger maps than the zoo's minimum
            continue
    raise RuntimeError(f"could not run the oracle {entry.arch} for comparison")


def convert_official(
    path: str | Path, out_dir: str | Path, name: str | None = None, verify: bool = True
) -> tuple[Path, float | None]:
    """An official release ``.pth`` -> a zoo folder, via the key-rename table.

    With ``verify`` (and the oracle package installed) the logits of the converted model are
    compared with the oracle's; a difference above 1e-4 raises ``RuntimeError``. Returns
    ``(folder, max logits difference or None)``.
    """
    _check_out_dir(out_dir)
    name = name or official_model_name(path)[0]
    entry = get_entry(name)
    official = load_state_dict_file(path)
    renamed = to_zoo_keys(official, entry.arch, "official")
    model = _load_into(name, renamed, f"the official checkpoint {Path(path).name}", official_filter_size(official))
    diff = oracle_logits_diff(official, model, name) if verify else None
    if diff is not None and diff > 1e-4:
        raise RuntimeError(f"converted {name} differs from the oracle by {diff:.3g} in logits (tolerance 1e-4)")
    record = PretrainedCfg.from_dict(model.pretrained_cfg)
    cfg = to_timm_cfg(record.replace(converted_from=Path(path).name, license="cc-by-nc-sa-4.0"))
    return save_model_dir(model, out_dir, name=name, model_args={}, pretrained_cfg=cfg), diff
