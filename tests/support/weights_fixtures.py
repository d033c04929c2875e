"""Fixtures of the weights and CLI tests: isolated caches, a loopback hub, a test manifest pointing at it.

Imported by ``tests/weights/conftest.py`` and ``tests/cli/conftest.py``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

import zoo
from support.hub_server import HubServer
from support.threads import one_thread
from support.weights_testlib import MODEL, TAG, TEST_ORG, write_manifest
from zoo.release import push_weights
from zoo.weights.io import save_state_dict

__all__ = ["env", "fast_retries", "hub", "one_thread", "random_model_file", "repo_folder"]  # the fixtures


class FastTime:
    """Stands in for the ``time`` module inside huggingface_hub: records sleeps instead of waiting."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def __getattr__(self, name: str):
        return getattr(time, name)


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> FastTime:
    """huggingface_hub's retry backoff (1-8 s per retry) without the waiting."""
    import huggingface_hub.file_download as fd
    import huggingface_hub.utils._http as http

    fake = FastTime()
    monkeypatch.setattr(fd, "time", fake)
    monkeypatch.setattr(http, "time", fake)
    return fake


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty caches under tmp_path, online, no mirror, no waiting between our own retries."""
    mirrors = ("ZOO_UPSTREAM_MIRROR", "ZOO_WEIGHTS_MIRROR")
    for var in ("HF_HUB_OFFLINE", "ZOO_OFFLINE", "HF_HUB_CACHE", *mirrors, "ZOO_MANIFEST", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "zoo-cache"))
    monkeypatch.setenv("ZOO_HUB_ORG", TEST_ORG)
    monkeypatch.setenv("ZOO_DOWNLOAD_RETRIES", "2")
    monkeypatch.setenv("ZOO_RETRY_BACKOFF", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return tmp_path


@pytest.fixture
def hub(env: Path, monkeypatch: pytest.MonkeyPatch):
    """A started loopback hub; HF_ENDPOINT points at it; ZOO_MANIFEST is a copy of the packaged
    manifest whose upstream URLs point at the same server's /files/ (404 unless a file is added)."""
    server = HubServer().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    write_manifest(env / "manifest.json", server.url)
    monkeypatch.setenv("ZOO_MANIFEST", str(env / "manifest.json"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def random_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init MODEL saved as safetensors (the 'published' weights of the tests)."""
    torch.manual_seed(0)
    model = zoo.create(MODEL)
    path = tmp_path_factory.mktemp("weights") / f"{MODEL}.safetensors"
    return save_state_dict(model.state_dict(), path)


@pytest.fixture(scope="session")
def repo_folder(random_model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hub folder of TAG written by `push --dry-run` from the random weights."""
    out = tmp_path_factory.mktemp("repo") / TAG
    result = push_weights(TAG, out, weights=random_model_file, dry_run=True)
    assert result["uploaded"] is False and result["recorded"] is False
    return Path(result["folder"])
