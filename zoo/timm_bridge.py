"""Every anti-aliased zoo model (``{arch}_aa{K}``) as a first-class timm model.

``import zoo`` imports this module, which registers each name with timm's registry (timm module
``timm_bridge``), with pretrained cfgs generated from ``weights_manifest.json``: one per weight tag
(``resnet50_aa4.in1k_ft``), the manifest's default tag first. The plain baselines (``resnet50``, ...)
are not registered: those names belong to timm's own models.

>>> import timm, zoo
>>> model = timm.create_model("resnet50_aa4", pretrained=True, num_classes=10)  # doctest: +SKIP

The entrypoints build with ``zoo.builder.instantiate`` and load weights with
``zoo.weights.load.load_pretrained`` (the code behind ``zoo.create``); timm only contributes its
cfg resolution (tags, ``hf-hub:`` / ``local-dir:`` config.json, ``pretrained_cfg_overlay``) and its
``features_only`` wrappers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from timm.models import (
    PretrainedCfg,
    build_model_with_cfg,
    generate_default_cfgs,
    get_pretrained_cfg,
    is_model,
    is_model_in_modules,
    register_model,
    resolve_pretrained_cfg,
)
from timm.models import _hub as _timm_hub
from timm.models._builder import pretrained_cfg_for_features
from torch import nn

from zoo.builder import instantiate
from zoo.models._contract import ZooModel
from zoo.pretrained import IMAGENET_EVAL, to_timm_cfg
from zoo.registry import REGISTRY, ModelEntry, get_entry
from zoo.weights.errors import CorruptWeightsError
from zoo.weights.load import check_config
from zoo.weights.manifest import load_manifest

__all__ = ["TIMM_MODULE", "create_timm_model", "pretrained_source", "timm_cfgs", "timm_model_names"]

TIMM_MODULE = __name__.rsplit(".", 1)[-1]  # timm.list_models(module="timm_bridge") lists the zoo's models
_CFG_FIELDS = frozenset(f.name for f in dataclasses.fields(PretrainedCfg))
# cfg keys that describe the model instance (its truth wins over any weights' metadata)
_STRUCTURAL = ("pool_size", "min_input_size", "first_conv", "classifier")


def timm_model_names() -> list[str]:
    """The zoo names registered with timm: every anti-aliased ``{arch}_aa{K}``."""
    return sorted(name for name, entry in REGISTRY.items() if entry.antialiased)


def _timm_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``cfg`` that timm's ``PretrainedCfg`` knows (manifest extras are dropped)."""
    return {k: v for k, v in cfg.items() if k in _CFG_FIELDS}


def _static_cfg(entry: ModelEntry) -> dict[str, Any]:
    """Cfg entries known without building the model (checked against built models by the tests)."""
    pool = entry.variant.get("pool_size", 7)  # forward_features at 224 px: 7x7, AlexNet's adaptive pool 6x6
    size = entry.variant.get("input_size", 224)  # inception_v3: 299 px
    record = IMAGENET_EVAL.replace(  # torchvision's ImageNet eval settings: the cfg of a name without weights
        input_size=(3, size, size),
        architecture=entry.name,
        pool_size=(pool, pool),
        first_conv=entry.cls.first_conv,
        classifier=entry.cls.classifier_name,
    )
    return to_timm_cfg(record)


def timm_cfgs() -> dict[str, dict[str, Any]]:
    """``{"name.tag": cfg}`` for ``generate_default_cfgs``: a cfg per manifest weight, the default tag
    marked with timm's ``*``; names without weights get one untagged cfg (eval defaults, no weights)."""
    manifest = load_manifest()
    cfgs: dict[str, dict[str, Any]] = {}
    for name in timm_model_names():
        base = _static_cfg(REGISTRY[name])
        tags = manifest.tags_for(name)
        default = manifest.default_tag(name)
        if not tags:
            cfgs[name] = base
        for tag in tags:
            cfg = {**base, **_timm_fields(manifest.weights[tag].pretrained_cfg())}
            cfgs[tag + ("*" if tag == default else "")] = cfg
        if tags and default is None:  # only torchvision-initialised tags: asked for by tag, never the default
            cfgs[f"{name}.*"] = base  # listed last: timm puts an explicit '*' default first
    return cfgs


def pretrained_source(name: str, cfg: PretrainedCfg) -> bool | str:
    """The ``pretrained`` value for ``zoo.weights.load`` that a resolved timm cfg stands for.

    ``hf-hub:`` names -> ``"hf-hub:org/repo[@rev]"``; ``local-dir:`` names and ``file`` overlays -> the
    path; a registry tag -> ``"name.tag"`` (resolved through the manifest's sources, like
    ``zoo.create``); a hub id overlaid on a tag -> that hub repo.
    """
    if cfg.state_dict is not None:
        raise ValueError(
            f"{name}: pretrained_cfg state_dict is not supported by the zoo's loader; save it with "
            "zoo.weights.save_state_dict and pass pretrained_cfg_overlay=dict(file=PATH)"
        )
    if cfg.source == "hf-hub":
        return f"hf-hub:{cfg.hf_hub_id}"
    if cfg.source == "local-dir" or cfg.file:
        return os.fspath(cfg.file)
    registered = _registered_cfg(name, cfg.tag)
    if cfg.hf_hub_id and cfg.hf_hub_id != registered.get("hf_hub_id"):
        return f"hf-hub:{cfg.hf_hub_id}"
    if cfg.url and cfg.url != registered.get("url"):
        raise ValueError(
            f"{name}: a url override ({cfg.url}) is not supported; download the file and pass "
            "pretrained_cfg_overlay=dict(file=PATH), or use an hf_hub_id"
        )
    return f"{name}.{cfg.tag}" if cfg.tag else True


def _registered_cfg(name: str, tag: str | None) -> dict[str, Any]:
    """The cfg timm's registry holds for ``name.tag`` (empty for no tag)."""
    cfg = get_pretrained_cfg(f"{name}.{tag}") if tag else None
    return cfg.to_dict() if cfg is not None else {}


def _feature_defaults(model: ZooModel, feature_cfg: dict[str, Any], user_keys: set[str]) -> None:
    """All of the model's levels unless ``out_indices`` was given; flatten ``features.N`` containers."""
    if "out_indices" not in user_keys:
        feature_cfg["out_indices"] = tuple(range(len(model.feature_info)))
    if "flatten_sequential" not in user_keys:
        feature_cfg["flatten_sequential"] = any("." in info["module"] for info in model.feature_info)


def create_timm_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """The entrypoint behind every registered name (what ``timm.create_model(name, ...)`` calls).

    Accepts timm's arguments (``pretrained_cfg``, ``pretrained_cfg_overlay``, ``features_only``,
    ``out_indices``, ``feature_cls``, ``feature_cfg``) plus the zoo's build arguments
    (``num_classes``, ``in_chans``, ``global_pool``, ``drop_rate``, ``pad_mode``, ``aa_stem``).
    """
    entry = get_entry(name)
    if pretrained is None:
        pretrained = False
    if not isinstance(pretrained, bool):
        raise ValueError(
            f"{name}: timm's pretrained must be True or False, got {pretrained!r}; for a weights file or folder "
            "pass pretrained=True, pretrained_cfg_overlay=dict(file=PATH) (or use zoo.create(name, pretrained=PATH))"
        )
    kwargs.pop("cache_dir", None)  # weights are cached by the zoo (HF_HOME, ZOO_CACHE_DIR)
    raw_cfg = kwargs.pop("pretrained_cfg", None)
    if isinstance(raw_cfg, dict):
        raw_cfg = _timm_fields(raw_cfg)
    cfg = resolve_pretrained_cfg(name, raw_cfg, kwargs.pop("pretrained_cfg_overlay", None))
    source = pretrained_source(name, cfg) if pretrained else None
    feature_cfg = dict(kwargs.pop("feature_cfg", None) or {})
    user_keys = set(feature_cfg) | ({"out_indices"} if "out_indices" in kwargs else set())
    # filled in once the model exists; non-empty so build_model_with_cfg keeps this very dict
    feature_cfg.setdefault("out_indices", None)
    built: dict[str, Any] = {}

    def build(**model_kwargs: Any) -> ZooModel:
        model = instantiate(entry, **model_kwargs)
        if source is not None:
            from zoo.weights.load import load_pretrained

            load_pretrained(model, name, source)
            built["loaded_cfg"] = dict(model.pretrained_cfg)
        _feature_defaults(model, feature_cfg, user_keys)
        built["model"] = model
        return model

    wrapped = build_model_with_cfg(build, name, pretrained=False, pretrained_cfg=cfg.to_dict(), feature_cfg=feature_cfg,
                                   **kwargs)  # fmt: skip
    model: ZooModel = built["model"]
    final = {**model.pretrained_cfg, **_instance_cfg(model, name), **built.get("loaded_cfg", {})}
    final["input_size"] = (model.in_chans, *tuple(final["input_size"])[1:])
    model.pretrained_cfg = final
    if wrapped is not model:
        wrapped.pretrained_cfg = wrapped.default_cfg = pretrained_cfg_for_features(final)
    return wrapped


def _instance_cfg(model: ZooModel, name: str) -> dict[str, Any]:
    cfg = model.default_pretrained_cfg(name)
    return {k: cfg[k] for k in _STRUCTURAL if k in cfg}


def _entrypoint(name: str) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return create_timm_model(name, pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"{name}: anti-aliased zoo model (see zoo.timm_bridge.create_timm_model)."
    return entrypoint


def _register_all() -> None:
    module = sys.modules[__name__]
    for name in timm_model_names():
        if is_model(name):
            if is_model_in_modules(name, [TIMM_MODULE]):
                continue  # already ours (module re-imported)
            raise RuntimeError(f"timm already has a model named {name!r}; the zoo will not overwrite it")
        fn = _entrypoint(name)
        setattr(module, name, fn)
        register_model(fn)


def _check_timm_config_reader() -> None:
    """Make timm's reader of ``config.json`` (``local-dir:`` and ``hf-hub:`` model names, read by timm
    before any zoo code runs) refuse an invalid file with one error naming it, instead of timm's
    ``AttributeError`` / ``TypeError`` / ``KeyError`` from deep inside. Valid files read exactly as before."""
    original = _timm_hub.load_cfg_from_json
    if getattr(original, "zoo_checked", False):
        return

    def load_cfg_from_json(json_file: str | os.PathLike) -> dict[str, Any]:
        try:
            config = original(json_file)
        except json.JSONDecodeError as err:
            raise CorruptWeightsError(f"cannot parse {json_file}: {err}") from err
        check_config(config, os.fspath(json_file))
        if not isinstance(config.get("architecture"), str):
            raise CorruptWeightsError(f"{json_file} names no architecture (the model name timm builds)")
        return config

    load_cfg_from_json.zoo_checked = True  # type: ignore[attr-defined]
    _timm_hub.load_cfg_from_json = load_cfg_from_json


default_cfgs = generate_default_cfgs(timm_cfgs())  # read by timm's register_model
_register_all()
_check_timm_config_reader()
