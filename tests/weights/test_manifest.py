"""The weights manifest: schema, coverage of the 59 official files, published figures, tags."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import torch

from zoo.builder import instantiate
from zoo.registry import get_entry
from zoo.weights.manifest import MANIFEST_PATH, SCHEMA_PATH, hub_org, load_manifest, record_hub_sha256

OFFICIAL = re.compile(r"/weights_v0\.1/(?P<arch>.+?)_lpf(?P<k>\d)(?P<ft>_finetune)?-(?P<h>[0-9a-f]{8})\.pth$")


def _official_urls() -> set[str]:
    """The 59 URLs as listed by the oracle package (read as data, not code)."""
    import antialiased_cnns

    text = "".join(p.read_text() for p in Path(antialiased_cnns.__file__).parent.glob("*.py"))
    return set(re.findall(r"'(https://antialiased-cnns[^']+\.pth)'", text))


def test_manifest_validates_against_schema():
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(MANIFEST_PATH.read_text()), schema)


def test_schema_rejects_bad_entries():
    schema = json.loads(SCHEMA_PATH.read_text())
    data = json.loads(MANIFEST_PATH.read_text())
    entry = data["weights"]["resnet50_aa4.in1k_ft"]
    entry["url"] = {"format": "pickle"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)


def test_covers_all_59_official_files_with_their_hash_prefix():
    manifest = load_manifest()
    urls = {}
    for tag, entry in manifest.weights.items():
        src = entry.url_source()
        if src and src["format"] == "official":
            urls[src["url"]] = (tag, entry, src)
    assert set(urls) == _official_urls() and len(urls) == 59
    for url, (tag, entry, src) in urls.items():
        m = OFFICIAL.search(url)
        assert src["sha256_prefix"] == m["h"]
        assert entry.architecture == m["arch"] and entry.filter_size == int(m["k"])
        assert tag == f"{m['arch']}_aa{m['k']}." + ("in1k_ft" if m["ft"] else "in1k")
        assert entry.license == "cc-by-nc-sa-4.0" and not entry.commercial_use


def test_published_figures_match_the_paper():
    manifest = load_manifest()
    known = {  # published figures: docs/placement.md
        "resnet50_aa4.in1k_ft": (77.41, 91.32),
        "resnet18_aa4.in1k_ft": (71.67, 88.36),
        "alexnet_aa4.in1k_ft": (56.94, 83.31),
        "resnet50_aa2.in1k": (76.81, 89.96),
        "resnet18_aa5.in1k": (71.38, 88.25),
        "vgg16_bn.tv_in1k": (73.36, 89.24),
    }
    for tag, (top1, consistency) in known.items():
        metrics = manifest.get(tag).metrics
        assert (metrics["imagenet_top1"], metrics["imagenet_consistency"]) == (top1, consistency)
        assert "published" in metrics["source"]
    assert manifest.get("vgg16_aa3.in1k").metrics is None  # not published for these weights


def test_every_entry_names_a_registered_model():
    for tag, entry in load_manifest().weights.items():
        model = get_entry(entry.model)
        assert model.arch == entry.architecture and model.filter_size == entry.filter_size, tag


@pytest.mark.parametrize("tag", ["mobilenet_v2_aa4.in1k_ft", "densenet121_aa3.in1k", "alexnet.tv_in1k"])
def test_sample_entries_build(tag):
    entry = load_manifest().get(tag)
    with torch.device("meta"):
        model = instantiate(get_entry(entry.model), **entry.model_args)
    assert model.num_classes == entry.num_classes


@pytest.mark.slow
def test_every_entry_builds():
    for entry in load_manifest().weights.values():
        with torch.device("meta"):
            model = instantiate(get_entry(entry.model), **entry.model_args)
        assert model.num_classes == entry.num_classes


def test_tags_defaults_and_org(monkeypatch):
    manifest = load_manifest()
    assert manifest.default_tag("resnet50_aa4") == "resnet50_aa4.in1k_ft"
    assert manifest.default_tag("resnet50_aa3") == "resnet50_aa3.in1k"
    assert manifest.default_tag("resnet50") == "resnet50.tv_in1k"
    assert manifest.default_tag("resnet50_aa7") is None
    with pytest.raises(KeyError, match=r"resnet50_aa4\.in1k_ft, resnet50_aa4\.in1k"):
        manifest.get("resnet50_aa4.in22k")
    monkeypatch.delenv("ZOO_HUB_ORG", raising=False)
    assert hub_org() == "antialiased-zoo"
    monkeypatch.setenv("ZOO_HUB_ORG", "mirror-org")
    cfg = manifest.get("resnet50_aa4.in1k_ft").pretrained_cfg()
    assert cfg["hf_hub_id"] == "mirror-org/resnet50_aa4.in1k_ft"
    assert cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bilinear" and cfg["input_size"] == (3, 224, 224)
    assert cfg["url"].endswith("resnet50_lpf4_finetune-cad66808.pth")


@pytest.fixture
def manifest_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A writable copy of the packaged manifest, in use through ``ZOO_MANIFEST``."""
    copy = tmp_path / "m.json"
    copy.write_text(MANIFEST_PATH.read_text())
    monkeypatch.setenv("ZOO_MANIFEST", str(copy))
    return copy


def test_record_hub_sha256_updates_a_copy(manifest_copy):
    copy = manifest_copy
    record_hub_sha256("resnet18_aa4.in1k", "ab" * 32)
    assert load_manifest().get("resnet18_aa4.in1k").hub_source()["sha256"] == "ab" * 32
    jsonschema.validate(json.loads(copy.read_text()), json.loads(SCHEMA_PATH.read_text()))
    with pytest.raises(KeyError):
        record_hub_sha256("nope.in1k", "ab" * 32)


def test_derived_entries_validate_against_the_weight_schema():
    schema = json.loads(SCHEMA_PATH.read_text())
    weight = {**schema["$defs"]["weight"], "$defs": schema["$defs"]}
    manifest = load_manifest()
    assert len(manifest.derived) >= 26 * 4
    for tag in manifest.derived:
        jsonschema.validate(manifest.weights[tag].data, weight)


def test_record_hub_sha256_of_a_derived_tag(manifest_copy):
    copy = manifest_copy
    record_hub_sha256("resnet18_aa3.tv_in1k", "cd" * 32)
    assert load_manifest().get("resnet18_aa3.tv_in1k").hub_source()["sha256"] == "cd" * 32
    data = json.loads(copy.read_text())
    assert data["torchvision_init"]["hub_sha256"] == {"resnet18_aa3.tv_in1k": "cd" * 32}
    assert "resnet18_aa3.tv_in1k" not in data["weights"], "a recorded hash does not write the entry out"
    jsonschema.validate(data, schema=json.loads(SCHEMA_PATH.read_text()))


def _compact_copy(tmp_path, edit) -> Path:
    data = json.loads(MANIFEST_PATH.read_text())
    edit(data)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["weights"].update({"resnet18_aa4.in22k": {}}), "no group publishes the tag 'in22k'"),
        (lambda d: d["weights"].update({"resnet19_aa4.in1k": {"sha256_prefix": "abcdef12"}}), "unknown model"),
        (lambda d: d["weights"].update({"resnet18.in1k": {"sha256_prefix": "abcdef12"}}), "anti-aliased models"),
        (lambda d: d["weights"]["resnet18_aa4.in1k"].pop("sha256_prefix"), "needs its sha256_prefix"),
        (lambda d: d["weights"]["resnet18_aa4.in1k"].update(architecture="vgg11"), "unknown field(s) architecture"),
        (lambda d: d["weights"]["resnet18_aa4.in1k"].update(license="mit"), "not in 'licenses'"),
        (lambda d: d.pop("defaults"), "lacks the 'defaults' field"),
    ],
)
def test_loader_rejects_a_malformed_compact_manifest(tmp_path, edit, message):
    path = _compact_copy(tmp_path, edit)
    with pytest.raises(ValueError, match=re.escape(message)):
        load_manifest(path)


def test_manifest_writes_shared_values_once_and_derives_the_architecture():
    data = json.loads(MANIFEST_PATH.read_text())
    assert MANIFEST_PATH.stat().st_size <= 116332 // 3
    assert all("architecture" not in e and "filter_size" not in e for e in data["weights"].values())
    entry = load_manifest().get("resnet101_aa3.in1k")
    assert (entry.architecture, entry.filter_size) == ("resnet101", 3)
    assert entry.url_source()["url"].endswith(
        "/resnet101_lpf3-" + data["weights"]["resnet101_aa3.in1k"]["sha256_prefix"] + ".pth"
    )


def test_manifest_script_checks_the_canonical_form(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).parents[2] / "scripts" / "manifest.py"
    ok = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    path = _compact_copy(tmp_path, lambda d: None)
    path.write_text(json.dumps(json.loads(path.read_text())))  # valid, not canonical
    bad = subprocess.run(
        [sys.executable, str(script), "--check", "--manifest", str(path)], capture_output=True, text=True
    )
    assert bad.returncode == 1 and "not in canonical form" in bad.stderr
    assert subprocess.run([sys.executable, str(script), "--manifest", str(path)], capture_output=True).returncode == 0
    assert subprocess.run([sys.executable, str(script), "--check", "--manifest", str(path)]).returncode == 0
