"""Registration with timm: names, module, no clash with timm's own models, cfgs from the manifest,
and the mapping of resolved timm cfgs to the zoo's ``pretrained`` argument."""

from __future__ import annotations

import pytest
import timm
from timm.models import PretrainedCfg, is_model_in_modules, resolve_pretrained_cfg
from timm_testlib import AA4_NAMES, ALL_NAMES, FAMILY_REPS, with_slow

import zoo
from zoo import timm_bridge
from zoo.registry import REGISTRY
from zoo.weights.manifest import load_manifest


def test_every_antialiased_name_is_registered_and_no_baseline() -> None:
    ours = sorted(timm.list_models(module=timm_bridge.TIMM_MODULE))
    assert ours == sorted(n for n, e in REGISTRY.items() if e.antialiased) == ALL_NAMES
    assert len(ours) == 104 + 42 * 4  # + the torchvision_cnn family (tests/models/test_tv_cnn.py)
    for name, entry in REGISTRY.items():
        if not entry.antialiased and timm.is_model(name):  # e.g. resnet50, vgg16: still timm's own
            assert not is_model_in_modules(name, [timm_bridge.TIMM_MODULE])
    assert timm.models.get_pretrained_cfg("resnet50").architecture == "resnet50"  # timm's cfg, untouched


def test_registration_is_idempotent_and_refuses_to_overwrite(monkeypatch: pytest.MonkeyPatch) -> None:
    timm_bridge._register_all()  # a second run leaves the registry as it was
    assert sorted(timm.list_models(module=timm_bridge.TIMM_MODULE)) == ALL_NAMES
    monkeypatch.setattr(timm_bridge, "timm_model_names", lambda: ["resnet50"])
    with pytest.raises(RuntimeError, match="timm already has a model named 'resnet50'"):
        timm_bridge._register_all()


def test_pretrained_tags_follow_the_manifest() -> None:
    manifest = load_manifest()
    aa_tags = sorted(tag for tag, w in manifest.weights.items() if w.model in ALL_NAMES)
    assert sorted(timm.list_models(module=timm_bridge.TIMM_MODULE, pretrained=True)) == aa_tags
    for name in ("resnet50_aa4", "alexnet_aa2", "densenet121_aa4"):
        tags = manifest.tags_for(name)
        assert sorted(timm.list_pretrained(f"{name}.*")) == sorted(tags)
        default = timm.models.get_pretrained_cfg(name)
        assert f"{name}.{default.tag}" == manifest.default_tag(name)
        entry = manifest.weights[manifest.default_tag(name)]
        assert default.hf_hub_id == entry.hub_source()["repo_id"] and default.license == entry.license
        assert default.crop_pct == entry.preprocess["crop_pct"] and default.mean == tuple(entry.preprocess["mean"])
    plain = timm.models.get_pretrained_cfg("mobilenet_v3_small_aa4")  # no published weights
    assert not plain.has_weights and plain.tag is None and plain.interpolation == "bilinear"


@pytest.mark.parametrize("name", with_slow(FAMILY_REPS, AA4_NAMES))  # K does not change the cfg
def test_registry_cfg_matches_the_built_model(name: str) -> None:
    """The cfg registered without building the model agrees with the built model's own cfg."""
    registered = timm.models.get_pretrained_cfg(name).to_dict()
    own = zoo.create(name).default_pretrained_cfg(name)
    for key in ("pool_size", "first_conv", "classifier", "input_size", "num_classes"):
        assert tuple(registered[key]) == tuple(own[key]) if isinstance(own[key], tuple) else registered[key] == own[key]
    if not registered.get("tag"):  # no weights: the torchvision eval settings of the model
        for key in ("crop_pct", "interpolation", "mean", "std"):
            assert registered[key] == own[key]


def _cfg(name: str, tag: str | None = None, **overlay) -> PretrainedCfg:
    return resolve_pretrained_cfg(name, tag, overlay or None)


def test_pretrained_source_mapping(tmp_path) -> None:
    source = timm_bridge.pretrained_source
    assert source("resnet50_aa4", _cfg("resnet50_aa4")) == "resnet50_aa4.in1k_ft"
    assert source("resnet50_aa4", _cfg("resnet50_aa4", "in1k")) == "resnet50_aa4.in1k"
    assert source("resnet50_aa4", _cfg("resnet50_aa4", file=str(tmp_path))) == str(tmp_path)
    assert source("resnet50_aa4", _cfg("resnet50_aa4", hf_hub_id="me/mine")) == "hf-hub:me/mine"
    hub = PretrainedCfg(hf_hub_id="org/repo@v1", source="hf-hub")
    assert source("resnet50_aa4", hub) == "hf-hub:org/repo@v1"
    local = PretrainedCfg(file=str(tmp_path), source="local-dir")
    assert source("resnet50_aa4", local) == str(tmp_path)
    assert source("mobilenet_v3_small_aa4", _cfg("mobilenet_v3_small_aa4")) is True
    with pytest.raises(ValueError, match="state_dict"):
        source("resnet50_aa4", PretrainedCfg(state_dict={}))


def test_unknown_build_argument_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="drop_path_rate"):
        timm.create_model("resnet18_aa4", drop_path_rate=0.1)
