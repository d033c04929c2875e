"""A loopback HTTP server speaking the part of the Hugging Face Hub protocol that
``hf_hub_download`` uses, plus plain static files (for upstream-URL downloads).

Hub protocol served: ``HEAD``/``GET /{org}/{name}/resolve/{revision}/{filename}`` with the headers
``X-Repo-Commit`` (40-hex commit), ``ETag`` and ``X-Linked-Etag`` (SHA-256 of the file, like LFS
files), ``X-Linked-Size``, ``Content-Length``, ``Accept-Ranges``; ``Range: bytes=N-`` answered with
206 + ``Content-Range``; a missing repo / revision / file answers 404 with ``X-Error-Code``
``RepoNotFound`` / ``RevisionNotFound`` / ``EntryNotFound``. Static files: ``GET /files/{name}``.

Faults (``server.fault(...)``): ``status=500`` answers every request with that status; ``drop_at=N``
sends the first N bytes of a file body then closes the connection; ``corrupt=True`` flips the last
byte of a body (headers unchanged, so the ETag no longer matches); each for ``times`` requests
(``None`` = always) on paths containing ``match``.

Usage::

    with serve_hub({"org/name": folder}) as hub:          # or HubServer() + add_repo()
        os.environ["HF_ENDPOINT"] = hub.url
        hub.fault(drop_at=100, times=1)
        ...
    hub.requests  # [(method, path, range header), ...]
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["Fault", "HubServer", "serve_hub"]

_RESOLVE = re.compile(r"^/(?:models/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


@dataclass
class Fault:
    status: int | None = None
    drop_at: int | None = None
    times: int | None = None
    match: str = ""
    corrupt: bool = False

    def take(self, method: str, path: str) -> bool:
        if (
            self.match not in path
            or self.times == 0
            or ((self.drop_at is not None or self.corrupt) and method != "GET")
        ):
            return False
        if self.times is not None:
            self.times -= 1
        return True


@dataclass
class _Repo:
    folder: Path
    revision: str
    commit: str


class HubServer:
    """Serve folders as hub repos (``add_repo``) and files under ``/files/`` (``add_file``) on 127.0.0.1."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.files: dict[str, Path] = {}
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- content --------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, folder: str | Path, revision: str = "main") -> str:
        """Serve ``folder`` as ``repo_id`` at ``revision`` (and at its commit hash); returns the commit."""
        folder = Path(folder)
        listing = "".join(f"{p.name}:{_sha256(p)}" for p in sorted(folder.iterdir()) if p.is_file())
        commit = hashlib.sha1(f"{repo_id}@{revision}:{listing}".encode()).hexdigest()
        self.repos[repo_id] = _Repo(folder, revision, commit)
        return commit

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
        times: int | None = None,
        match: str = "",
    ) -> Fault:
        """Inject a failure (see the module doc); returns it so a test can inspect ``times`` left."""
        fault = Fault(status, drop_at, times, match, corrupt)
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
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

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


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

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
        if range_header and (m := re.match(r"bytes=(\d+)-", range_header)):
            start = min(int(m[1]), len(data))
        self.send_response(206 if start else 200)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Accept-Ranges", "bytes")
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
        if fault is not None and fault.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        self.wfile.write(data[start:])
