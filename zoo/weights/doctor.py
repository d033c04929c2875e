"""``zoo doctor``: what the weights machinery sees on this machine (versions, caches, network settings)
and, for a model, whether each source of each of its weights is cached or reachable, and what to do."""

from __future__ import annotations

import os
import platform
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from zoo.weights.manifest import WeightEntry, hub_org, load_manifest, manifest_path
from zoo.weights.sources import USER_AGENT, cache_dir, hf_cache_dir, is_offline, url_candidates, url_file_name

__all__ = ["SourceCheck", "check_sources", "doctor_report"]

HEAD_TIMEOUT = 5.0
_PACKAGES = ("antialiased-zoo", "torch", "torchvision", "timm", "huggingface_hub", "safetensors")
_SETTINGS = ("HF_ENDPOINT", "HF_HUB_OFFLINE", "ZOO_OFFLINE", "ZOO_WEIGHTS_MIRROR", "ZOO_MANIFEST", "ZOO_HUB_ORG")


@dataclass
class SourceCheck:
    """One source of one weight: ``reachable`` is ``None`` when not checked (offline mode)."""

    label: str
    cached: bool
    reachable: bool | None
    detail: str


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _folder_size(folder: Path) -> str:
    if not folder.is_dir():
        return "absent"
    files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
    size = sum(p.stat().st_size for p in files)
    return f"{size / 2**20:.1f} MiB in {len(files)} file(s)"


def head(url: str, timeout: float = HEAD_TIMEOUT) -> tuple[bool, str]:
    """``(reachable, detail)`` of a HEAD request (redirects followed); the reason when it fails."""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as err:
        return False, f"unreachable: cannot resolve {host} (no network?): {err}"
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            size = response.headers.get("X-Linked-Size") or response.headers.get("Content-Length")
            extra = f", {int(size) / 2**20:.1f} MiB" if size and size.isdigit() else ""
            return True, f"reachable (HTTP {response.status}{extra})"
    except urllib.error.HTTPError as err:
        hint = {404: " (not published there?)", 401: " (private or not published?)", 403: " (access denied)"}
        return False, f"unreachable: HTTP {err.code} {err.reason}{hint.get(err.code, '')}"
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        return False, f"unreachable: {type(reason).__name__}: {reason}"


def _hub_cached(repo_id: str, filename: str, revision: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=hf_cache_dir(), revision=revision)
    return isinstance(found, str)


def check_sources(entry: WeightEntry) -> list[SourceCheck]:
    """Cache state and reachability of every source (and mirror) of ``entry``, in the order tried."""
    offline = is_offline()
    checks: list[SourceCheck] = []
    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    for src in entry.sources():
        if src["type"] == "hf-hub":
            label = f"hf-hub:{src['repo_id']}@{src['revision']} ({src['filename']})"
            cached = _hub_cached(src["repo_id"], src["filename"], src["revision"])
            url = f"{endpoint}/{src['repo_id']}/resolve/{src['revision']}/{src['filename']}"
            candidates = [(url, label)]
        else:
            name = url_file_name(src["url"]).rsplit(".", 1)[0]
            folder = cache_dir() / "upstream"
            cached = (folder / f"{name}.safetensors").is_file() and (folder / f"{name}.json").is_file()
            candidates = url_candidates(src)
        for url, label in candidates:
            if offline:
                checks.append(SourceCheck(label, cached, None, "not checked: offline mode (HF_HUB_OFFLINE=1)"))
            else:
                ok, detail = head(url)
                checks.append(SourceCheck(label, cached, ok, detail))
    return checks


def _next_step(entry: WeightEntry, checks: list[SourceCheck]) -> str:
    if any(c.cached for c in checks):
        return "cached: loads offline (HF_HUB_OFFLINE=1 works)"
    if any(c.reachable for c in checks):
        return f"not cached; a source answers: `zoo download {entry.tag}` fetches it"
    step = (
        "no source reachable: fetch it where the network works (`zoo download TAG`) and copy the cache folders, "
        "set ZOO_WEIGHTS_MIRROR to a file server holding the upstream file, or pass a downloaded file as pretrained="
    )
    alt = entry.manifest.torchvision_init_tag(entry.model)
    if alt and alt != entry.tag and not entry.torchvision_init:
        step += f"; commercially usable alternative: {alt} (BlurPool inserted without fine-tuning)"
    return step


def doctor_report(model: str | None = None) -> list[str]:
    """The lines ``zoo doctor [MODEL]`` prints. ``model`` may be a model name or a weight tag."""
    lines = [f"python:          {platform.python_version()}"]
    lines += [f"{pkg + ':':<17}{_version(pkg)}" for pkg in _PACKAGES]
    lines.append(f"manifest:        {manifest_path()}")
    lines.append(f"hub org:         {hub_org()}")
    lines.append("offline mode:    " + ("yes (cached files only)" if is_offline() else "no"))
    for var in _SETTINGS:
        lines.append(f"  ${var}: {os.environ.get(var) or '(unset)'}")
    lines.append(f"zoo cache:       {cache_dir()} ({_folder_size(cache_dir())})")
    lines.append(f"hub cache:       {hf_cache_dir()} ({_folder_size(hf_cache_dir())})")
    if model is None:
        lines.append("(give a model name, e.g. `zoo doctor resnet50_aa4`, to check its weights' sources)")
        return lines
    manifest = load_manifest()
    if model in manifest.weights:
        tags = [model]
    else:
        from zoo.registry import get_entry

        get_entry(model)  # KeyError naming close names for a typo
        tags = manifest.tags_for(model)
    if not tags:
        lines.append(f"{model}: no published weights (`zoo list --pretrained` lists the models with weights)")
        return lines
    default = manifest.default_tag(manifest.weights[tags[0]].model)
    for tag in tags:
        entry = manifest.weights[tag]
        mark = "  (default: pretrained=True)" if tag == default else ""
        lines.append(f"{tag}{mark}  [{entry.license}]")
        checks = check_sources(entry)
        for c in checks:
            lines.append(f"  - {c.label}: {'cached' if c.cached else 'not cached'}; {c.detail}")
        lines.append(f"  next: {_next_step(entry, checks)}")
    return lines
