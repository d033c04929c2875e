"""Loading through the hub protocol (loopback server), the upstream fallback, and failures."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from support.weights_testlib import (
    MODEL,
    TAG,
    TEST_ORG,
    all_sources_down_error,
    hub_cache_files,
    logits,
    write_manifest,
)

import zoo
import zoo.weights.load
from zoo.weights import HashMismatchError, WeightsUnavailableError
from zoo.weights.io import load_state_dict_file

REPO = f"{TEST_ORG}/{TAG}"


def _reference(random_model_file: Path) -> torch.nn.Module:
    model = zoo.create(MODEL)
    model.load_state_dict(load_state_dict_file(random_model_file))
    return model


def test_hub_download_then_offline_cache(hub, env, repo_folder, random_model_file, monkeypatch):
    hub.add_repo(REPO, repo_folder)
    monkeypatch.setattr(zoo.weights.load, "_WARNED_LICENSES", set())
    with pytest.warns(UserWarning, match="NonCommercial") as record:
        model = zoo.create(MODEL, pretrained=True)
    assert record[0].filename == __file__, "the warning points at the caller"
    expected = logits(_reference(random_model_file))
    assert torch.equal(logits(model), expected)
    assert ("HEAD", f"/{REPO}/resolve/main/model.safetensors", None) in hub.requests
    assert model.pretrained_cfg["hf_hub_id"] == REPO
    assert model.pretrained_cfg["source"].startswith(f"hf-hub:{REPO}")
    assert model.pretrained_cfg["license"] == "cc-by-nc-sa-4.0"
    assert any(p.name == "model.safetensors" for p in hub_cache_files(env))

    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the license warning is shown once per process
        again = zoo.create(MODEL, pretrained="in1k_ft")
    assert torch.equal(logits(again), expected)


@pytest.mark.slow
def test_offline_load_in_fresh_process(hub, env, repo_folder):
    """The real environment variables, read by a new interpreter (huggingface_hub reads some at import)."""
    hub.add_repo(REPO, repo_folder)
    code = (
        f"import zoo, torch; m = zoo.create({MODEL!r}, pretrained=True).eval(); "
        "x = torch.ones(1, 3, 64, 64); print(float(m(x).sum()))"
    )
    child_env = {**os.environ}
    online = subprocess.run([sys.executable, "-c", code], env=child_env, capture_output=True, text=True, timeout=300)
    assert online.returncode == 0, online.stderr
    hub.stop()
    child_env["HF_HUB_OFFLINE"] = "1"
    offline = subprocess.run([sys.executable, "-c", code], env=child_env, capture_output=True, text=True, timeout=300)
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.strip() == online.stdout.strip()


def test_wrong_manifest_hash_leaves_nothing_cached(hub, env, repo_folder, monkeypatch):
    hub.add_repo(REPO, repo_folder)
    write_manifest(env / "manifest.json", hub.url, **{TAG: {"hf-hub": {"sha256": "0" * 64}}})
    with pytest.raises(WeightsUnavailableError, match="SHA-256 mismatch") as info:
        zoo.create(MODEL, pretrained=True)
    assert "removed from the cache" in str(info.value)
    assert hub_cache_files(env) == []


def test_hub_file_corrupted_in_transit_is_rejected(hub, env, repo_folder):
    """Bytes that do not match the hub's ETag (the LFS SHA-256) are rejected even without a manifest hash."""
    hub.add_repo(REPO, repo_folder)
    hub.fault(corrupt=True, match="model.safetensors")
    with pytest.raises(WeightsUnavailableError, match="SHA-256 mismatch"):
        zoo.create(MODEL, pretrained=True)
    assert hub_cache_files(env) == []


def test_connection_dropped_once_is_resumed(hub, env, repo_folder, random_model_file, fast_retries):
    hub.add_repo(REPO, repo_folder)
    hub.fault(drop_at=12_000_000, times=1, match="model.safetensors")  # > one 10 MiB chunk
    model = zoo.create(MODEL, pretrained=True)
    assert torch.equal(logits(model), logits(_reference(random_model_file)))
    assert any((r[2] or "").startswith("bytes=") for r in hub.requests), hub.requests


def test_connection_always_dropped_fails_cleanly(hub, env, repo_folder, fast_retries):
    hub.add_repo(REPO, repo_folder)
    hub.fault(drop_at=1_000_000, match="model.safetensors")
    with pytest.raises(WeightsUnavailableError) as info:
        zoo.create(MODEL, pretrained=True)
    message = str(info.value)
    assert f"hf-hub:{REPO}" in message and "mobilenet_v2_lpf4_finetune" in message
    gets = [r for r in hub.requests if r[0] == "GET" and "model.safetensors" in r[1]]
    assert len(gets) > 2  # retried
    assert hub_cache_files(env) == []
    assert not list((env / "hf").rglob("*.incomplete"))


def test_http_500_once_is_retried(hub, env, repo_folder, random_model_file, fast_retries):
    hub.add_repo(REPO, repo_folder)
    hub.fault(status=500, times=1)
    model = zoo.create(MODEL, pretrained=True)
    assert torch.equal(logits(model), logits(_reference(random_model_file)))


def test_http_500_always_is_a_clear_error(hub, env, repo_folder, fast_retries):
    hub.add_repo(REPO, repo_folder)
    hub.fault(status=500)
    with pytest.raises(WeightsUnavailableError, match="sources tried") as info:
        zoo.create(MODEL, pretrained=True)
    assert "500" in str(info.value)
    assert len(fast_retries.sleeps) >= 3  # huggingface_hub backed off and retried
    assert hub_cache_files(env) == []


def _official_file(folder: Path, seed: int = 1) -> tuple[Path, torch.nn.Module]:
    import antialiased_cnns  # the oracle (a dev dependency)

    torch.manual_seed(seed)
    oracle = antialiased_cnns.mobilenet_v2(filter_size=4).eval()
    tmp = folder / "tmp.pth"
    torch.save({"state_dict": oracle.state_dict()}, tmp)
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = folder / f"mobilenet_v2_lpf4_finetune-{sha[:8]}.pth"
    tmp.rename(path)
    return path, oracle


def _point_url_at(env: Path, hub, path: Path, **hub_override) -> None:
    write_manifest(
        env / "manifest.json",
        hub.url,
        **{TAG: {"url": {"url": hub.add_file(path), "sha256_prefix": path.stem.rsplit("-", 1)[1]}, **hub_override}},
    )


def test_hub_404_falls_back_to_upstream_official(hub, env, tmp_path, monkeypatch):
    path, oracle = _official_file(tmp_path)
    _point_url_at(env, hub, path)
    model = zoo.create(MODEL, pretrained=True)  # no repo on the hub: 404 RepoNotFound
    assert torch.equal(logits(model), logits(oracle)) or torch.allclose(logits(model), logits(oracle), atol=1e-5)
    assert model.pretrained_cfg["source"].endswith("(official format)")
    cached = list((env / "zoo-cache" / "upstream").glob("*.safetensors"))
    assert [p.name for p in cached] == [f"{path.stem}.safetensors"]
    assert not list((env / "zoo-cache").rglob("*.pth")), "the downloaded .pth is not kept"

    hub.stop()  # cached: no network needed any more
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert torch.allclose(logits(zoo.create(MODEL, pretrained=True)), logits(oracle), atol=1e-5)


def test_corrupt_converted_cache_is_fetched_again(hub, env, tmp_path):
    path, oracle = _official_file(tmp_path)
    _point_url_at(env, hub, path)
    zoo.create(MODEL, pretrained=True)
    cached = next((env / "zoo-cache" / "upstream").glob("*.safetensors"))
    cached.write_bytes(cached.read_bytes()[:1000])  # truncated
    downloads = sum(1 for r in hub.requests if r[1].startswith("/files/"))
    model = zoo.create(MODEL, pretrained=True)
    assert torch.allclose(logits(model), logits(oracle), atol=1e-5)
    assert sum(1 for r in hub.requests if r[1].startswith("/files/")) == downloads + 1


def test_upstream_wrong_hash_leaves_nothing(hub, env, tmp_path):
    path, _ = _official_file(tmp_path)
    write_manifest(
        env / "manifest.json", hub.url, **{TAG: {"url": {"url": hub.add_file(path), "sha256_prefix": "deadbeef"}}}
    )
    with pytest.raises(WeightsUnavailableError, match="expected a hash starting deadbeef"):
        zoo.create(MODEL, pretrained=True)
    leftovers = [p for p in (env / "zoo-cache").rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert leftovers == []


def test_upstream_500_is_retried_then_reported(hub, env, tmp_path):
    path, _ = _official_file(tmp_path)
    _point_url_at(env, hub, path)
    hub.fault(status=500, match="/files/")
    with pytest.raises(WeightsUnavailableError, match="failed after 2 attempt"):
        zoo.create(MODEL, pretrained=True)
    assert sum(1 for r in hub.requests if r[1].startswith("/files/")) == 2
    assert [p for p in (env / "zoo-cache").rglob("*") if p.is_file() and p.suffix != ".lock"] == []


def test_upstream_drop_once_then_success(hub, env, tmp_path):
    path, oracle = _official_file(tmp_path)
    _point_url_at(env, hub, path)
    hub.fault(drop_at=5000, times=1, match="/files/")
    model = zoo.create(MODEL, pretrained=True)
    assert torch.allclose(logits(model), logits(oracle), atol=1e-5)


def test_mirror_is_tried_first(hub, env, tmp_path, monkeypatch):
    path, oracle = _official_file(tmp_path)
    monkeypatch.setenv("ZOO_UPSTREAM_MIRROR", f"{hub.url}/files/")  # the loopback server plays the mirror
    hub.add_file(path)
    write_manifest(
        env / "manifest.json",
        "http://127.0.0.1:9",  # the 'real' upstream: nothing listens there
        **{TAG: {"url": {"sha256_prefix": path.stem.rsplit("-", 1)[1], "url": f"http://127.0.0.1:9/x/{path.name}"}}},
    )
    model = zoo.create(MODEL, pretrained=True)
    assert torch.allclose(logits(model), logits(oracle), atol=1e-5)


def test_all_sources_down_names_each_and_the_fix(hub, env, fast_retries, monkeypatch):
    error = all_sources_down_error(hub, monkeypatch)
    message = str(error)
    assert f"hf-hub:{REPO}@main" in message
    assert "mobilenet_v2_lpf4_finetune-7eed94b1.pth (official format)" in message
    assert "zoo download" in message and "HF_HUB_OFFLINE=1" in message
    assert len(error.attempts) == 2


def test_offline_without_cache_says_so(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as info:
        zoo.create(MODEL, pretrained=True)
    assert str(info.value).count("offline mode") == 2


def test_hf_hub_repo_with_config_and_revision(hub, env, tmp_path):
    torch.manual_seed(3)
    src = zoo.create("mobilenet_v2_aa3", num_classes=7)
    folder = zoo.weights.save_model_dir(src, tmp_path / "ft", name="mobilenet_v2_aa3")
    commit = hub.add_repo("someone/finetuned", folder)
    model = zoo.create("mobilenet_v2_aa3", pretrained="hf-hub:someone/finetuned")
    assert model.num_classes == 7 and torch.equal(logits(model), logits(src))
    pinned = zoo.create("mobilenet_v2_aa3", pretrained=f"hf-hub:someone/finetuned@{commit}")
    assert torch.equal(logits(pinned), logits(src))
    with pytest.raises(WeightsUnavailableError, match="not found"):
        zoo.create("mobilenet_v2_aa3", pretrained="hf-hub:someone/missing")


def test_wrong_hash_is_a_hash_mismatch_error(hub, env, repo_folder):
    from zoo.weights.sources import fetch_hub

    hub.add_repo(REPO, repo_folder)
    with pytest.raises(HashMismatchError):
        fetch_hub(REPO, "model.safetensors", "main", sha256="1" * 64)
    assert hub_cache_files(env) == []


def test_no_network_fails_fast_and_a_cached_copy_still_serves(hub, env, repo_folder, monkeypatch):
    """Unresolvable hosts (no network): no 40 s of retries; the hub cache still serves once filled."""
    unresolvable = "http://hub.zoo-test.invalid"  # .invalid never resolves (RFC 2606)
    monkeypatch.setenv("ZOO_UPSTREAM_MIRROR", unresolvable)
    monkeypatch.setenv("HF_ENDPOINT", unresolvable)
    start = time.monotonic()
    with pytest.raises(zoo.WeightsUnavailableError, match=r"cannot resolve hub\.zoo-test\.invalid \(no network\?\)"):
        zoo.create(MODEL, pretrained=TAG)
    assert time.monotonic() - start < 10
    hub.add_repo(REPO, repo_folder)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    online = zoo.create(MODEL, pretrained=TAG)
    monkeypatch.setenv("HF_ENDPOINT", unresolvable)
    cached = zoo.create(MODEL, pretrained=TAG)
    assert torch.equal(logits(online), logits(cached))
