"""One code path for every way of asking for pretrained weights.

``pretrained`` may be ``True`` (the model's default weights), a tag (``"in1k_ft"`` or
``"resnet50_aa4.in1k_ft"``), a ``.safetensors`` / ``.pth`` file, a folder written by
``save_model_dir``, or ``"hf-hub:org/repo[@revision]"``.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from zoo.models._contract import ZooModel
from zoo.pretrained import PretrainedCfg, to_timm_cfg
from zoo.registry import APS_SUFFIX, get_entry
from zoo.weights.errors import (
    OFFLINE_HINT,
    CorruptWeightsError,
    IncompatibleWeightsError,
    WeightsUnavailableError,
    unavailable_hint,
)
from zoo.weights.io import CONFIG_NAME, WEIGHTS_NAME, load_state_dict_file, read_model_dir
from zoo.weights.keymaps import to_zoo_keys
from zoo.weights.manifest import WeightEntry, load_manifest
from zoo.weights.sources import SourceError, _evict_hub_file, fetch_hub, fetch_url_source

__all__ = ["ResolvedWeights", "apply_weights", "fetch_weights", "load_pretrained", "resolve_weights"]

_WARNED_LICENSES: set[str] = set()
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


@dataclass
class ResolvedWeights:
    """A state dict in zoo keys plus what is known about it."""

    state_dict: dict[str, Tensor]
    cfg: dict[str, Any] = field(default_factory=dict)
    model_args: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    license: str | None = None
    license_info: dict[str, Any] | None = None
    architecture: str | None = None  # the model name recorded with the weights (config.json), if any


# --- manifest tags -----------------------------------------------------------------------------


def _tag_for(name: str, pretrained: bool | str) -> WeightEntry:
    manifest = load_manifest()
    if pretrained is True:
        tag = manifest.default_tag(name)
        if tag is None and (alt := manifest.torchvision_init_tag(name)):
            raise WeightsUnavailableError(
                f"no pretrained weights for {name} by default: its only weights are torchvision-initialised "
                f"(BlurPool inserted without fine-tuning, lower accuracy until fine-tuned); ask for them by tag: "
                f"pretrained={alt.split('.', 1)[1]!r} (`zoo info {name}` lists its tags)"
            )
        if tag is None:
            have = manifest.models_with_weights()
            close = difflib.get_close_matches(name, have, n=4, cutoff=0.6)
            raise WeightsUnavailableError(
                f"no pretrained weights for {name} in the manifest"
                + (f"; models with weights close to it: {', '.join(close)}" if close else "")
                + " (`zoo list --pretrained` lists them all)"
            )
        return manifest.weights[tag]
    text = str(pretrained)
    tag = text if text in manifest.weights else f"{name}.{text}"
    if tag not in manifest.weights:
        known = ", ".join(manifest.tags_for(name)) or "none"
        raise WeightsUnavailableError(
            f"pretrained={text!r} is not a weight tag of {name} (tags: {known}), an existing file or folder, "
            "or 'hf-hub:org/repo'"
        )
    entry = manifest.weights[tag]
    if entry.model != name:
        raise WeightsUnavailableError(
            f"weights {tag} are for {entry.model}, not {name}; tags of {name}: "
            f"{', '.join(manifest.tags_for(name)) or 'none'}"
        )
    return entry


def fetch_weights(entry: WeightEntry) -> tuple[Path, str]:
    """Obtain the safetensors file of a manifest entry, trying its sources in order.

    Returns ``(path, source description)``; raises ``WeightsUnavailableError`` listing every
    source tried and why it failed, with the offline how-to.
    """
    attempts: list[tuple[str, str]] = []
    for src in entry.sources():
        if src["type"] == "hf-hub":
            label = f"hf-hub:{src['repo_id']}@{src['revision']} ({src['filename']})"
            try:
                path = fetch_hub(src["repo_id"], src["filename"], src["revision"], src.get("sha256"))
                load_state_dict_file(path)  # detects a truncated cached file without a known hash
                return path, label
            except CorruptWeightsError as err:
                _evict_hub_file(path)
                attempts.append((label, f"cached file was corrupt and has been removed: {err}"))
            except (SourceError, WeightsUnavailableError) as err:
                attempts.append((label, str(err)))
        elif src["type"] == "url":
            found = fetch_url_source(src, entry.architecture, attempts)
            if found is not None:
                return found
    raise WeightsUnavailableError(
        f"could not obtain weights {entry.tag} for {entry.model}; sources tried:",
        attempts,
        hint=unavailable_hint(entry),
    )


def _from_entry(entry: WeightEntry) -> ResolvedWeights:
    path, label = fetch_weights(entry)
    return ResolvedWeights(
        state_dict=load_state_dict_file(path),
        cfg=to_timm_cfg(entry.record().replace(file=str(path), source=label)),
        model_args=entry.model_args,
        source=label,
        license=entry.license,
        license_info=entry.license_info,
    )


# --- paths and hf-hub repos --------------------------------------------------------------------


def parse_config(text: str, where: str) -> dict[str, Any]:
    """A model ``config.json`` (zoo or timm layout) as a dict; ``CorruptWeightsError`` naming ``where``
    for invalid JSON, a JSON value that is not an object, or ``pretrained_cfg`` / ``model_args`` that
    are not objects."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise CorruptWeightsError(f"cannot parse {where}: {err}") from err
    check_config(config, where)
    return config


def check_config(config: Any, where: str) -> None:
    """Refuse a parsed ``config.json`` that is not a JSON object of the zoo/timm layout."""
    expected = "expected a JSON object with architecture, num_classes, pretrained_cfg, model_args"
    if not isinstance(config, dict):
        raise CorruptWeightsError(f"{where} is not a model config: {expected}, got a JSON {_json_type(config)}")
    for key in ("pretrained_cfg", "model_args"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise CorruptWeightsError(
                f"{where}: {key} must be a JSON object, got a JSON {_json_type(config[key])} ({expected})"
            )
    arch = config.get("architecture")
    if arch is not None and not isinstance(arch, str):
        raise CorruptWeightsError(f"{where}: architecture must be a model name string, got {arch!r}")


def _json_type(value: Any) -> str:
    names = {list: "list", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _config_parts(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    cfg = dict(config.get("pretrained_cfg") or {})
    if "num_classes" in config:
        cfg["num_classes"] = config["num_classes"]
    if "label_names" in config:
        cfg["label_names"] = config["label_names"]
    return cfg, dict(config.get("model_args") or {})


def _architecture(config: dict[str, Any], cfg: dict[str, Any]) -> str | None:
    arch = config.get("architecture") or cfg.get("architecture")
    return arch if isinstance(arch, str) else None


def _from_path(path: Path) -> ResolvedWeights:
    if path.is_dir():
        state, config = read_model_dir(path)
        check_config(config, str(path / CONFIG_NAME))
    else:
        state = load_state_dict_file(path)
        sibling = path.with_name(CONFIG_NAME)
        config = parse_config(sibling.read_text(encoding="utf-8"), str(sibling)) if sibling.is_file() else {}
    cfg, model_args = _config_parts(config)
    cfg.update(file=str(path), source="file")
    return ResolvedWeights(
        state, cfg, model_args, source=str(path), license=cfg.get("license"), architecture=_architecture(config, cfg)
    )


def _from_hub_repo(spec: str) -> ResolvedWeights:
    repo, _, revision = spec[len("hf-hub:") :].partition("@")
    revision = revision or "main"
    label = f"hf-hub:{repo}@{revision}"
    try:
        weights = fetch_hub(repo, WEIGHTS_NAME, revision)
        try:
            config_file = fetch_hub(repo, CONFIG_NAME, revision)
        except SourceError:
            config_file = None
    except (SourceError, WeightsUnavailableError) as err:
        raise WeightsUnavailableError(f"could not obtain weights {spec}:", [(label, str(err))], OFFLINE_HINT) from err
    config = {}
    if config_file is not None:
        config = parse_config(config_file.read_text(encoding="utf-8"), f"{CONFIG_NAME} of {label} ({config_file})")
    cfg, model_args = _config_parts(config)
    cfg.update(hf_hub_id=repo, source="hf-hub", file=str(weights))
    return ResolvedWeights(
        load_state_dict_file(weights),
        cfg,
        model_args,
        source=label,
        license=cfg.get("license"),
        architecture=_architecture(config, cfg),
    )


def resolve_weights(name: str, pretrained: bool | str | os.PathLike) -> ResolvedWeights:
    """Turn any accepted ``pretrained`` value into a state dict (zoo keys) and its metadata."""
    if pretrained is True:
        return _from_entry(_tag_for(name, True))
    if not isinstance(pretrained, (str, os.PathLike)) or isinstance(pretrained, bool):
        raise ValueError(f"pretrained must be True, a tag, a path or 'hf-hub:org/repo', got {pretrained!r}")
    text = os.fspath(pretrained)
    if not text.strip():  # Path("") is the current directory: never load from it by accident
        raise ValueError(
            f"pretrained={pretrained!r} is empty: pass True, a weight tag, a path (e.g. '.' for the current "
            "folder) or 'hf-hub:org/repo'; False for random initialisation"
        )
    if text.startswith("hf-hub:"):
        return _from_hub_repo(text)
    path = Path(text).expanduser()
    if path.exists():
        return _from_path(path)
    if isinstance(pretrained, os.PathLike) or os.sep in text or text.lower().endswith(_WEIGHT_SUFFIXES):
        raise WeightsUnavailableError(f"pretrained weights path not found: {path}")
    return _from_entry(_tag_for(name, text))


# --- applying weights to a model ---------------------------------------------------------------


def _caller_stacklevel() -> int:
    """``stacklevel`` that points a warning at the first frame outside the ``zoo`` package."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] == "zoo":
        frame, level = frame.f_back, level + 1
    return level


def _warn_license(res: ResolvedWeights) -> None:
    info = res.license_info
    if not res.license or info is None or info.get("commercial_use", True) or res.license in _WARNED_LICENSES:
        return
    _WARNED_LICENSES.add(res.license)
    warnings.warn(
        f"these pretrained weights ({res.cfg.get('weights', res.source)}) are licensed {info['name']} "
        f"({info['url']}): non-commercial use only, share-alike. The zoo's code is Apache-2.0; the weights are not.",
        UserWarning,
        stacklevel=_caller_stacklevel(),
    )


def _adapt(model: ZooModel, name: str, state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    state = to_zoo_keys(state, get_entry(name).arch)  # an official checkpoint is recognised by its .filt keys
    conv_key = f"{model.first_conv}.weight"
    if conv_key in state and state[conv_key].shape[1] != model.in_chans:
        from timm.models import adapt_input_conv

        state[conv_key] = adapt_input_conv(model.in_chans, state[conv_key])
    fc_w, fc_b = f"{model.classifier_name}.weight", f"{model.classifier_name}.bias"
    if fc_w in state and state[fc_w].shape[0] != model.num_classes:
        if model.num_classes > 0:
            warnings.warn(
                f"{name}: the weights from {source} have {state[fc_w].shape[0]} classes, the model "
                f"{model.num_classes}; the classifier {model.classifier_name} is re-initialised (train it)",
                UserWarning,
                stacklevel=_caller_stacklevel(),
            )
        state = {k: v for k, v in state.items() if k not in (fc_w, fc_b)}
    return state


def fit_problems(model: ZooModel, state: dict[str, Tensor], dropped: frozenset[str] = frozenset()) -> str:
    """What keeps ``state`` from loading into ``model`` (missing / unexpected keys, shapes), on one line;
    ``""`` when it fits. Keys in ``dropped`` (a re-initialised classifier) may be missing."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and k not in dropped]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    problems = [
        f"{label}: {few(keys)}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", wrong))
        if keys
    ]
    return "; ".join(problems)


def official_filter_size(state: dict[str, Tensor]) -> int | None:
    """The blur filter size K of an official-release state dict (its ``.filt`` buffers are C x 1 x K x K);
    ``None`` when it has no ``.filt`` buffers."""
    sizes = sorted({int(v.shape[-1]) for k, v in state.items() if k.endswith(".filt") and v.dim() >= 2})
    if len(sizes) > 1:
        raise IncompatibleWeightsError(f"the .filt buffers of these weights mix filter sizes {sizes}")
    return sizes[0] if sizes else None


def _recorded_filter_size(res: ResolvedWeights) -> tuple[int | None, str] | None:
    """``(K, where it is recorded)`` of the weights (``None`` K: the baseline); ``None`` if not recorded."""
    k = official_filter_size(res.state_dict)
    if k is not None:
        return k, "read from their .filt buffers"
    if "filter_size" in res.model_args:
        return res.model_args["filter_size"], "model_args.filter_size in their config.json"
    if res.architecture:
        try:
            entry = get_entry(res.architecture.split(".", 1)[0])
        except KeyError:
            return None
        return entry.filter_size, f"architecture {res.architecture!r} in their config.json"
    return None


def check_weights_filter_size(model: ZooModel, name: str, recorded: tuple[int | None, str] | None, source: str) -> None:
    """Refuse weights whose blur filter size (or its absence) differs from the model's, naming the right model.

    Filter size 1 is no blur (an ``{arch}_aps`` model is built with it), the same as the baseline's ``None``."""
    if recorded is None or (recorded[0] or 1) == (model.filter_size or 1):
        return
    k, where = recorded
    entry = get_entry(name)
    arch = f"unet_{entry.arch}" if entry.family == "unet" else entry.arch
    if model.filter_size is None:
        have = f"{name} is the torchvision baseline (no blur)"
    elif model.filter_size == entry.filter_size:
        have = f"{name} has filter size {model.filter_size}"
    else:
        have = f"{name} was built with filter_size={model.filter_size}"
    weights = "of the baseline, without blur" if k is None else f"for filter size {k}"
    right = (arch if k is None else f"{arch}_aa{k}") + (APS_SUFFIX if name.endswith(APS_SUFFIX) else "")
    hint = (
        ""
        if k is not None
        else f" (or, to start {name} from them on purpose: zoo convert torchvision FILE --model {name})"
    )
    raise IncompatibleWeightsError(f"weights from {source} are {weights} ({where}), but {have}: use {right}{hint}")


def apply_weights(model: ZooModel, name: str, res: ResolvedWeights) -> None:
    """Load resolved weights into ``model`` (registry name ``name``): adapt, check, set ``pretrained_cfg``."""
    state = _adapt(model, name, res.state_dict, res.source)
    own = model.state_dict()
    dropped = frozenset({f"{model.classifier_name}.weight", f"{model.classifier_name}.bias"} - set(state))
    problems = fit_problems(model, state, dropped)
    if problems:
        raise IncompatibleWeightsError(f"weights from {res.source} do not fit {name}: {problems}")
    check_weights_filter_size(model, name, _recorded_filter_size(res), res.source)
    model.load_state_dict(state, strict=not any(k in own for k in dropped))
    record = PretrainedCfg.from_dict(model.default_pretrained_cfg(name)).replace(res.cfg)
    size = record.input_size or (3, 224, 224)
    model.pretrained_cfg = to_timm_cfg(
        record.replace(architecture=name, num_classes=model.num_classes, input_size=(model.in_chans, *tuple(size)[1:]))
    )
    _warn_license(res)


def load_pretrained(model: ZooModel, name: str, pretrained: bool | str | os.PathLike) -> None:
    """Load weights into an already built ``model`` of registry name ``name`` (in place).

    Adapts a different ``num_classes`` (classifier re-initialised, with a warning) and ``in_chans``
    (first conv adapted like timm), and sets ``model.pretrained_cfg``.
    """
    apply_weights(model, name, resolve_weights(name, pretrained))
