"""A stand-in for the Hugging Face Hub on 127.0.0.1, for tests (environment-notes §6).

It answers what ``huggingface_hub`` 2.x asks when thead downloads and pushes weights:

- ``GET /api/models/<repo>[/revision/<rev>]``: ``{"sha", "siblings"}`` (``model_info``);
- ``HEAD``/``GET /<repo>/resolve/<rev>/<file>``: the bytes, with ``X-Repo-Commit``, ``ETag``
  and ``Content-Length``; a missing repo, revision or file is a 404 with the ``X-Error-Code``
  the client maps to its error types;
- ``POST /api/repos/create``, ``POST /api/validate-yaml`` (a model card's front matter),
  ``POST /api/models/<repo>/preupload/<rev>`` (every file
  "regular", i.e. inline) and ``POST /api/models/<repo>/commit/<rev>`` (NDJSON, base64 files):
  enough for ``HfApi.create_repo`` + ``create_commit``, whose files then become downloadable.

The serving loop is bounded: it handles requests only until ``stop()`` or ``lifetime_s``,
polling every 0.1 s, and handler threads are daemons that give up on idle connections after a
few seconds, so a test can never hang on it. ``delay_s`` makes every answer late (a slow Hub);
``write_token`` makes POSTs without that bearer token fail with 401.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


FAKE_REPO = "test-org/tiny-lsr"  # the repo id the ``fake_hub`` fixture (tests/conftest.py) serves


class FakeHub:
    def __init__(self, *, delay_s: float = 0.0, lifetime_s: float = 60.0, write_token: str | None = None):
        self.delay_s = delay_s
        self.write_token = write_token  # when set, POSTs need "Authorization: Bearer <it>"
        self.lifetime_s = lifetime_s
        self.repos: dict[str, dict[str, bytes]] = {}
        self.shas: dict[str, str] = {}
        self.served_instead: dict[tuple[str, str], bytes] = {}  # (repo, file) -> corrupt bytes
        self.requests: list[tuple[str, str]] = []
        self.commits: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- content -----------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes]) -> str:
        """Publish ``files`` as a new commit of ``repo_id``; returns its sha."""
        digest = hashlib.sha1(repr(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items())).encode())
        sha = digest.hexdigest()
        with self._lock:
            self.repos[repo_id] = dict(files)
            self.shas[repo_id] = sha
        return sha

    def model_requests(self) -> list[tuple[str, str]]:
        """Requests about repos (not the client's telemetry)."""
        return [r for r in self.requests if "agent-harnesses" not in r[1]]

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.timeout = 0.1
        self._thread = threading.Thread(target=self._serve, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        deadline = time.monotonic() + self.lifetime_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            self._server.handle_request()  # returns after server.timeout when idle

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._server is not None:
            self._server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        # A client that gave up (the slow-Hub test) leaves a broken pipe behind: expected.
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5  # an idle keep-alive connection closes after this
    hub: FakeHub

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    # -- helpers -------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _error(self, code: str, message: str, status: int = 404) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(status, body, {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"})

    def _begin(self) -> str:
        path = unquote(urlsplit(self.path).path)
        with self.hub._lock:
            self.hub.requests.append((self.command, path))
        if self.hub.delay_s:
            time.sleep(self.hub.delay_s)
        return path

    def _repo(self, repo_id: str, revision: str | None) -> dict[str, bytes] | None:
        files = self.hub.repos.get(repo_id)
        if files is None:
            self._error("RepoNotFound", f"Repository {repo_id} not found")
            return None
        if revision not in (None, "main", self.hub.shas[repo_id]):
            self._error("RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return files

    # -- GET / HEAD ------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self._begin()
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id = "/".join(parts[2:4])
            revision = parts[5] if len(parts) >= 6 and parts[4] == "revision" else None
            files = self._repo(repo_id, revision)
            if files is not None:
                sha = self.hub.shas[repo_id]
                siblings = [{"rfilename": name} for name in sorted(files)]
                self._json({"id": repo_id, "modelId": repo_id, "sha": sha, "private": False, "siblings": siblings})
            return
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            files = self._repo(repo_id, revision)
            if files is None:
                return
            if filename not in files:
                self._error("EntryNotFound", f"{filename} does not exist in {repo_id}")
                return
            body = self.hub.served_instead.get((repo_id, filename), files[filename])
            etag = hashlib.sha256(files[filename]).hexdigest()  # what the Hub computed at upload
            headers = {"X-Repo-Commit": self.hub.shas[repo_id], "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
            self._send(200, body, headers)
            return
        self._error("NotFound", f"no route for {path}")

    # -- POST (push) -------------------------------------------------------------------------
    def do_POST(self) -> None:
        path = self._begin()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.hub.write_token and self.headers.get("Authorization") != f"Bearer {self.hub.write_token}":
            self._error("Unauthorized", "Invalid credentials in Authorization header", status=401)
            return
        parts = path.strip("/").split("/")
        if parts == ["api", "repos", "create"]:
            payload = json.loads(body or b"{}")
            repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}" if "/" not in payload.get("name", "") else payload["name"]
            self._json({"url": f"{self.hub.url}/{repo_id}", "name": repo_id})
            return
        if parts == ["api", "validate-yaml"]:
            # The client checks a README's front matter before committing it; as the Hub
            # does, refuse front matter that is not YAML or has no licence.
            import yaml

            content = json.loads(body or b"{}").get("content", "")
            meta = content.split("---")[1] if content.startswith("---") and content.count("---") >= 2 else ""
            try:
                data = yaml.safe_load(meta) or {}
            except yaml.YAMLError as e:
                data, error = {}, str(e)
            else:
                error = "" if isinstance(data, dict) and data.get("license") else "no license in the metadata"
            if error:
                self._send(400, json.dumps({"errors": [{"message": error}]}).encode(), {"X-Error-Code": "BadRequest"})
            else:
                self._json({"errors": [], "warnings": []})
            return
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "preupload":
            payload = json.loads(body or b"{}")
            files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in payload.get("files", [])]
            self._json({"files": files})
            return
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "commit":
            repo_id = "/".join(parts[2:4])
            header, files = {}, {}
            for line in body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                if item["key"] == "header":
                    header = item["value"]
                elif item["key"] == "file":
                    value = item["value"]
                    files[value["path"]] = base64.b64decode(value["content"])
            merged = {**self.hub.repos.get(repo_id, {}), **files}
            sha = self.hub.add_repo(repo_id, merged)
            with self.hub._lock:
                self.hub.commits.append({"repo_id": repo_id, "header": header, "files": files})
            self._json({"success": True, "commitOid": sha, "commitUrl": f"{self.hub.url}/{repo_id}/commit/{sha}"})
            return
        self._error("NotFound", f"no route for POST {path}")


def repo_files(folder: Path, repo_id: str, *, manifest: bool = True) -> dict[str, bytes]:
    """A weights folder's files as a Hub repo serves them (with the manifest push writes)."""
    from thead import hub

    files = {n: (folder / n).read_bytes() for n in hub.REQUIRED_FILES}
    if manifest:
        files[hub.MANIFEST_NAME] = hub.manifest_json([hub.make_entry(folder, repo_id)]).encode()
    return files


def closed_port_url() -> str:
    """An endpoint where nothing listens (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def isolate_hf_env(tmp_path: Path, monkeypatch) -> Path:
    """A private HF cache, no offline mode, no THEAD_WEIGHTS or hub timeout from the caller's
    environment: what every Hub test starts from (call it from a fixture)."""
    from huggingface_hub import constants

    from thead import hub

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    # thead's own cache, and the authors' release (the last source of the default weights)
    # at a closed port: no test reaches Google Drive.
    monkeypatch.setenv("THEAD_CACHE", str(tmp_path / "thead-cache"))
    monkeypatch.setenv("THEAD_RELEASE_URL", closed_port_url())
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "THEAD_OFFLINE", hub.WEIGHTS_ENV, hub.TIMEOUT_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return tmp_path
