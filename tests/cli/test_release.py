"""`zoo release` end to end against the loopback hub, `zoo push` failures, torchvision-initialised tags,
mirrors and `zoo doctor`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.weights_testlib import MODEL, TAG, TEST_ORG, all_sources_down_error, logits, write_manifest

import zoo
from zoo.cli import main
from zoo.weights import WeightsUnavailableError
from zoo.weights.manifest import load_manifest

TAG3 = "mobilenet_v2_aa3.in1k"  # a second official weight of the same small architecture


def _official(folder: Path, stem: str, k: int, seed: int) -> tuple[Path, torch.nn.Module]:
    """An official-format file written by the oracle package, named ``STEM-HASH8.pth`` as published."""
    import antialiased_cnns

    torch.manual_seed(seed)
    oracle = antialiased_cnns.mobilenet_v2(filter_size=k).eval()
    tmp = folder / f"{stem}.tmp"
    torch.save({"state_dict": oracle.state_dict()}, tmp)
    path = folder / f"{stem}-{hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]}.pth"
    tmp.rename(path)
    return path, oracle


def _url_override(hub, path: Path, **extra) -> dict:
    return {"url": {"url": f"{hub.url}/files/{path.name}", "sha256_prefix": path.stem.rsplit("-", 1)[1], **extra}}


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_loopback_test")


def test_release_publishes_verifies_records_and_is_idempotent(hub, env, tmp_path, token, capsys):
    src = tmp_path / "official"
    src.mkdir()
    path1, oracle1 = _official(src, "mobilenet_v2_lpf4_finetune", 4, seed=11)
    path3, oracle3 = _official(src, "mobilenet_v2_lpf3", 3, seed=13)
    manifest_file = write_manifest(
        env / "manifest.json", hub.url, **{TAG: _url_override(hub, path1), TAG3: _url_override(hub, path3)}
    )
    out = tmp_path / "release"
    broken = "mobilenet_v2_aa5.in1k"  # its file is not in --from: fails alone, the others go on

    before = manifest_file.read_bytes()
    assert main(["release", TAG, TAG3, "--from", str(src), "--out", str(out), "--dry-run"]) == 0
    assert hub.commits == [] and manifest_file.read_bytes() == before, "a dry run uploads and records nothing"
    assert sorted(p.name for p in (out / TAG).iterdir()) == ["README.md", "config.json", "model.safetensors"]
    capsys.readouterr()

    assert main(["release", TAG, broken, TAG3, "--from", str(src), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"{TAG}: published -> {TEST_ORG}/{TAG}" in captured.out and "max |logits - oracle|" in captured.out
    assert f"{broken}: failed" in captured.err and "not found in" in captured.err
    assert "2 of 3 tag(s) done, 1 failed" in captured.out
    assert sorted(repo for repo, _ in hub.commits) == sorted([f"{TEST_ORG}/{TAG}", f"{TEST_ORG}/{TAG3}"])
    assert all(files == ["README.md", "config.json", "model.safetensors"] for _, files in hub.commits)
    for tag in (TAG, TAG3):
        digest = hashlib.sha256((out / tag / "model.safetensors").read_bytes()).hexdigest()
        assert load_manifest().get(tag).hub_source()["sha256"] == digest
    card = (out / TAG / "README.md").read_text()
    assert "license: cc-by-nc-sa-4.0" in card and "72.72" in card and f"hf-hub:{TEST_ORG}/{TAG}" in card

    # rerun: nothing to do, nothing uploaded
    assert main(["release", TAG, TAG3, "--from", str(src), "--out", str(out)]) == 0
    assert capsys.readouterr().out.count(": skipped") == 2
    assert len(hub.commits) == 2

    # a fresh process loads what was uploaded (recorded hash checked), with zoo and with timm
    expected = tmp_path / "expected.pt"
    torch.save({"zoo": logits(oracle1), "aa3": logits(oracle3)}, expected)
    code = f"""
import torch, timm, zoo, warnings, sys
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
from support.weights_testlib import logits
warnings.simplefilter("ignore")
want = torch.load({str(expected)!r})
a = zoo.create({MODEL!r}, pretrained=True)
b = timm.create_model({MODEL!r}, pretrained=True)
c = zoo.create("mobilenet_v2_aa3", pretrained=True)
assert a.pretrained_cfg["source"].startswith("hf-hub:"), a.pretrained_cfg["source"]
print(max(float((logits(m) - want[k]).abs().max()) for m, k in ((a, "zoo"), (b, "zoo"), (c, "aa3"))))
"""
    child_env = {**os.environ, "HF_HOME": str(tmp_path / "fresh-hf"), "ZOO_CACHE_DIR": str(tmp_path / "fresh-zoo")}
    run = subprocess.run([sys.executable, "-c", code], env=child_env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert float(run.stdout.strip().splitlines()[-1]) <= 1e-5


def test_release_rejects_a_file_with_the_wrong_hash(hub, env, tmp_path, token, capsys):
    src = tmp_path / "official"
    src.mkdir()
    path, _ = _official(src, "mobilenet_v2_lpf4_finetune", 4, seed=1)
    write_manifest(env / "manifest.json", hub.url, **{TAG: _url_override(hub, path, sha256_prefix="00000000")})
    assert main(["release", TAG, "--from", str(src), "--out", str(tmp_path / "out")]) == 1
    assert "expected a hash starting 00000000" in capsys.readouterr().err
    assert hub.commits == []


def test_release_downloads_from_the_sources_when_no_folder_is_given(hub, env, tmp_path, token, capsys):
    path, oracle = _official(tmp_path, "mobilenet_v2_lpf4_finetune", 4, seed=2)
    hub.add_file(path)
    write_manifest(env / "manifest.json", hub.url, **{TAG: _url_override(hub, path)})
    assert main(["release", TAG, "--out", str(tmp_path / "out")]) == 0
    assert f"from {hub.url}/files/{path.name}" in capsys.readouterr().out
    model = zoo.create(MODEL, pretrained=True)
    assert torch.allclose(logits(model), logits(oracle), atol=1e-5)


def _torchvision_file(folder: Path, seed: int = 21) -> tuple[Path, torch.nn.Module]:
    import torchvision

    torch.manual_seed(seed)
    tv = torchvision.models.mobilenet_v2().eval()
    tmp = folder / "tv.pth"
    torch.save(tv.state_dict(), tmp)
    path = folder / f"mobilenet_v2-{hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]}.pth"
    tmp.rename(path)
    return path, tv


def test_release_of_a_torchvision_initialised_tag(hub, env, tmp_path, token, capsys):
    src = tmp_path / "tv"
    src.mkdir()
    path, tv = _torchvision_file(src)
    write_manifest(env / "manifest.json", hub.url, **{"mobilenet_v2.tv_in1k": _url_override(hub, path)})
    tag = "mobilenet_v2_aa4.tv_in1k"
    assert main(["release", tag, "--from", str(src), "--out", str(tmp_path / "out")]) == 0
    assert "every tensor equal to torchvision's" in capsys.readouterr().out
    card = (tmp_path / "out" / tag / "README.md").read_text()
    assert "license: bsd-3-clause" in card and "**BlurPool inserted without fine-tuning: accuracy is lower" in card
    data = json.loads((env / "manifest.json").read_text())
    assert set(data["torchvision_init"]["hub_sha256"]) == {tag} and tag not in data["weights"]
    model = zoo.create("mobilenet_v2_aa4", pretrained="tv_in1k")  # from the hub, recorded hash checked
    assert model.pretrained_cfg["source"].startswith(f"hf-hub:{TEST_ORG}/{tag}")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in tv.state_dict().items())


def test_verification_fails_loudly_when_a_tensor_differs(tmp_path):
    from zoo.release import verify_converted

    _, tv = _torchvision_file(tmp_path)
    entry = load_manifest().get("mobilenet_v2_aa4.tv_in1k")
    model = zoo.create("mobilenet_v2_aa4")
    state = tv.state_dict()
    model.load_state_dict(state, strict=False)
    assert "every tensor equal" in verify_converted(entry, state, model)
    with torch.no_grad():
        model.classifier[1].bias[0] += 1e-3
    with pytest.raises(RuntimeError, match=r"1 tensor\(s\) differ from torchvision's, e.g. classifier.1.bias"):
        verify_converted(entry, state, model)


def test_release_script_is_the_cli(monkeypatch, capsys):
    import runpy

    script = Path(__file__).resolve().parents[2] / "scripts" / "release_weights.py"
    monkeypatch.setattr(sys, "argv", [script.name, "nosuch_model.in9k"])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(script), run_name="__main__")
    assert info.value.code == 2
    assert "zoo release: error: no manifest weights match 'nosuch_model.in9k'" in capsys.readouterr().err


def test_push_upload_through_the_loopback_hub_records_sha(hub, env, tmp_path, token, random_model_file):
    assert main(["push", TAG, "--out", str(tmp_path / "repo"), "--weights", str(random_model_file)]) == 0
    assert hub.commits == [(f"{TEST_ORG}/{TAG}", ["README.md", "config.json", "model.safetensors"])]
    digest = hashlib.sha256((tmp_path / "repo" / "model.safetensors").read_bytes()).hexdigest()
    assert load_manifest().get(TAG).hub_source()["sha256"] == digest


def test_push_upload_failure_is_one_line(hub, env, tmp_path, token, random_model_file, capsys):
    hub.fault(status=403, match="/commit/")
    assert main(["push", TAG, "--out", str(tmp_path / "repo"), "--weights", str(random_model_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("zoo push: error: upload of ") and f"{TEST_ORG}/{TAG}" in err and "403" in err


# --- torchvision-initialised tags ------------------------------------------------------------------


def test_list_pretrained_shows_the_torchvision_initialised_tags(capsys):
    assert main(["list", "--pretrained", "resnet50_aa4*"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(rows) == {f"resnet50_aa4.{t}" for t in ("in1k_ft", "in1k", "tv_in1k", "tv2_in1k")}
    assert "bsd-3-clause" in rows["resnet50_aa4.tv_in1k"] and "bsd-3-clause" in rows["resnet50_aa4.tv2_in1k"]
    assert "(non-commercial)" not in rows["resnet50_aa4.tv2_in1k"]


def test_torchvision_initialised_tags_cover_every_aa_model_and_are_derived():
    import torchvision

    from zoo.registry import ARCHS, FILTER_SIZES, get_entry

    manifest = load_manifest()
    raw = json.loads(manifest.path.read_text())
    assert not any(".tv2_in1k" in t or (".tv_in1k" in t and "_aa" in t) for t in raw["weights"]), "derived, not written"
    for arch in (a for a in ARCHS if get_entry(a).family != "torchvision_cnn"):  # no tv weights in the manifest
        v1 = manifest.weights[f"{arch}.tv_in1k"].url_source()["url"]
        v2 = getattr(torchvision.models.get_model_weights(arch), "IMAGENET1K_V2", None)
        for k in FILTER_SIZES:
            entry = manifest.weights[f"{arch}_aa{k}.tv_in1k"]
            assert entry.url_source()["url"] == v1 and entry.license == "bsd-3-clause" and entry.commercial_use
            assert entry.filter_size == k and entry.torchvision_init and entry.metrics is None
            assert manifest.default_tag(f"{arch}_aa{k}") != entry.tag, "never the default"
            assert (f"{arch}_aa{k}.tv2_in1k" in manifest.weights) == (v2 is not None)
        if v2 is not None:
            entry = manifest.weights[f"{arch}_aa4.tv2_in1k"]
            assert entry.url_source()["url"] == v2.url and v2.url.rsplit("-", 1)[1].startswith(
                entry.url_source()["sha256_prefix"]
            )
            assert manifest.weights[f"{arch}.tv2_in1k"].metrics["imagenet_top1"] == pytest.approx(
                v2.meta["_metrics"]["ImageNet-1K"]["acc@1"]
            )
    assert manifest.weights["resnet50.tv2_in1k"].metrics["imagenet_top1"] == pytest.approx(80.858)
    assert manifest.weights["resnet50_aa4.tv2_in1k"].preprocess["crop_pct"] == pytest.approx(224 / 232, abs=1e-4)


def test_info_says_blurpool_was_inserted_without_fine_tuning(capsys):
    assert main(["info", "resnet50_aa4"]) == 0
    out = capsys.readouterr().out
    assert "resnet50_aa4.tv2_in1k" in out
    assert (
        "BlurPool inserted without fine-tuning: accuracy is lower than torchvision's until fine-tuned; "
        "a starting point for fine-tuning or distillation" in out
    )


def test_torchvision_initialised_load_is_exactly_torchvisions_weights(hub, env, tmp_path, recwarn):
    path, tv = _torchvision_file(tmp_path)
    hub.add_file(path)
    write_manifest(env / "manifest.json", hub.url, **{"mobilenet_v2.tv_in1k": _url_override(hub, path)})
    model = zoo.create("mobilenet_v2_aa4", pretrained="tv_in1k")
    ours = model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in tv.state_dict().items())
    assert model.pretrained_cfg["license"] == "bsd-3-clause"
    assert not [w for w in recwarn if "non-commercial" in str(w.message).lower()]
    with pytest.raises(WeightsUnavailableError, match="only weights are torchvision-initialised"):
        zoo.create("mobilenet_v3_small_aa4", pretrained=True)


def test_no_reachable_source_names_the_torchvision_tag_and_doctor(hub, env, fast_retries, monkeypatch):
    error = all_sources_down_error(hub, monkeypatch)
    message = str(error)
    assert "pretrained='mobilenet_v2_aa4.tv2_in1k'" in message and "zoo doctor mobilenet_v2_aa4" in message


# --- mirrors -------------------------------------------------------------------------------------


def test_mirror_used_when_hub_and_primary_fail_and_a_bad_mirror_is_named(hub, env, tmp_path):
    path, oracle = _official(tmp_path, "mobilenet_v2_lpf4_finetune", 4, seed=3)
    wrong = tmp_path / "wrong" / path.name
    wrong.parent.mkdir()
    wrong.write_bytes(path.read_bytes()[:-10] + b"0123456789")  # same name, different bytes
    bad = hub.add_file(wrong, f"bad/{path.name}")
    good = hub.add_file(path, f"good/{path.name}")
    primary = f"{hub.url}/files/gone/{path.name}"  # 404, like the S3 bucket's 403
    write_manifest(env / "manifest.json", hub.url, **{TAG: _url_override(hub, path, url=primary, mirrors=[bad, good])})
    model = zoo.create(MODEL, pretrained=True)
    assert torch.allclose(logits(model), logits(oracle), atol=1e-5)
    assert model.pretrained_cfg["source"] == f"{good} (official format, mirror)"

    write_manifest(env / "manifest.json", hub.url, **{TAG: _url_override(hub, path, url=primary, mirrors=[bad])})
    for cached in (env / "zoo-cache" / "upstream").glob("*.safetensors"):
        cached.unlink()
    with pytest.raises(WeightsUnavailableError) as info:
        zoo.create(MODEL, pretrained=True)
    line = next(line for line in str(info.value).splitlines() if line.startswith(f"  - {bad}"))
    assert "SHA-256 mismatch for the file served by " + bad in line
    assert not list((env / "zoo-cache" / "upstream").glob(".*")), "the wrong file was discarded"


def test_user_mirror_env(hub, env, tmp_path, monkeypatch):
    path, oracle = _official(tmp_path, "mobilenet_v2_lpf4_finetune", 4, seed=4)
    hub.add_file(path, f"internal/{path.name}")
    monkeypatch.setenv("ZOO_WEIGHTS_MIRROR", f"{hub.url}/files/internal")
    nowhere = f"http://127.0.0.1:9/{path.name}"  # the 'real' upstream: nothing listens there
    write_manifest(env / "manifest.json", "http://127.0.0.1:9", **{TAG: _url_override(hub, path, url=nowhere)})
    model = zoo.create(MODEL, pretrained=True)
    assert torch.allclose(logits(model), logits(oracle), atol=1e-5)
    assert "$ZOO_WEIGHTS_MIRROR mirror" in model.pretrained_cfg["source"]


def test_packaged_mirrors_carry_the_published_hash_prefix():
    manifest = load_manifest()
    mirrored = [(t, s) for t, e in manifest.weights.items() for s in e.sources() if s.get("mirrors")]
    assert mirrored, "the maintainer's re-posted files are listed"
    from zoo.weights.sources import url_file_name

    for _, src in mirrored:
        for url in src["mirrors"]:
            assert url_file_name(url) == url_file_name(src["url"]) and src["sha256_prefix"] in url_file_name(url)


# --- zoo doctor ------------------------------------------------------------------------------------


def test_doctor_reports_each_source_unreachable_with_the_reason(env, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.zoo-test.invalid")  # .invalid never resolves (RFC 2606)
    write_manifest(env / "manifest.json", "http://weights.zoo-test.invalid")
    monkeypatch.setenv("ZOO_MANIFEST", str(env / "manifest.json"))
    assert main(["doctor", "resnet50_aa4"]) == 0
    out = capsys.readouterr().out
    assert "torch:" in out and "huggingface_hub:" in out and "zoo cache:" in out and "offline mode:    no" in out
    sources = [line for line in out.splitlines() if line.startswith("  - ")]
    assert len(sources) >= 8
    assert all("not cached; unreachable: cannot resolve" in line for line in sources), sources
    assert "commercially usable alternative: resnet50_aa4.tv2_in1k" in out

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["doctor", "resnet50_aa4.tv_in1k"]) == 0
    out = capsys.readouterr().out
    assert "offline mode:    yes" in out and "not checked: offline mode" in out
    assert main(["doctor", "resnet50_aa9x"]) == 2
