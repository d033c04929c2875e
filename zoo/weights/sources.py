"""Where weights come from: the Hugging Face Hub (``hf_hub_download``) and upstream URLs (downloaded
with a progress bar, hash-checked, converted to safetensors and cached).

Environment (read at call time, so it can change within a process):
``HF_ENDPOINT``, ``HF_HOME`` / ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE`` (also ``ZOO_OFFLINE``),
``ZOO_CACHE_DIR`` (converted upstream weights), ``ZOO_DOWNLOAD_RETRIES`` (default 3),
``ZOO_RETRY_BACKOFF`` (seconds, default 1.0), ``ZOO_WEIGHTS_MIRROR`` (a base URL, e.g. an
organisation's file server, serving the upstream file names; tried before each upstream URL; the 0.1.0
name ``ZOO_UPSTREAM_MIRROR`` still works).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import http.client
import json
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from zoo.io import atomic_write, file_lock
from zoo.weights.errors import CorruptWeightsError, HashMismatchError
from zoo.weights.io import load_state_dict_file, save_state_dict, sha256_file
from zoo.weights.keymaps import to_zoo_keys

__all__ = [
    "MIRROR_ENV",
    "SourceError",
    "cache_dir",
    "download_url",
    "download_verified",
    "entry_lock",
    "fetch_hub",
    "fetch_url",
    "fetch_url_source",
    "hf_cache_dir",
    "is_offline",
    "mirror_url",
    "remove_stale_temp_files",
    "url_candidates",
    "url_file_name",
    "user_mirror_url",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TRUE = {"1", "true", "yes", "on"}
USER_AGENT = "antialiased-zoo"


class SourceError(Exception):
    """One source failed; the message is the reason shown in ``WeightsUnavailableError``."""


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``ZOO_OFFLINE``) is set: use cached files only."""
    return _env_true("HF_HUB_OFFLINE") or _env_true("ZOO_OFFLINE")


def cache_dir() -> Path:
    """Cache of converted upstream weights: ``$ZOO_CACHE_DIR`` or ``$XDG_CACHE_HOME/antialiased-zoo``."""
    if os.environ.get("ZOO_CACHE_DIR"):
        return Path(os.environ["ZOO_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "antialiased-zoo"


def hf_cache_dir() -> Path:
    """huggingface_hub's cache: ``$HF_HUB_CACHE`` or ``$HF_HOME/hub`` (default ``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def _retries() -> int:
    return max(1, int(os.environ.get("ZOO_DOWNLOAD_RETRIES", "3")))


def _backoff() -> float:
    return float(os.environ.get("ZOO_RETRY_BACKOFF", "1.0"))


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    cause = err.__cause__ or err.__context__
    if cause is not None and str(cause).strip() and str(cause).strip().splitlines()[0] not in first:
        first += f" (cause: {type(cause).__name__}: {str(cause).strip().splitlines()[0]})"
    return f"{type(err).__name__}: {first}"


# --- Hugging Face Hub -------------------------------------------------------------------------


def _evict_hub_file(pointer: Path) -> None:
    """Remove a cached hub file: its snapshot pointer and the blob it links to."""
    blob = Path(os.path.realpath(pointer))
    pointer.unlink(missing_ok=True)
    if blob != pointer:
        blob.unlink(missing_ok=True)


def _resolvable(url: str) -> bool:
    """Whether the host of ``url`` has an address. Without one (no network) the hub client would
    retry for ~40 s before falling back to its cache; we go to the cache at once instead."""
    host = urllib.parse.urlsplit(url).hostname
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    return True


def _hub_download(repo_id: str, filename: str, revision: str, force: bool = False) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # LocalEntryNotFoundError subclasses EntryNotFoundError: it is caught first.
    endpoint = os.environ.get("HF_ENDPOINT") or None
    cache_only = is_offline() or not _resolvable(endpoint or "https://huggingface.co")
    try:
        path = hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            endpoint=endpoint,
            cache_dir=hf_cache_dir(),
            local_files_only=cache_only,
            force_download=force,
            library_name=USER_AGENT,
        )
    except LocalEntryNotFoundError as err:
        if is_offline():
            raise SourceError(f"offline mode (HF_HUB_OFFLINE=1) and not in the cache: {_short(err)}") from err
        if cache_only:
            host = urllib.parse.urlsplit(endpoint or "https://huggingface.co").hostname
            raise SourceError(f"hub unreachable: cannot resolve {host} (no network?), and not in the cache") from err
        raise SourceError(f"hub unreachable: {_short(err)}") from err
    except RepositoryNotFoundError as err:
        raise SourceError(f"repository {repo_id} not found (or private): {_short(err)}") from err
    except RevisionNotFoundError as err:
        raise SourceError(f"revision {revision!r} of {repo_id} not found") from err
    except EntryNotFoundError as err:
        raise SourceError(f"{filename} not found in {repo_id}@{revision}") from err
    except Exception as err:  # network errors (httpx), HTTP 5xx after retries, size mismatch (OSError)
        raise SourceError(_short(err)) from err
    return Path(path)


def fetch_hub(
    repo_id: str, filename: str = "model.safetensors", revision: str = "main", sha256: str | None = None
) -> Path:
    """Download (or reuse from the HF cache) one file of a hub repo and verify its SHA-256.

    The expected hash is ``sha256`` when given, else the hub's LFS ETag (the blob name) when it
    is a SHA-256. A mismatching cached file is evicted and fetched once more; a second mismatch
    evicts it again and raises ``HashMismatchError`` (so nothing wrong stays in the cache).
    """
    for attempt in range(2):
        path = _hub_download(repo_id, filename, revision, force=attempt > 0)
        blob_name = Path(os.path.realpath(path)).name
        expected = sha256 or (blob_name if _SHA256.match(blob_name) else None)
        if expected is None:
            return path
        actual = sha256_file(path)
        if actual == expected:
            return path
        _evict_hub_file(path)
        if attempt == 1 or is_offline():
            raise HashMismatchError(
                f"SHA-256 mismatch for {repo_id}/{filename}@{revision}: expected {expected}, got {actual}; "
                "the file was removed from the cache"
            )
    raise AssertionError("unreachable")


# --- upstream URLs -----------------------------------------------------------------------------
MIRROR_ENV = "ZOO_WEIGHTS_MIRROR"
_LEGACY_MIRROR_ENV = "ZOO_UPSTREAM_MIRROR"  # the 0.1.0 name, still honoured
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def url_file_name(url: str) -> str:
    """The file name in a URL's path, query ignored: ``.../resnet50-0676ba61.pth?dl=1`` -> ``resnet50-0676ba61.pth``."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])


def user_mirror_url(url: str) -> str | None:
    """``$ZOO_WEIGHTS_MIRROR`` (an organisation's file server) + the file name of ``url``, when set."""
    base = os.environ.get(MIRROR_ENV) or os.environ.get(_LEGACY_MIRROR_ENV)
    return f"{base.rstrip('/')}/{url_file_name(url)}" if base else None


mirror_url = user_mirror_url  # the 0.1.0 name


def url_candidates(src: dict) -> list[tuple[str, str]]:
    """``(url, label)`` of a manifest ``url`` source in the order they are tried: the user's mirror
    (``$ZOO_WEIGHTS_MIRROR``), the primary URL, then the source's ``mirrors``."""
    fmt = src["format"]
    out: list[tuple[str, str]] = []
    user = user_mirror_url(src["url"])
    if user:
        out.append((user, f"{user} ({fmt} format, ${MIRROR_ENV} mirror)"))
    out.append((src["url"], f"{src['url']} ({fmt} format)"))
    out += [(url, f"{url} ({fmt} format, mirror)") for url in src.get("mirrors", ())]
    return out


def _check_hash(path: Path, sha256: str | None, prefix: str | None, url: str) -> str:
    actual = sha256_file(path)
    if sha256 and actual != sha256:
        raise HashMismatchError(f"SHA-256 mismatch for the file served by {url}: expected {sha256}, got {actual}")
    if prefix and not actual.startswith(prefix):
        raise HashMismatchError(
            f"SHA-256 mismatch for the file served by {url}: expected a hash starting {prefix}, got {actual}"
        )
    return actual


def _content_range_start(response: http.client.HTTPResponse) -> int | None:
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
    return int(match[1]) if match else None


def download_url(url: str, dest: Path, *, desc: str | None = None, timeout: float = 30.0, resume: bool = True) -> None:
    """Stream ``url`` into ``dest`` with a tqdm bar, retrying transient failures (5xx, 429, resets,
    truncated bodies) ``$ZOO_DOWNLOAD_RETRIES`` times with exponential backoff. 4xx errors are final.

    With ``resume`` (default), bytes already in ``dest`` (an interrupted download, this call's earlier
    attempt or a killed process) are kept and the rest is asked for with ``Range: bytes=N-``; a server
    that ignores the range (200) or answers another range restarts the file. The caller owns atomicity
    and the hash check."""
    retries, backoff = _retries(), _backoff()
    last: Exception | None = None
    for attempt in range(retries):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        offset = dest.stat().st_size if resume and dest.is_file() else 0
        headers = {"User-Agent": USER_AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if offset and (response.status != 206 or _content_range_start(response) != offset):
                    offset = 0  # the range was ignored or answered differently: take the body from the start
                length = response.headers.get("Content-Length")
                length = int(length) if length is not None else None
                total = None if length is None else offset + length
                received = 0
                name = desc or url_file_name(url)
                with (
                    open(dest, "ab" if offset else "wb") as out,
                    tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=name) as bar,
                ):
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                if length is not None and received != length:
                    raise http.client.IncompleteRead(b"", length - received)
            return
        except urllib.error.HTTPError as err:
            last = err
            if err.code == 416 and offset:  # the partial file is not a prefix the server knows: start over
                dest.unlink(missing_ok=True)
                continue
            if err.code < 500 and err.code != 429:
                raise SourceError(f"HTTP {err.code} {err.reason} for {url}") from err
        except urllib.error.URLError as err:
            if isinstance(err.reason, socket.gaierror):  # DNS failure: no network, retrying won't help
                raise SourceError(f"cannot resolve the host of {url} (no network?): {err.reason}") from err
            last = err
        except (OSError, http.client.HTTPException) as err:
            last = err
    raise SourceError(f"failed after {retries} attempt(s): {_short(last)}") from last


def _cached_ok(dest: Path, meta_file: Path) -> bool:
    if not (dest.is_file() and meta_file.is_file()):
        return False
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        return meta.get("sha256") == sha256_file(dest)
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def entry_lock(folder: Path, name: str) -> Iterator[None]:
    """Hold the per-entry lock ``folder/NAME.lock`` (an OS lock: released when the holder exits or is
    killed). Everything that checks, writes or removes the files of ``NAME`` in ``folder`` holds it."""
    with file_lock(folder / f"{name}.lock"):
        yield


def _partial_path(folder: Path, name: str, url: str) -> Path:
    """Where the download of ``url`` for ``NAME`` accumulates (kept across runs for HTTP Range resume)."""
    key = hashlib.sha1(url.encode()).hexdigest()[:10]
    return folder / f".{name}.{key}.part{Path(url_file_name(url)).suffix or '.pth'}"


def remove_stale_temp_files(folder: Path, name: str, *, keep_partials: bool = True) -> list[Path]:
    """Remove the temp files of ``NAME`` in ``folder`` (``.NAME.*``: writes killed before their rename,
    downloads of older versions). With ``keep_partials``, partial downloads (``.NAME.<url key>.part.*``)
    stay, so a later call resumes whichever URL answers. Call with ``entry_lock(folder, name)`` held: no
    other process is then writing them. Returns what was removed."""
    removed = []
    for path in folder.glob(f".{glob.escape(name)}.*"):
        if keep_partials and ".part." in path.name[len(name) + 2 :]:
            continue
        if path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def download_verified(
    url: str, folder: Path, name: str, *, sha256: str | None = None, sha256_prefix: str | None = None
) -> tuple[Path, str]:
    """Download ``url`` into ``folder`` (resuming an earlier partial download of the same URL; partial
    downloads of the entry's other URLs are kept for their own resume) and check its hash.

    Returns ``(partial file, sha256)``; the caller holds ``entry_lock(folder, name)`` and removes the file
    when done. A file with the wrong hash is deleted and raises ``HashMismatchError`` naming ``url``."""
    partial = _partial_path(folder, name, url)
    remove_stale_temp_files(folder, name)
    download_url(url, partial, desc=url_file_name(url))
    try:
        return partial, _check_hash(partial, sha256, sha256_prefix, url)
    except HashMismatchError:
        partial.unlink(missing_ok=True)
        raise


def fetch_url(
    url: str,
    *,
    fmt: str,
    arch: str,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    name: str | None = None,
) -> Path:
    """Download an upstream checkpoint, check its hash, convert it to zoo keys and cache it as
    safetensors (``cache_dir()/upstream/NAME.safetensors`` + a ``NAME.json`` record of its own hash).

    ``name`` (default: the stem of the URL's file name) keys the cache, so a mirror and the primary URL
    of one file share an entry. Concurrent processes serialise on the entry's lock file; an interrupted
    download is resumed (HTTP Range) by the next call. A cached file whose hash no longer matches its
    record (truncated, corrupt) is fetched again.
    """
    name = name or url_file_name(url).rsplit(".", 1)[0]
    folder = cache_dir() / "upstream"
    dest = folder / f"{name}.safetensors"
    meta_file = folder / f"{name}.json"
    with entry_lock(folder, name):
        if _cached_ok(dest, meta_file):
            return dest
        if is_offline():
            raise SourceError(f"offline mode (HF_HUB_OFFLINE=1) and not in the zoo cache ({dest})")
        partial, source_sha = download_verified(url, folder, name, sha256=sha256, sha256_prefix=sha256_prefix)
        try:
            state = load_state_dict_file(partial)
        except CorruptWeightsError as err:
            partial.unlink(missing_ok=True)
            raise SourceError(f"downloaded file from {url} is unreadable: {err}") from err
        # the record is written last: a reader (holding the lock) trusts the file only with its record
        save_state_dict(to_zoo_keys(state, arch, fmt), dest, metadata={"source_url": url, "source_sha256": source_sha})
        record = {"sha256": sha256_file(dest), "source_url": url, "source_sha256": source_sha, "format": fmt}
        atomic_write(meta_file, json.dumps(record, indent=1) + "\n")
        remove_stale_temp_files(folder, name, keep_partials=False)  # this one and other URLs' partials
    return dest


def fetch_url_source(src: dict, arch: str, attempts: list[tuple[str, str]]) -> tuple[Path, str] | None:
    """Try each URL of a manifest ``url`` source (``url_candidates``); returns ``(cached file, label)`` of
    the first that works, else ``None`` with one ``(label, reason)`` per URL appended to ``attempts``."""
    from zoo.weights.errors import WeightsUnavailableError

    name = url_file_name(src["url"]).rsplit(".", 1)[0]
    for url, label in url_candidates(src):
        try:
            path = fetch_url(
                url,
                fmt=src["format"],
                arch=arch,
                sha256=src.get("sha256"),
                sha256_prefix=src.get("sha256_prefix"),
                name=name,
            )
            return path, label
        except (SourceError, WeightsUnavailableError) as err:
            attempts.append((label, str(err)))
    return None
