"""A stand-in for Google Drive on 127.0.0.1, for tests: it replays Drive's answers to gdown.

gdown handles Drive's quirks only for ``drive.google.com`` URLs, and always over https, so the
server is also an HTTPS proxy: a client configured with ``HTTPS_PROXY=http://127.0.0.1:PORT``
and ``REQUESTS_CA_BUNDLE=<cert>`` (``env()``) sends ``CONNECT drive.google.com:443`` here; the
tunnel is answered with a self-signed certificate for Drive's two hosts (made with the
``openssl`` command) and the requests inside it are served from ``files``. Nothing leaves the
machine. Plain ``http://127.0.0.1:PORT/files/<name>`` URLs serve the same files without Drive's
pages (for ``$THEAD_RELEASE_URL`` pointing at an ordinary web server).

What Drive does, as replayed (the flow of 2024-2026 Drive, the one gdown parses):

- ``/uc?id=ID`` -> 303 to ``drive.usercontent.google.com/download?id=ID&export=download``;
- a file marked ``large`` first answers an HTML warning page ("can't scan this file for
  viruses") whose ``#download-form`` carries ``confirm`` and ``uuid``; with them, the bytes;
- ``quota``: the "Too many users have viewed or downloaded this file recently" page;
- the bytes come with ``Content-Disposition``, ``Content-Length``, an ``ETag``, and honour
  ``Range`` (206); ``cut_once`` sends the headers of the whole file but closes the connection
  halfway through the first transfer of it.

``/api/models/...`` answers 404 ``RepoNotFound`` (a Hub that has never heard of the repo), so
the server can also be ``HF_ENDPOINT``.
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

HOSTS = ("drive.google.com", "drive.usercontent.google.com")

WARNING_PAGE = (
    '<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>'
    '<div class="uc-main"><div id="uc-text"><p class="uc-warning-caption">Google Drive can\'t scan this file for viruses.</p>'
    '<p class="uc-warning-subcaption"><span class="uc-name-size"><a href="/open?id={id}">{name}</a> ({size})</span> is too large '
    'for Google to scan for viruses. Would you still like to download this file?</p>'
    '<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
    '<input type="submit" id="uc-download-link" class="goog-inline-block jfk-button jfk-button-action" value="Download anyway"/>'
    '<input type="hidden" name="id" value="{id}"><input type="hidden" name="export" value="download">'
    '<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="{uuid}"></form></div></div></body></html>'
)
QUOTA_PAGE = (
    '<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body><div class="uc-main">'
    '<div id="uc-text"><p class="uc-error-caption">Sorry, you can\'t view or download this file at this time.</p>'
    '<p class="uc-error-subcaption">Too many users have viewed or downloaded this file recently. Please try accessing the file '
    'again later. If the file you are trying to access is particularly large or is shared with many people, it may take up '
    'to 24 hours to be able to view or download the file. If you still can\'t access a file after 24 hours, contact your '
    'domain administrator.</p></div></div></body></html>'
)


@dataclass
class DriveFile:
    name: str
    data: bytes
    large: bool = True  # behind the virus-scan confirm page
    quota: bool = False  # answer the quota page instead
    cut_once: bool = False  # the first full transfer breaks off halfway
    html_instead: bool = False  # a plain URL answers a web page (a sign-in page) with 200


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for Drive's hosts (the client's CA bundle) and its key."""
    cert, key = folder / "drive-cert.pem", folder / "drive-key.pem"
    san = ",".join(f"DNS:{h}" for h in HOSTS)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={HOSTS[0]}",
         "-addext", f"subjectAltName={san}", "-addext", "basicConstraints=critical,CA:TRUE",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


class FakeDrive:
    def __init__(self, folder: Path, lifetime_s: float = 120.0):
        self.files: dict[str, DriveFile] = {}  # by file id (Drive) = name (plain URLs)
        self.requests: list[tuple[str, str, str | None]] = []  # (host, path, Range header)
        self.cert, key = make_certificate(folder)
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(self.cert, key)
        self._cut_done: set[str] = set()
        self._lock = threading.Lock()
        self.lifetime_s = lifetime_s
        self._server: ThreadingHTTPServer | None = None

    def add(self, file_id: str, name: str, data: bytes, **kind) -> str:
        self.files[file_id] = DriveFile(name, data, **kind)
        return f"https://drive.google.com/uc?id={file_id}"

    def plain_url(self, file_id: str) -> str:
        return f"http://127.0.0.1:{self.port}/files/{file_id}"

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def env(self) -> dict[str, str]:
        """What a client needs to reach this Drive (and nothing else)."""
        proxy = f"http://127.0.0.1:{self.port}"
        return {
            "HTTPS_PROXY": proxy, "https_proxy": proxy, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
            "REQUESTS_CA_BUNDLE": str(self.cert), "HF_ENDPOINT": proxy,
        }

    # -- serving ------------------------------------------------------------------------
    def __enter__(self) -> FakeDrive:
        drive = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            host = "127.0.0.1"
            tunnelled = False

            def setup(self):
                super().setup()
                self.connection.settimeout(5)

            def log_message(self, *args):
                pass

            def do_CONNECT(self):
                host = self.path.split(":")[0]
                if host not in HOSTS:
                    self.send_error(502, "only Drive's hosts are faked")
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                self.wfile.flush()
                try:
                    tls = drive._tls.wrap_socket(self.connection, server_side=True)
                except (ssl.SSLError, OSError):
                    self.close_connection = True
                    return
                inner = type("Tunnel", (Handler,), {"host": host, "tunnelled": True})
                try:
                    inner(tls, self.client_address, self.server)
                except (OSError, ssl.SSLError):
                    pass
                self.close_connection = True

            def do_HEAD(self):
                self.do_GET(head=True)

            def do_GET(self, head=False):
                url = urlsplit(self.path)
                host = self.headers.get("Host", self.host).split(":")[0] if self.tunnelled else "127.0.0.1"
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                with drive._lock:
                    drive.requests.append((host, url.path, self.headers.get("Range")))
                if url.path.startswith("/api/"):
                    return self._answer(404, b'{"error":"Repository not found"}', "application/json", {"X-Error-Code": "RepoNotFound"})
                if host == "drive.google.com" and url.path == "/uc" and "id" in query:
                    loc = f"https://drive.usercontent.google.com/download?id={query['id']}&export=download"
                    return self._answer(303, b"", "text/html", {"Location": loc})
                if host == "drive.usercontent.google.com" and url.path == "/download":
                    f = drive.files.get(query.get("id", ""))
                    if f is None:
                        return self._answer(404, b"<html><body>Not Found</body></html>", "text/html; charset=utf-8")
                    if f.quota:
                        return self._answer(200, QUOTA_PAGE.encode(), "text/html; charset=utf-8")
                    if f.large and query.get("confirm") != "t":
                        page = WARNING_PAGE.format(id=query["id"], name=f.name, size=f"{len(f.data) / 1e6:.1f}M", uuid="0f1e2d3c")
                        return self._answer(200, page.encode(), "text/html; charset=utf-8")
                    return self._bytes(query["id"], f, head)
                m = re.fullmatch(r"/files/([\w.-]+)", url.path)
                if host == "127.0.0.1" and m and m[1] in drive.files:
                    f = drive.files[m[1]]
                    if f.html_instead:
                        return self._answer(200, b"<!DOCTYPE html><html><body>Sign in</body></html>", "text/html")
                    return self._bytes(m[1], f, head)
                self._answer(404, b"not found", "text/plain")

            def _answer(self, status, body, ctype, headers=None, head=False):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _bytes(self, key, f: DriveFile, head):
                data, etag = f.data, '"' + hashlib.sha1(f.data).hexdigest() + '"'
                headers = {"Content-Disposition": f'attachment; filename="{f.name}"', "ETag": etag, "Accept-Ranges": "bytes"}
                rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if rng:
                    start = int(rng[1])
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                    return self._answer(206, data[start:], "application/octet-stream", headers, head)
                with drive._lock:
                    cut = f.cut_once and key not in drive._cut_done and not head
                    if cut:
                        drive._cut_done.add(key)
                if not cut:
                    return self._answer(200, data, "application/octet-stream", headers, head)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.timeout = 0.1
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        self._timer = threading.Timer(self.lifetime_s, self._server.shutdown)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._timer.cancel()
            self._server.shutdown()
            self._server.server_close()
