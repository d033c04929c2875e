"""A loopback HTTP server speaking the part of the Hugging Face Hub protocol that
``hf_hub_download`` uses, plus plain static files (for upstream-URL downloads).

Hub protocol served: ``HEAD``/``GET /{org}/{name}/resolve/{revision}/{filename}`` with the headers
``X-Repo-Commit`` (40-hex commit), ``ETag`` and ``X-Linked-Etag`` (SHA-256 of the file, like LFS
files), ``X-Linked-Size``, ``Content-Length``, ``Accept-Ranges``; ``Range: bytes=N-`` answered with
206 + ``Content-Range``; a missing repo / revision / file answers 404 with ``X-Error-Code``
``RepoNotFound`` / ``RevisionNotFound`` / ``EntryNotFound``. Static files: ``GET /files/{name}``.

Upload protocol served (what ``HfApi.create_repo`` / ``upload_folder`` call): ``POST /api/repos/create``
(409 when the repo exists), ``POST /api/validate-yaml``, ``POST /api/models/{repo}/preupload/{rev}``
(every file ``regular``, with the git blob ``oid`` of the file already there so unchanged files are
skipped), ``POST /api/models/{repo}/commit/{rev}`` (ndjson header + base64 ``file`` lines; a new commit
hash) and ``GET /api/models/{repo}/revision/{rev}``. Write calls need an ``Authorization`` header
(401 otherwise). ``server.commits`` lists ``(repo_id, [paths])`` per commit.

Faults (``server.fault(...)``): ``status=500`` answers every request with that status; ``drop_at=N``
sends the first N bytes of a file body then closes the connection; ``corrupt=True`` flips the last
byte of a body (headers unchanged, so the ETag no longer matches); ``stall_at=N`` sends N bytes then
hangs until the server stops (a download to kill mid-way); each for ``times`` requests
(``None`` = always) on paths containing ``match``.

Usage::

    with serve_hub({"org/name": folder}) as hub:          # or HubServer() + add_repo()
        os.environ["HF_ENDPOINT"] = hub.url
        hub.fault(drop_at=100, times=1)
        ...
    hub.requests  # [(method, path, range header), ...]
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["Fault", "HubServer", "serve_hub"]

_RESOLVE = re.compile(r"^/(?:models/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<op>preupload|commit|revision)/(?P<rev>[^/]+)$")


@dataclass
class Fault:
    status: int | None = None
    drop_at: int | None = None
    times: int | None = None
    match: str = ""
    corrupt: bool = False
    stall_at: int | None = None

    def take(self, method: str, path: str) -> bool:
        body_fault = self.drop_at is not None or self.corrupt or self.stall_at is not None
        if self.match not in path or self.times == 0 or (body_fault and method != "GET"):
            return False
        if self.times is not None:
            self.times -= 1
        return True


@dataclass
class _Repo:
    folder: Path
    revision: str
    commit: str
    owned: bool = False  # the folder belongs to the server (created or copied on the first commit)


class HubServer:
    """Serve folders as hub repos (``add_repo``) and files under ``/files/`` (``add_file``) on 127.0.0.1."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.files: dict[str, Path] = {}
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, str | None]] = []
        self.commits: list[tuple[str, list[str]]] = []
        self.accept_ranges = True  # False: ignore Range headers (answer 200 with the whole body), like some servers
        self._storage = Path(tempfile.mkdtemp(prefix="hub-server-"))
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- content --------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, folder: str | Path, revision: str = "main") -> str:
        """Serve ``folder`` as ``repo_id`` at ``revision`` (and at its commit hash); returns the commit."""
        folder = Path(folder)
        self.repos[repo_id] = _Repo(folder, revision, _commit_of(repo_id, revision, folder))
        return self.repos[repo_id].commit

    def create_repo(self, repo_id: str, revision: str = "main") -> _Repo:
        """An empty repo in the server's own storage (what ``POST /api/repos/create`` does)."""
        folder = self._storage / repo_id.replace("/", "--")
        folder.mkdir(parents=True)
        repo = self.repos[repo_id] = _Repo(folder, revision, _commit_of(repo_id, revision, folder), owned=True)
        return repo

    def commit_files(self, repo_id: str, files: dict[str, bytes]) -> str:
        """Write ``files`` into ``repo_id`` (copying a served folder into the server's storage first)."""
        repo = self.repos[repo_id]
        if not repo.owned:
            copy = self._storage / repo_id.replace("/", "--")
            shutil.copytree(repo.folder, copy)
            repo.folder, repo.owned = copy, True
        for rel, data in files.items():
            target = repo.folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        repo.commit = _commit_of(repo_id, repo.revision, repo.folder)
        self.commits.append((repo_id, sorted(files)))
        return repo.commit

    def add_file(self, path: str | Path, name: str | None = None) -> str:
        """Serve a local file at ``/files/{name}``; returns its URL."""
        path = Path(path)
        name = name or path.name
        self.files[name] = path
        return f"{self.url}/files/{name}"

    def fault(
        self,
        *,
        status: int | None = None,
        drop_at: int | None = None,
        corrupt: bool = False,
        stall_at: int | None = None,
        times: int | None = None,
        match: str = "",
    ) -> Fault:
        """Inject a failure (see the module doc); returns it so a test can inspect ``times`` left."""
        fault = Fault(status, drop_at, times, match, corrupt, stall_at)
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None
        shutil.rmtree(self._storage, ignore_errors=True)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            return next((f for f in self.faults if f.take(method, path)), None)


@contextlib.contextmanager
def serve_hub(repos: dict[str, str | Path] | None = None, revision: str = "main") -> Iterator[HubServer]:
    """Context manager: a started ``HubServer`` serving ``{repo_id: folder}``."""
    server = HubServer()
    for repo_id, folder in (repos or {}).items():
        server.add_repo(repo_id, folder, revision)
    with server:
        yield server


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _commit_of(repo_id: str, revision: str, folder: Path) -> str:
    listing = "".join(f"{p.name}:{_sha256(p)}" for p in sorted(folder.rglob("*")) if p.is_file())
    return hashlib.sha1(f"{repo_id}@{revision}:{listing}".encode()).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        if self.path.startswith("/api/"):
            self._api()
        else:
            self._serve(body=True)

    def do_POST(self) -> None:
        self._api()

    # -- upload API -------------------------------------------------------------------------------
    def _json(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _api(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        self.hub.requests.append((self.command, self.path, None))
        fault = self.hub._take_fault(self.command, self.path)
        if fault is not None and fault.status is not None:
            self._error(fault.status, "FaultInjected")
            return
        if path == "/api/validate-yaml":
            self._json(200, {"errors": [], "warnings": []})
            return
        if self.command == "POST" and not self.headers.get("Authorization"):
            self._error(401, "Unauthorized")
            return
        if path == "/api/repos/create":
            payload = json.loads(body or b"{}")
            repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
            with self.hub._lock:
                if repo_id in self.hub.repos:  # the hub answers 409 with the repo's url
                    url = f"{self.hub.url}/{repo_id}"
                    self._json(409, {"error": "You already created this model repo", "url": url})
                    return
                self.hub.create_repo(repo_id)
            self._json(200, {"url": f"{self.hub.url}/{repo_id}", "name": repo_id})
            return
        match = _API.match(path)
        repo = self.hub.repos.get(match["repo"]) if match else None
        if repo is None:
            self._error(404, "RepoNotFound")
            return
        if match["rev"] not in (repo.revision, repo.commit):
            self._error(404, "RevisionNotFound")
            return
        if match["op"] == "revision":
            files = sorted(str(p.relative_to(repo.folder)) for p in repo.folder.rglob("*") if p.is_file())
            self._json(200, {"id": match["repo"], "sha": repo.commit, "siblings": [{"rfilename": f} for f in files]})
        elif match["op"] == "preupload":
            out = []
            for item in json.loads(body)["files"]:
                existing = repo.folder / item["path"]
                oid = _git_blob_oid(existing.read_bytes()) if existing.is_file() else None
                out.append({"path": item["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
            self._json(200, {"files": out})
        else:
            files: dict[str, bytes] = {}
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] != "header":
                    self._error(400, f"Unsupported{item['key']}")
                    return
            with self.hub._lock:
                commit = self.hub.commit_files(match["repo"], files)
            self._json(200, {"commitUrl": f"{self.hub.url}/{match['repo']}/commit/{commit}", "commitOid": commit})

    def _error(self, status: int, code: str | None = None, commit: str | None = None) -> None:
        payload = f'{{"error": "{code or status}"}}'.encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", code)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _locate(self) -> tuple[Path | None, dict[str, str]]:
        path = self.path.split("?", 1)[0]
        if path.startswith("/files/"):
            file = self.hub.files.get(path[len("/files/") :])
            if file is None:
                self._error(404)
            return file, {}
        match = _RESOLVE.match(path)
        repo = self.hub.repos.get(match["repo"]) if match else None
        if repo is None:
            self._error(404, "RepoNotFound")
            return None, {}
        if match["rev"] not in (repo.revision, repo.commit):
            self._error(404, "RevisionNotFound")
            return None, {}
        file = repo.folder / match["file"]
        if not file.is_file():
            self._error(404, "EntryNotFound", repo.commit)
            return None, {}
        sha = _sha256(file)
        headers = {
            "X-Repo-Commit": repo.commit,
            "ETag": f'"{sha}"',
            "X-Linked-Etag": f'"{sha}"',
            "X-Linked-Size": str(file.stat().st_size),
        }
        return file, headers

    def _serve(self, body: bool) -> None:
        self.hub.requests.append((self.command, self.path, self.headers.get("Range")))
        fault = self.hub._take_fault(self.command, self.path)
        if fault is not None and fault.status is not None:
            self._error(fault.status)
            return
        file, headers = self._locate()
        if file is None:
            return
        data = file.read_bytes()
        start = 0
        range_header = self.headers.get("Range")
        if range_header and self.hub.accept_ranges and (m := re.match(r"bytes=(\d+)-", range_header)):
            start = min(int(m[1]), len(data))
        self.send_response(206 if start else 200)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Accept-Ranges", "bytes" if self.hub.accept_ranges else "none")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        if fault is not None and fault.drop_at is not None:
            self.wfile.write(data[start : max(start, fault.drop_at)])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None and fault.stall_at is not None:
            self.wfile.write(data[start : max(start, fault.stall_at)])
            self.wfile.flush()
            self.hub._stopping.wait(120)  # hang (the client is killed meanwhile)
            self.close_connection = True
            return
        if fault is not None and fault.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        self.wfile.write(data[start:])
