"""Real processes sharing one zoo cache: concurrent first loads, and a download killed with SIGKILL."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from support.weights_testlib import MODEL, logits

import zoo
from zoo.weights.io import load_state_dict_file
from zoo.weights.sources import fetch_url

WORKER = Path(__file__).with_name("cache_worker.py")


def _official(folder: Path) -> tuple[Path, torch.nn.Module]:
    import antialiased_cnns

    torch.manual_seed(7)
    oracle = antialiased_cnns.mobilenet_v2(filter_size=4).eval()
    tmp = folder / "tmp.pth"
    torch.save({"state_dict": oracle.state_dict()}, tmp)
    path = folder / f"mobilenet_v2_lpf4_finetune-{hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]}.pth"
    tmp.rename(path)
    return path, oracle


def _worker(url: str, prefix: str, tmp: Path, i: int, delay: float) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, str(WORKER), url, prefix, str(tmp / f"ready{i}"), str(tmp / "go"), str(delay)]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_ten_processes_fill_an_empty_cache_together(hub, env, tmp_path):
    """Issue 10 item 5: staggered processes loading one weight into an empty cache never delete each
    other's files (each one gets the same cached file, nobody sees a FileNotFoundError)."""
    path, oracle = _official(tmp_path)
    url = hub.add_file(path)
    prefix = path.stem.rsplit("-", 1)[1]
    procs = [_worker(url, prefix, tmp_path, i, delay=0.02 * i) for i in range(10)]
    try:
        _wait_for(lambda: all((tmp_path / f"ready{i}").exists() or p.poll() is not None for i, p in enumerate(procs)),
                  600, "the workers to import")  # fmt: skip
        (tmp_path / "go").touch()
        results = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    failures = [err[-2000:] for p, (_, err) in zip(procs, results, strict=True) if p.returncode != 0]
    assert not failures, failures[0]
    digests = {out.strip() for out, _ in results}
    assert len(digests) == 1
    upstream = env / "zoo-cache" / "upstream"
    kept = sorted(p.name for p in upstream.iterdir() if p.suffix != ".lock")
    assert kept == [f"{path.stem}.json", f"{path.stem}.safetensors"], "no temp file left behind"
    model = zoo.create(MODEL)
    model.load_state_dict(load_state_dict_file(upstream / f"{path.stem}.safetensors"))
    assert torch.allclose(logits(model), logits(oracle), atol=1e-5)


def test_download_killed_with_sigkill_is_cleaned_and_resumed(hub, env, tmp_path):
    """Issue 10 item 6: the next run removes the killed run's temp files and resumes with HTTP Range."""
    path, oracle = _official(tmp_path)
    url = hub.add_file(path)
    prefix = path.stem.rsplit("-", 1)[1]
    stall = 5 * 2**20 + 123  # the worker writes 5 full 1 MiB chunks, then the server hangs
    hub.fault(stall_at=stall, times=1, match="/files/")
    upstream = env / "zoo-cache" / "upstream"
    upstream.mkdir(parents=True)
    legacy = upstream / f".{path.stem}.k2j4x9.pth"  # what a killed 0.1.0 download left behind
    legacy.write_bytes(b"partial")
    (tmp_path / "go").touch()
    proc = _worker(url, prefix, tmp_path, 0, delay=0)
    try:
        parts = lambda: [p for p in upstream.glob(f".{path.stem}.*.part.pth") if p.stat().st_size >= 5 * 2**20]  # noqa: E731
        _wait_for(lambda: parts() or proc.poll() is not None, 600, "the download to start")
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    size = parts()[0].stat().st_size
    assert size == 5 * 2**20

    dest = fetch_url(url, fmt="official", arch="mobilenet_v2", sha256_prefix=prefix)
    assert ("GET", f"/files/{path.name}", f"bytes={size}-") in hub.requests, "resumed with HTTP Range"
    assert not list(upstream.glob(f".{path.stem}.*")), "the killed run's temp files were removed"
    model = zoo.create(MODEL)
    model.load_state_dict(load_state_dict_file(dest))
    assert torch.allclose(logits(model), logits(oracle), atol=1e-5)


def test_partial_download_restarts_when_the_server_ignores_range(hub, env, tmp_path):
    from zoo.weights.sources import download_url

    source = tmp_path / "blob.bin"
    source.write_bytes(os.urandom(300_000))
    url = hub.add_file(source)
    dest = tmp_path / "partial.bin"
    dest.write_bytes(b"x" * 1000)  # not a prefix of the file
    hub.accept_ranges = False
    download_url(url, dest)
    assert dest.read_bytes() == source.read_bytes()
    assert ("GET", "/files/blob.bin", "bytes=1000-") in hub.requests

    hub.accept_ranges = True
    dest.write_bytes(source.read_bytes()[:123_456])  # a true prefix: only the rest is fetched
    download_url(url, dest)
    assert dest.read_bytes() == source.read_bytes()
    assert ("GET", "/files/blob.bin", "bytes=123456-") in hub.requests


def test_a_mirrors_partial_download_survives_a_failing_primary(hub, env, tmp_path):
    """The primary answering an error (the S3 403) must not delete the mirror's partial download."""
    from zoo.weights.sources import _partial_path, fetch_url_source

    path, oracle = _official(tmp_path)
    mirror = hub.add_file(path, f"mirror/{path.name}")
    src = {"type": "url", "url": f"{hub.url}/files/gone/{path.name}", "format": "official",
           "sha256_prefix": path.stem.rsplit("-", 1)[1], "mirrors": [mirror]}  # fmt: skip
    upstream = env / "zoo-cache" / "upstream"
    upstream.mkdir(parents=True)
    partial = _partial_path(upstream, path.stem, mirror)
    partial.write_bytes(path.read_bytes()[:3_000_000])  # what a killed download from the mirror left
    attempts: list = []
    found = fetch_url_source(src, "mobilenet_v2", attempts)
    assert found is not None and len(attempts) == 1 and "HTTP 404" in attempts[0][1]
    assert ("GET", f"/files/mirror/{path.name}", "bytes=3000000-") in hub.requests
    assert not list(upstream.glob(f".{path.stem}.*"))
    model = zoo.create(MODEL)
    model.load_state_dict(load_state_dict_file(found[0]))
    assert torch.allclose(logits(model), logits(oracle), atol=1e-5)
