"""Fixtures of the timm-bridge tests: a published random resnet18_aa4 folder (written by the
``zoo push --dry-run`` code path) served by the loopback hub of the weights tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support.hub_server import HubServer
from support.scramble import scramble
from timm_testlib import TAG, TEST_ORG

import zoo
from zoo.release import push_weights
from zoo.weights.io import save_state_dict


@pytest.fixture(scope="session")
def source_model() -> torch.nn.Module:
    """The 'published' weights: a random resnet18_aa4 with non-trivial BN statistics."""
    torch.manual_seed(0)
    return scramble(zoo.create("resnet18_aa4")).eval()


@pytest.fixture(scope="session")
def pushed_folder(source_model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``zoo push resnet18_aa4.in1k_ft --dry-run --weights FILE`` output folder."""
    root = tmp_path_factory.mktemp("push")
    weights = save_state_dict(source_model.state_dict(), root / "source.safetensors")
    result = push_weights(TAG, root / "folder", weights=weights, dry_run=True)
    assert not result["uploaded"] and not result["recorded"]
    return Path(result["folder"])


@pytest.fixture
def hub(pushed_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A loopback hub serving the pushed folder as ``{TEST_ORG}/resnet18_aa4.in1k_ft``; the zoo's and
    timm's hub clients both point at it, with empty caches under ``tmp_path``."""
    import huggingface_hub.constants as hf_constants

    for var in ("HF_HUB_OFFLINE", "ZOO_OFFLINE", "HF_HUB_CACHE", "ZOO_MANIFEST"):
        monkeypatch.delenv(var, raising=False)
    server = HubServer().start()
    server.add_repo(f"{TEST_ORG}/{TAG}", pushed_folder)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "zoo-cache"))
    monkeypatch.setenv("ZOO_HUB_ORG", TEST_ORG)
    monkeypatch.setenv("ZOO_UPSTREAM_MIRROR", f"{server.url}/files")  # upstream URLs stay on the loopback
    monkeypatch.setenv("ZOO_DOWNLOAD_RETRIES", "1")
    monkeypatch.setenv("ZOO_RETRY_BACKOFF", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # timm downloads config.json with huggingface_hub's import-time endpoint and cache
    monkeypatch.setattr(hf_constants, "ENDPOINT", server.url)
    monkeypatch.setattr(
        hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    yield server
    server.stop()
