"""The weights manifest (``weights_manifest.json``): one entry per published weight, named like timm
tags (``resnet50_aa4.in1k_ft``), with its ordered sources, license, metrics and eval preprocessing.

The file writes each shared value once: a ``defaults`` block (preprocessing, hub source template,
``num_classes``, labels, metric protocol), ``groups`` (who published which tag suffix: license,
provenance texts, URL template) and, per tag, only what differs (hash prefix, published figures,
overrides). ``architecture`` and ``filter_size`` are the registry's reading of the model name, never
stored. :func:`load_manifest` expands every entry into the full record (``WeightEntry.data``, schema
``$defs/weight``); ``scripts/manifest.py --check`` validates the file and its canonical form.

The torchvision-initialised tags (``{arch}_aa{K}.tv_in1k`` and, where torchvision publishes
IMAGENET1K_V2, ``{arch}_aa{K}.tv2_in1k`` and ``{arch}.tv2_in1k``) are not written out either: they are
derived from each baseline ``{arch}.tv_in1k`` entry, torchvision's weight enums (V2 URL, hash prefix,
eval resize, published top-1) and the manifest's ``torchvision_init`` block (texts, recorded hub hashes)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Generic, TypeVar

from zoo.io import atomic_write
from zoo.pretrained import PretrainedCfg, to_timm_cfg

__all__ = [
    "MANIFEST_PATH",
    "SCHEMA_PATH",
    "Manifest",
    "WeightEntry",
    "hub_org",
    "load_manifest",
    "manifest_path",
    "record_hub_sha256",
]

MANIFEST_PATH = Path(__file__).with_name("weights_manifest.json")
SCHEMA_PATH = Path(__file__).with_name("weights_manifest.schema.json")
MANIFEST_ENV = "ZOO_MANIFEST"
_TAG_PREFERENCE = ("in1k_ft", "in1k", "tv_in1k", "tv2_in1k")  # pretrained=True picks the first one present
TV_VARIANTS = {"tv_in1k": "IMAGENET1K_V1", "tv2_in1k": "IMAGENET1K_V2"}  # tag -> torchvision weights enum member


def manifest_path() -> Path:
    """The manifest in use: ``$ZOO_MANIFEST`` when set (e.g. a private mirror), else the packaged one."""
    return Path(os.environ.get(MANIFEST_ENV) or MANIFEST_PATH)


def hub_org(manifest: Manifest | None = None) -> str:
    """Hugging Face organisation of the zoo's repos: ``$ZOO_HUB_ORG`` or the manifest default."""
    manifest = manifest or load_manifest()
    return os.environ.get(manifest.hub_org_env) or manifest.hub_org


T = TypeVar("T")


class _Field(Generic[T]):
    """A read-only attribute of a :class:`WeightEntry` that is its record's value of the same name."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = name

    def __get__(self, entry: WeightEntry | None, owner: type | None = None) -> T:
        if entry is None:
            return self  # type: ignore[return-value]  (the class attribute itself)
        return entry.data[self.key]


@dataclass(frozen=True)
class WeightEntry:
    """One published weight of the manifest (see ``weights_manifest.schema.json`` for the fields)."""

    tag: str
    data: dict[str, Any] = field(hash=False, repr=False)
    manifest: Manifest = field(hash=False, repr=False, compare=False)

    # plain values of the expanded record (data[name])
    model = _Field[str]()
    architecture = _Field[str]()
    filter_size = _Field[int | None]()
    num_classes = _Field[int]()
    license = _Field[str]()
    metrics = _Field[dict[str, Any] | None]()
    preprocess = _Field[dict[str, Any]]()

    @property
    def model_args(self) -> dict[str, Any]:
        return dict(self.data["model_args"])

    @property
    def license_info(self) -> dict[str, Any]:
        return self.manifest.licenses.get(self.license, {"name": self.license, "url": "", "commercial_use": False})

    @property
    def commercial_use(self) -> bool:
        return bool(self.license_info["commercial_use"])

    @property
    def torchvision_init(self) -> bool:
        """torchvision's weights loaded into the anti-aliased model, BlurPool inserted without fine-tuning."""
        return bool(self.data.get("torchvision_init"))

    @property
    def derived(self) -> bool:
        """Derived at load time (not written out in the manifest file)."""
        return self.tag in self.manifest.derived

    @property
    def pretrained_tag(self) -> str:
        """The part after the dot (``in1k_ft``)."""
        return self.tag.split(".", 1)[1]

    def sources(self) -> list[dict[str, Any]]:
        """The ordered sources with ``{org}`` resolved (``$ZOO_HUB_ORG``)."""
        org = hub_org(self.manifest)
        out = []
        for src in self.data["sources"]:
            src = dict(src)
            if src["type"] == "hf-hub":
                src["repo_id"] = src["repo_id"].replace("{org}", org)
            out.append(src)
        return out

    def hub_source(self) -> dict[str, Any] | None:
        return next((s for s in self.sources() if s["type"] == "hf-hub"), None)

    def url_source(self) -> dict[str, Any] | None:
        return next((s for s in self.sources() if s["type"] == "url"), None)

    def record(self) -> PretrainedCfg:
        """The weight's metadata and eval preprocessing as a typed record."""
        pre = self.preprocess
        hub = self.hub_source()
        url = self.url_source()
        return PretrainedCfg(
            architecture=self.model,
            tag=self.pretrained_tag,
            weights=self.tag,
            hf_hub_id=f"{hub['repo_id']}" if hub else None,
            hf_hub_filename=hub["filename"] if hub else None,
            url=url["url"] if url else None,
            num_classes=self.num_classes,
            input_size=tuple(pre["input_size"]),
            crop_pct=pre["crop_pct"],
            crop_mode="center",
            interpolation=pre["interpolation"],
            mean=tuple(pre["mean"]),
            std=tuple(pre["std"]),
            license=self.license,
            origin_url=self.data.get("origin_url"),
            paper_ids=self.data.get("paper"),
            label_set=self.data["labels"],
            metrics=self.metrics,
        )

    def pretrained_cfg(self) -> dict[str, Any]:
        """A timm-style pretrained cfg (``hf_hub_id``, ``url``, ``input_size``, ``crop_pct``, ``mean``, ...)."""
        return to_timm_cfg(self.record())


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest: ``weights`` maps a tag to its ``WeightEntry``."""

    path: Path
    hub_org: str
    hub_org_env: str
    licenses: dict[str, dict[str, Any]] = field(hash=False)
    label_sets: dict[str, str] = field(hash=False)
    weights: dict[str, WeightEntry] = field(hash=False, repr=False)
    raw: dict[str, Any] = field(hash=False, repr=False)
    derived: frozenset[str] = field(default=frozenset(), hash=False, repr=False)

    def get(self, tag: str) -> WeightEntry:
        """The entry of a full tag (``resnet50_aa4.in1k_ft``); ``KeyError`` naming close tags otherwise."""
        if tag in self.weights:
            return self.weights[tag]
        model = tag.split(".", 1)[0]
        known = ", ".join(self.tags_for(model)) or "none"
        raise KeyError(f"no weights tagged {tag!r} in {self.path.name}; tags of {model}: {known}")

    def tags_for(self, model: str) -> list[str]:
        """Tags of the weights for a model name, default first."""
        tags = [t for t, e in self.weights.items() if e.model == model]
        rank = {p: i for i, p in enumerate(_TAG_PREFERENCE)}
        return sorted(tags, key=lambda t: (rank.get(t.split(".", 1)[1], len(rank)), t))

    def default_tag(self, model: str) -> str | None:
        """The weight ``pretrained=True`` loads for ``model`` (fine-tuned first), or ``None``.

        A torchvision-initialised anti-aliased weight (blur inserted without fine-tuning) is never the
        default: it has to be asked for by tag."""
        tags = [t for t in self.tags_for(model) if not self.weights[t].torchvision_init]
        return tags[0] if tags else None

    def torchvision_init_tag(self, model: str) -> str | None:
        """The commercially usable torchvision-initialised tag of ``model`` (V2 weights first), or ``None``."""
        tags = [t for t in self.tags_for(model) if self.weights[t].torchvision_init]
        return sorted(tags, key=lambda t: not t.endswith(".tv2_in1k"))[0] if tags else None

    def models_with_weights(self) -> list[str]:
        return sorted({e.model for e in self.weights.values()})

    def label_names(self, label_set: str) -> list[str]:
        """Class names of a label set (e.g. ``imagenet-1k``), shipped as data beside the manifest."""
        if label_set not in self.label_sets:
            raise KeyError(f"unknown label set {label_set!r}; known: {', '.join(self.label_sets)}")
        return _read_labels(str(MANIFEST_PATH.parent / self.label_sets[label_set]))


@cache
def _read_labels(path: str) -> list[str]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


_ENTRY_KEYS = ("sha256_prefix", "top1", "consistency", "hf-hub", "url")  # the compact per-entry fields
_FIELDS = ("model_args", "num_classes", "license", "origin", "origin_url", "paper", "recipe", "metrics", "preprocess")
_GROUP_KEYS = (
    "tags",
    "license",
    "origin",
    "origin_url",
    "paper",
    "recipe",
    "url_base",
    "url",
    "release_name",
    "weights",
)


class _Template(dict):
    """``str.format_map`` values that leave unknown fields (``{org}``, resolved per call) as they are."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _fill(value: Any, values: _Template) -> Any:
    if isinstance(value, str):
        return value.format_map(values)
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    return value


def _check(data: dict[str, Any], path: Path) -> None:
    """Light structural check (the full JSON schema is enforced by the test suite with jsonschema)."""
    for key in ("hub_org", "hub_org_env", "licenses", "label_sets", "defaults", "groups", "weights"):
        if key not in data:
            raise ValueError(f"{path}: weights manifest lacks the {key!r} field")
    for name, group in data["groups"].items():
        unknown = sorted(set(group) - set(_GROUP_KEYS))
        if unknown:
            raise ValueError(
                f"{path}: group {name!r} has unknown field(s) {', '.join(unknown)}; valid: {', '.join(_GROUP_KEYS)}"
            )
        if group.get("license") not in data["licenses"]:
            raise ValueError(f"{path}: group {name!r} has license {group.get('license')!r}, not in 'licenses'")
    for tag, entry in data["weights"].items():
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: weights {tag!r} must be an object of overrides, got {entry!r}")
        unknown = sorted(set(entry) - set(_ENTRY_KEYS) - set(_FIELDS))
        if unknown:
            raise ValueError(
                f"{path}: weights {tag!r} has unknown field(s) {', '.join(unknown)}; "
                f"valid: {', '.join(_ENTRY_KEYS + _FIELDS)}"
            )
        if "license" in entry and entry["license"] not in data["licenses"]:
            raise ValueError(f"{path}: weights {tag!r} has license {entry['license']!r}, not in 'licenses'")


def _group_of(data: dict[str, Any], tag: str, path: Path) -> tuple[str, dict[str, Any]]:
    suffix = tag.split(".", 1)[1] if "." in tag else ""
    for name, group in data["groups"].items():
        if suffix in group["tags"]:
            return name, group
    valid = ", ".join(t for g in data["groups"].values() for t in g["tags"])
    raise ValueError(f"{path}: weights {tag!r}: no group publishes the tag {suffix!r}; valid tags: {valid}")


def _expand(data: dict[str, Any], tag: str, path: Path) -> dict[str, Any]:
    """One written entry (compact overrides) expanded with the defaults and its group into the full record.

    ``architecture`` and ``filter_size`` come from the registry's reading of the model name, never the file."""
    from zoo.registry import get_entry

    compact = data["weights"][tag]
    name, group = _group_of(data, tag, path)
    model, suffix = tag.split(".", 1)
    try:
        reg = get_entry(model)
    except KeyError as err:
        raise ValueError(f"{path}: weights {tag!r}: {err}") from None
    official = group["url"]["format"] == "official"
    if official and reg.filter_size is None:
        raise ValueError(f"{path}: weights {tag!r}: group {name!r} publishes anti-aliased models (name_aaK) only")
    if not official and reg.filter_size is not None:
        raise ValueError(f"{path}: weights {tag!r}: group {name!r} publishes baseline twins only, not {model!r}")
    defaults = data["defaults"]
    values = _Template(
        tag=tag, model=model, arch=reg.arch, k=reg.filter_size, suffix=suffix,
        filter_name=data.get("filter_names", {}).get(str(reg.filter_size), f"K={reg.filter_size}"),
        weights=group.get("weights", ""), url_base=group["url_base"],
    )  # fmt: skip
    preprocess = defaults["preprocess"]
    if group["url"]["format"] == "torchvision":
        tv = _torchvision_weights(reg.arch, group["weights"])
        if tv is None:
            raise ValueError(f"{path}: weights {tag!r}: torchvision has no {group['weights']} weights for {reg.arch}")
        values["torchvision_file"] = tv.url.rsplit("/", 1)[-1]
        values["sha256_prefix"] = values["torchvision_file"].rsplit(".", 1)[0].rsplit("-", 1)[-1]
        preprocess = _tv_preprocess(tv)
    elif "sha256_prefix" not in compact:
        raise ValueError(f"{path}: weights {tag!r} needs its sha256_prefix (the hash prefix in the release file name)")
    else:
        values["sha256_prefix"] = compact["sha256_prefix"]
    values["release_name"] = _fill(group.get("release_name", {}).get(suffix, model), values)
    url = {**_fill(group["url"], values), "sha256_prefix": values["sha256_prefix"], **compact.get("url", {})}
    url = {k: url[k] for k in ("type", "url", "sha256", "sha256_prefix", "format", "mirrors") if k in url}
    metrics = None
    if "top1" in compact:
        metrics = {"imagenet_top1": compact["top1"], "imagenet_consistency": compact.get("consistency")}
        metrics.update(defaults["metrics"])
    entry = {
        "model": model,
        "architecture": reg.arch,
        "filter_size": reg.filter_size,
        "model_args": dict(defaults["model_args"]),
        "num_classes": defaults["num_classes"],
        "license": group["license"],
        "origin": _fill(group["origin"], values),
        "origin_url": group["origin_url"],
        "paper": group.get("paper"),
        "recipe": _fill(group["recipe"][suffix], values),
        "sources": [{**_fill(defaults["hf-hub"], values), **compact.get("hf-hub", {})}, url],
        "metrics": metrics,
        "preprocess": preprocess,
        "labels": defaults["labels"],
    }
    entry.update({k: compact[k] for k in _FIELDS if k in compact})
    return entry


@cache
def _load(path: str, mtime_ns: int, size: int) -> Manifest:
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"cannot parse weights manifest {file}: {err}") from err
    _check(data, file)
    weights: dict[str, WeightEntry] = {}
    manifest = Manifest(
        path=file,
        hub_org=data["hub_org"],
        hub_org_env=data["hub_org_env"],
        licenses=data["licenses"],
        label_sets=data["label_sets"],
        weights=weights,
        raw=data,
    )
    for tag in data["weights"]:
        weights[tag] = WeightEntry(tag, _expand(data, tag, file), manifest)
    derived = _derive_torchvision_init(data, weights)
    for tag, entry in derived.items():
        weights[tag] = WeightEntry(tag, entry, manifest)
    object.__setattr__(manifest, "derived", frozenset(derived))
    return manifest


def _torchvision_weights(arch: str, member: str) -> Any | None:
    """torchvision's weights enum member (``ResNet50_Weights.IMAGENET1K_V2``) of ``arch``, or ``None``."""
    import torchvision.models

    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError, AttributeError):
        return None
    return getattr(enum, member, None)


def _tv_preprocess(weights: Any) -> dict[str, Any]:
    """The eval preprocessing of a torchvision weights enum member, in the manifest's terms."""
    tf = weights.transforms()
    crop, resize = int(tf.crop_size[0]), int(tf.resize_size[0])
    return {
        "input_size": [3, crop, crop],
        "crop_pct": round(crop / resize, 4),
        "interpolation": tf.interpolation.value,
        "mean": [float(v) for v in tf.mean],
        "std": [float(v) for v in tf.std],
    }


def _derive_torchvision_init(data: dict[str, Any], explicit: dict[str, WeightEntry]) -> dict[str, dict[str, Any]]:
    """The derived torchvision tags (see the module doc); explicit manifest entries always win."""
    from zoo.registry import FILTER_SIZES

    block = data.get("torchvision_init")
    if not block:
        return {}
    baseline = next(g for g in data["groups"].values() if g["url"]["format"] == "torchvision")
    recorded = block.get("hub_sha256", {})
    out: dict[str, dict[str, Any]] = {}
    for base_tag, base_entry in explicit.items():
        base = base_entry.data
        if base["filter_size"] is not None or not base_tag.endswith(".tv_in1k"):
            continue
        arch = base["architecture"]
        v1 = next((s for s in base["sources"] if s["type"] == "url" and s["format"] == "torchvision"), None)
        if v1 is None:
            continue
        variants = [("tv_in1k", v1, base["preprocess"], None)]
        v2 = _torchvision_weights(arch, TV_VARIANTS["tv2_in1k"])
        if v2 is not None:
            stem = v2.url.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            src = {"type": "url", "url": v2.url, "sha256_prefix": stem.rsplit("-", 1)[-1], "format": "torchvision"}
            top1 = v2.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
            metrics = None
            if top1 is not None:
                metrics = {
                    "imagenet_top1": float(top1),
                    "imagenet_consistency": None,
                    "protocol": block["v2_protocol"],
                    "source": block["v2_metrics_source"].format(arch=arch),
                }
            variants.append(("tv2_in1k", src, _tv_preprocess(v2), metrics))
        for suffix, src, preprocess, baseline_metrics in variants:
            weights_name = TV_VARIANTS[suffix]
            for k in (None, *FILTER_SIZES):
                model = arch if k is None else f"{arch}_aa{k}"
                tag = f"{model}.{suffix}"
                if tag in explicit:
                    continue
                text = {"arch": arch, "weights": weights_name, "k": k}
                out[tag] = {
                    **{key: base[key] for key in ("architecture", "model_args", "num_classes", "license", "labels")},
                    "model": model,
                    "filter_size": k,
                    "origin": (block["origin"] if k else baseline["origin"]).format(**text),
                    "origin_url": baseline["origin_url"],
                    "paper": base.get("paper"),
                    "recipe": block["recipe" if k else "baseline_recipe"].format(**text),
                    "sources": [
                        {
                            "type": "hf-hub",
                            "repo_id": f"{{org}}/{tag}",
                            "filename": "model.safetensors",
                            "revision": "main",
                            "sha256": recorded.get(tag),
                        },
                        dict(src),
                    ],
                    "metrics": baseline_metrics if k is None else None,
                    "preprocess": preprocess,
                    "torchvision_init": k is not None,
                }
    return out


def load_manifest(path: str | os.PathLike | None = None) -> Manifest:
    """Parse the weights manifest (``$ZOO_MANIFEST`` or the packaged file); cached until the file changes."""
    file = Path(path) if path is not None else manifest_path()
    if not file.is_file():
        raise FileNotFoundError(f"weights manifest not found: {file} (check ${MANIFEST_ENV})")
    stat = file.stat()
    return _load(str(file.resolve()), stat.st_mtime_ns, stat.st_size)


def record_hub_sha256(tag: str, sha256: str, path: str | os.PathLike | None = None) -> Path:
    """Write the SHA-256 of a published ``model.safetensors`` into the manifest's hub source (atomically)."""
    file = Path(path) if path is not None else manifest_path()
    data = json.loads(file.read_text(encoding="utf-8"))
    if tag not in data["weights"]:
        if tag in load_manifest(file).derived:  # derived tags keep their hash in the torchvision_init block
            data["torchvision_init"].setdefault("hub_sha256", {})[tag] = sha256
            return atomic_write(file, json.dumps(data, indent=1) + "\n")
        raise KeyError(f"no weights tagged {tag!r} in {file}")
    data["weights"][tag].setdefault("hf-hub", {})["sha256"] = sha256
    return atomic_write(file, json.dumps(data, indent=1) + "\n")
