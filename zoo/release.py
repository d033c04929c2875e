"""``zoo release``: publish manifest weights to the Hugging Face Hub, verified end to end.

For each tag: obtain the upstream file (``--from DIR`` or the manifest's URL sources), check its
published hash prefix, convert it to zoo keys, check the converted model (official weights: logits
against the ``antialiased-cnns`` oracle, max abs diff <= 1e-5; torchvision weights: every tensor equal
to torchvision's, and for a baseline its logits too), write the repo folder (``model.safetensors``,
``config.json``, ``README.md`` model card), upload it with ``HfApi.upload_folder`` and record the
uploaded file's SHA-256 in the manifest.

Idempotent and resumable: a tag whose recorded SHA-256 is what the hub serves is skipped; a hub file
equal to the one just built is recorded without a new upload; downloads resume (HTTP Range). A failure
on one tag is reported and the others go on.

``push_weights`` (``zoo push``) writes and uploads one hub folder from the manifest sources or a local file.
This module builds models, so it sits above ``zoo.builder``; ``zoo.weights`` never imports it.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zoo.builder import create_pretrained, instantiate
from zoo.convert import oracle_logits_diff
from zoo.pretrained import PretrainedCfg, to_timm_cfg
from zoo.registry import get_entry
from zoo.weights.io import WEIGHTS_NAME, load_state_dict_file, save_model_dir, sha256_file
from zoo.weights.keymaps import to_zoo_keys
from zoo.weights.manifest import Manifest, WeightEntry, load_manifest, record_hub_sha256
from zoo.weights.publish import model_card, remote_sha256, upload_hub_folder
from zoo.weights.sources import (
    SourceError,
    _check_hash,
    download_verified,
    entry_lock,
    remove_stale_temp_files,
    url_candidates,
    url_file_name,
)

__all__ = [
    "ORACLE_TOLERANCE",
    "ReleaseResult",
    "build_hub_folder",
    "iter_release",
    "push_weights",
    "select_tags",
    "verify_converted",
    "write_hub_folder",
]

ORACLE_TOLERANCE = 1e-5


@dataclass
class ReleaseResult:
    """The outcome of one tag: ``status`` is ``published``, ``recorded`` (the hub already had this exact
    file), ``skipped`` (already published), ``dry-run`` or ``failed`` (``message`` says why)."""

    tag: str
    status: str
    repo_id: str | None = None
    sha256: str | None = None
    folder: str | None = None
    message: str = ""

    def line(self) -> str:
        where = f" -> {self.repo_id}" if self.repo_id else ""
        digest = f" sha256 {self.sha256[:12]}" if self.sha256 else ""
        return f"{self.tag}: {self.status}{where}{digest}" + (f" ({self.message})" if self.message else "")


def select_tags(patterns: Sequence[str], manifest: Manifest | None = None) -> list[str]:
    """Tags named by ``patterns``: ``all``, exact tags, globs over tags (``'resnet50_aa4.*'``) or model
    names (every tag of the model). ``KeyError`` for a pattern that matches nothing."""
    manifest = manifest or load_manifest()
    out: list[str] = []
    for pattern in patterns:
        if pattern == "all":
            found = list(manifest.weights)
        elif pattern in manifest.weights:
            found = [pattern]
        else:
            found = [t for t in manifest.weights if fnmatch.fnmatchcase(t, pattern)] or manifest.tags_for(pattern)
        if not found:
            raise KeyError(
                f"no manifest weights match {pattern!r}: give tags (resnet50_aa4.in1k_ft), globs "
                "('resnet50_aa4.*'), model names or 'all' (`zoo list --pretrained` lists the tags)"
            )
        out += found
    return list(dict.fromkeys(out))


def _upstream_source(entry: WeightEntry) -> dict[str, Any]:
    src = entry.url_source()
    if src is None:
        raise ValueError(f"{entry.tag} has no upstream URL source to publish from")
    return src


def obtain_upstream(entry: WeightEntry, work_dir: Path, from_dir: Path | None = None) -> tuple[Path, str, str]:
    """The verified upstream file of ``entry``: ``(path, sha256, where it came from)``.

    From ``from_dir`` (a file named as published, e.g. ``resnet50_lpf4_finetune-cad66808.pth``) or else
    downloaded from the source's URLs in order (``url_candidates``) into ``work_dir``, where a verified
    file is kept for a rerun and a partial one is resumed."""
    src = _upstream_source(entry)
    file_name = url_file_name(src["url"])
    sha, prefix = src.get("sha256"), src.get("sha256_prefix")
    if from_dir is not None:
        path = Path(from_dir) / file_name
        if not path.is_file():
            raise FileNotFoundError(f"{file_name} not found in {from_dir} (the official file of {entry.tag})")
        return path, _check_hash(path, sha, prefix, str(path)), str(path)
    work_dir.mkdir(parents=True, exist_ok=True)
    final = work_dir / file_name
    name = file_name.rsplit(".", 1)[0]
    reasons = []
    with entry_lock(work_dir, name):
        if final.is_file():
            try:
                return final, _check_hash(final, sha, prefix, str(final)), str(final)
            except RuntimeError:  # HashMismatchError: a stale or damaged earlier download
                final.unlink()
        for url, label in url_candidates(src):
            try:
                partial, digest = download_verified(url, work_dir, name, sha256=sha, sha256_prefix=prefix)
            except (SourceError, RuntimeError) as err:
                reasons.append(f"{label}: {str(err).splitlines()[0]}")
                continue
            os.replace(partial, final)
            remove_stale_temp_files(work_dir, name, keep_partials=False)
            return final, digest, url
    raise RuntimeError(f"no upstream source of {entry.tag} answered: " + "; ".join(reasons))


def _fixed_input(model: torch.nn.Module) -> torch.Tensor:
    side = max(64, int(getattr(model, "min_input_size", 1)))
    return torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))


def verify_converted(entry: WeightEntry, upstream_state: dict[str, torch.Tensor], model: torch.nn.Module) -> str:
    """Check the converted ``model`` against an independent implementation; returns what was checked.

    Official weights: the ``antialiased-cnns`` oracle loaded with the upstream state dict gives logits
    within ``ORACLE_TOLERANCE``. torchvision weights: every tensor of torchvision's model is in the zoo
    model unchanged (the blur has no weights), and a baseline's logits match torchvision's. Raises
    ``RuntimeError`` when a check fails or cannot run."""
    fmt = _upstream_source(entry)["format"]
    model.eval()
    if fmt == "official":
        diff = oracle_logits_diff(upstream_state, model, entry.model)
        if diff is None:
            raise RuntimeError(
                "the oracle package is not installed (pip install antialiased-cnns==0.3): "
                "official weights are published only after the logits check"
            )
        if diff > ORACLE_TOLERANCE:
            raise RuntimeError(f"converted model differs from the oracle by {diff:.3g} (tolerance {ORACLE_TOLERANCE})")
        return f"max |logits - oracle| = {diff:.2g}"
    if fmt != "torchvision":
        raise RuntimeError(f"no independent check for {fmt!r} weights; release publishes official or torchvision files")
    import torchvision

    reference = torchvision.models.get_model(entry.architecture, weights=None).eval()
    reference.load_state_dict(upstream_state, strict=True)
    ours = model.state_dict()
    differing = [k for k, v in reference.state_dict().items() if k not in ours or not torch.equal(ours[k], v)]
    if differing:
        raise RuntimeError(f"{len(differing)} tensor(s) differ from torchvision's, e.g. {differing[0]}")
    if entry.filter_size is None:
        x = _fixed_input(model)
        with torch.no_grad():
            diff = float((reference(x) - model(x)).abs().max())
        if diff > ORACLE_TOLERANCE:
            raise RuntimeError(f"logits differ from torchvision's by {diff:.3g} (tolerance {ORACLE_TOLERANCE})")
        return f"every tensor equal to torchvision's, max |logits - torchvision| = {diff:.2g}"
    return "every tensor equal to torchvision's (BlurPool adds no weights)"


def write_hub_folder(entry: WeightEntry, model: torch.nn.Module, folder: str | os.PathLike, **cfg_extra: Any) -> str:
    """Write the hub folder of ``entry`` (weights, ``config.json`` with the manifest's cfg plus ``cfg_extra``,
    ``README.md`` model card); returns the SHA-256 of its ``model.safetensors``."""
    cfg = to_timm_cfg(PretrainedCfg.from_dict(model.pretrained_cfg).replace(entry.pretrained_cfg(), cfg_extra))
    params = sum(p.numel() for p in model.parameters())
    card = {"README.md": model_card(entry, params)}
    out = save_model_dir(
        model, folder, name=entry.model, model_args=entry.model_args, pretrained_cfg=cfg, extra_files=card
    )
    return sha256_file(out / WEIGHTS_NAME)


def build_release_folder(entry: WeightEntry, upstream: Path, upstream_sha: str, out_dir: Path) -> tuple[Path, str, str]:
    """Convert + verify + write the repo folder of ``entry``; returns ``(folder, sha256, check)``."""
    src = _upstream_source(entry)
    state = load_state_dict_file(upstream)
    model = instantiate(get_entry(entry.model), **entry.model_args)
    model.load_state_dict(to_zoo_keys(state, entry.architecture, src["format"]), strict=True)
    check = verify_converted(entry, state, model)
    folder = out_dir / entry.tag
    if folder.exists():
        shutil.rmtree(folder)
    digest = write_hub_folder(entry, model, folder, converted_from=upstream.name, source_sha256=upstream_sha)
    return folder, digest, check


def release_one(
    entry: WeightEntry,
    out_dir: Path,
    *,
    from_dir: Path | None = None,
    dry_run: bool = False,
    token: str | None = None,
) -> ReleaseResult:
    """Publish one manifest weight (see the module doc); failures raise, ``iter_release`` reports them."""
    hub = entry.hub_source()
    if hub is None:
        raise ValueError(f"{entry.tag} has no hf-hub source in the manifest")
    repo = hub["repo_id"]
    if not dry_run and hub.get("sha256") and remote_sha256(repo, hub["filename"], token) == hub["sha256"]:
        return ReleaseResult(entry.tag, "skipped", repo, hub["sha256"], message="already published with this SHA-256")
    upstream, upstream_sha, origin = obtain_upstream(entry, out_dir / ".upstream", from_dir)
    folder, digest, check = build_release_folder(entry, upstream, upstream_sha, out_dir)
    detail = f"from {origin}; {check}"
    if dry_run:
        return ReleaseResult(entry.tag, "dry-run", repo, digest, str(folder), detail)
    status = "recorded"
    if remote_sha256(repo, hub["filename"], token) != digest:
        upload_hub_folder(folder, repo, f"Release {entry.tag} ({upstream.name}, verified: {check})", token=token)
        served = remote_sha256(repo, hub["filename"], token)
        if served != digest:
            raise RuntimeError(f"after the upload the hub serves SHA-256 {served}, not {digest}")
        status = "published"
    record_hub_sha256(entry.tag, digest, entry.manifest.path)
    return ReleaseResult(entry.tag, status, repo, digest, str(folder), detail)


def iter_release(
    tags: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    from_dir: str | os.PathLike | None = None,
    dry_run: bool = False,
    token: str | None = None,
) -> Iterator[ReleaseResult]:
    """Release each tag in turn, yielding its ``ReleaseResult``; an error on one tag becomes a
    ``failed`` result and the next tag goes on."""
    out = Path(out_dir)
    src_dir = Path(from_dir) if from_dir is not None else None
    if src_dir is not None and not src_dir.is_dir():
        raise FileNotFoundError(f"--from folder not found: {src_dir}")
    for tag in tags:
        entry = load_manifest().get(tag)  # re-read: earlier tags recorded their hashes
        try:
            yield release_one(entry, out, from_dir=src_dir, dry_run=dry_run, token=token)
        except Exception as err:  # reported per tag; the others go on
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            hub = entry.hub_source()
            yield ReleaseResult(tag, "failed", hub["repo_id"] if hub else None, message=reason)


def build_hub_folder(
    tag: str, out_dir: str | os.PathLike, weights: str | os.PathLike | None = None
) -> tuple[Path, str]:
    """Write the hub folder of manifest weight ``tag``; returns ``(folder, sha256 of model.safetensors)``.

    ``weights``: a local checkpoint (official ``.pth``, torchvision ``.pth``, or ``.safetensors`` in zoo
    keys); default: the weights obtained from the manifest sources (cache or upstream).
    """
    entry = load_manifest().get(tag)
    model = create_pretrained(entry.model, weights if weights is not None else entry.pretrained_tag)
    return Path(out_dir), write_hub_folder(entry, model, out_dir)


def push_weights(
    tag: str,
    out_dir: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    dry_run: bool = False,
    record: bool | None = None,
    repo_id: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """Build the hub folder of ``tag``, upload it (unless ``dry_run``) and record its SHA-256 in the manifest
    (``record``; default: only when uploaded, so a dry run leaves the manifest alone).

    Returns ``{"folder", "sha256", "repo_id", "uploaded", "recorded"}``.
    """
    entry = load_manifest().get(tag)
    folder, digest = build_hub_folder(tag, out_dir, weights)
    hub = entry.hub_source()
    repo = repo_id or (hub["repo_id"] if hub else None)
    uploaded = False
    if not dry_run:
        if repo is None:
            raise ValueError(f"{tag} has no hf-hub source; pass repo_id")
        upload_hub_folder(folder, repo, f"Add {tag}", token=token)
        uploaded = True
    record = uploaded if record is None else record
    if record:
        record_hub_sha256(tag, digest)
    return {"folder": str(folder), "sha256": digest, "repo_id": repo, "uploaded": uploaded, "recorded": record}
