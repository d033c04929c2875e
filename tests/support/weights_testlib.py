"""Helpers shared by the weights tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from zoo.weights.manifest import MANIFEST_PATH

TEST_ORG = "testorg"
TAG = "mobilenet_v2_aa4.in1k_ft"  # the smallest official model (3.5 M parameters)
MODEL = "mobilenet_v2_aa4"


def write_manifest(path: Path, base_url: str, **overrides: dict) -> Path:
    """The packaged manifest with every upstream URL moved to ``{base_url}/files/NAME``;
    ``overrides`` maps a tag to a function-free dict merged into that entry's sources by type."""
    data = json.loads(MANIFEST_PATH.read_text())
    for group in data["groups"].values():
        group["url_base"] = f"{base_url}/files"
    for tag, by_type in overrides.items():
        for kind, fields in by_type.items():  # a source type ("url", "hf-hub") -> fields of that source
            data["weights"][tag].setdefault(kind, {}).update(fields)
    path.write_text(json.dumps(data))
    return path


def hub_cache_files(root: Path) -> list[Path]:
    """Every regular file or link under the HF cache's blobs/ and snapshots/ folders."""
    hub_dir = root / "hf" / "hub"
    return [
        p
        for p in hub_dir.rglob("*")
        if (p.is_file() or p.is_symlink()) and ("blobs" in p.parts or "snapshots" in p.parts)
    ]


def logits(model: torch.nn.Module, seed: int = 0) -> torch.Tensor:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


def broken_copy(folder: Path, dest: Path, config_text: str, keep: tuple[str, ...] = ("model.safetensors",)) -> Path:
    """Copy the files ``keep`` of a weights ``folder`` to ``dest`` and write ``config_text`` as its config.json."""
    dest.mkdir()
    for name in keep:
        (dest / name).write_bytes((folder / name).read_bytes())
    (dest / "config.json").write_text(config_text)
    return dest


def all_sources_down_error(hub: Any, monkeypatch: pytest.MonkeyPatch, model: str = MODEL) -> Exception:
    """The ``WeightsUnavailableError`` of ``zoo.create(model, pretrained=True)`` when every source answers 503."""
    import zoo
    from zoo.weights import WeightsUnavailableError

    hub.fault(status=503)
    monkeypatch.setenv("ZOO_DOWNLOAD_RETRIES", "1")
    with pytest.raises(WeightsUnavailableError) as info:
        zoo.create(model, pretrained=True)
    return info.value
