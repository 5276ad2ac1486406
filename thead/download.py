"""The one downloader: every asset thead fetches (the authors' LSR release and evaluation
subset, VGG19, VGG-Face, LPIPS, Inception, ...) comes through ``fetch``.

- **One cache root**: ``cache_root()`` = ``$THEAD_CACHE``, else ``$XDG_CACHE_HOME/thead``,
  else ``~/.cache/thead``. Downloads land in a subfolder of it; nothing outside it is written
  or deleted (``remove_cached`` refuses, and never follows a symlink).
- **One hash policy**: sha256. A pin is the full hex digest or, where only that is published
  (torch-hub file names), a prefix of it. A file that does not match is deleted before anyone
  reads it. Without a pin the digest is returned so the caller can record it (trust on first
  use, ``thead.release``).
- **One progress display**: ``Display`` (size, rate, time left on stderr; ``quiet_display``
  for tests and scripts).
- **One offline rule**: ``offline()`` is true when ``$THEAD_OFFLINE`` or ``$HF_HUB_OFFLINE``
  is set; then ``fetch`` fails at once, before any network call.

Transfers use gdown (a kept library for Google Drive's confirm page for large files and its
quota page; for any other URL it is a plain HTTP client with resume). A broken transfer keeps
its ``*.part`` file beside the target, and the next ``fetch`` of the same target resumes it
(HTTP ``Range``). Every failure is a ``DownloadError`` with one line that names the manual
route (the caller's ``manual`` text).
"""

from __future__ import annotations

import errno
import hashlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from thead.errors import WeightsError

__all__ = [
    "DownloadError",
    "Display",
    "Fetched",
    "cache_root",
    "offline",
    "fetch",
    "check_sha256",
    "remove_cached",
    "partial_files",
    "stderr_display",
    "quiet_display",
]

OFFLINE_ENVS = ("THEAD_OFFLINE", "HF_HUB_OFFLINE")
TIMEOUT_S = 30.0  # seconds without a byte before a transfer counts as broken


class DownloadError(WeightsError):
    """A download that failed; the message is one line naming the manual route."""


def cache_root() -> Path:
    """``$THEAD_CACHE``, else ``$XDG_CACHE_HOME/thead``, else ``~/.cache/thead``."""
    if env := os.environ.get("THEAD_CACHE"):
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "thead"


def offline() -> bool:
    """Downloads are off (``$THEAD_OFFLINE`` or ``$HF_HUB_OFFLINE`` set to 1/true/yes/on)."""
    return any(os.environ.get(n, "").strip().upper() in {"1", "ON", "YES", "TRUE"} for n in OFFLINE_ENVS)


# ---------------------------------------------------------------------------- display


@dataclass
class Display:
    """What a download shows: ``start(what, url)``, ``progress(done, total)`` after every block,
    ``done(what, size, sha256)``, and one-line ``note``s."""

    start: Callable[[str, str], None]
    progress: Callable[[int, int | None], None]
    done: Callable[[str, int, str], None]
    note: Callable[[str], None]


def quiet_display() -> Display:
    return Display(lambda w, u: None, lambda d, t: None, lambda w, s, h: None, lambda s: None)


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def stderr_display(stream=None) -> Display:
    """Size, rate and time left on one self-updating stderr line (every 5% when not a TTY)."""
    out = stream or sys.stderr
    state = {"t0": 0.0, "shown": -1.0, "first": None, "what": ""}

    def start(what: str, url: str) -> None:
        state.update(t0=time.monotonic(), shown=-1.0, first=None, what=what)
        print(f"downloading {what} from {url}", file=out, flush=True)

    def progress(done: int, total: int | None) -> None:
        now = time.monotonic()
        if state["first"] is None:
            state["first"] = (done, now)
            if total:
                print(f"  size {_mb(total)}", file=out, flush=True)
        d0, t0 = state["first"]
        rate = (done - d0) / max(now - t0, 1e-6)
        frac = done / total if total else 0.0
        tty = out.isatty()
        if tty and now - state["shown"] < 0.2 and done != total:
            return
        if not tty and (frac - state["shown"] < 0.05 and done != total):
            return
        state["shown"] = now if tty else frac
        left = f", {((total - done) / rate):.0f} s left" if total and rate > 0 else ""
        size = f"{_mb(done)} / {_mb(total)} ({100 * frac:.0f}%)" if total else _mb(done)
        line = f"  {size} at {rate / 1e6:.1f} MB/s{left}"
        print(("\r" + line + "   ") if tty else line, file=out, end="" if tty else "\n", flush=True)

    def done(what: str, size: int, sha256: str) -> None:
        if out.isatty():
            print(file=out)
        print(f"  {what}: {_mb(size)}, sha256 {sha256}", file=out, flush=True)

    return Display(start, progress, done, lambda s: print(s, file=out, flush=True))


# ---------------------------------------------------------------------------- hashing


def check_sha256(path: Path, pin: str | None, digest: str | None = None) -> str:
    """The file's sha256; raises ``DownloadError`` when ``pin`` (full or prefix) differs."""
    if digest is None:
        from thead._hash import sha256_file

        digest = sha256_file(path)
    if pin and not digest.startswith(pin.lower()):
        raise DownloadError(f"{path.name} has sha256 {digest[:16]}…, expected {pin[:16]}…")
    return digest


# ---------------------------------------------------------------------------- cache hygiene


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def remove_cached(path: str | os.PathLike, root: str | os.PathLike | None = None) -> None:
    """Delete a file or folder that lies in a cache root (default ``cache_root()``).

    A symlink is removed itself, never what it points to; a path outside the root (after
    resolving its folder) is refused with ``WeightsError``.
    """
    import shutil

    path = Path(path)
    root = Path(root if root is not None else cache_root()).resolve()
    where = path.parent.resolve() / path.name  # resolve the folder, not the last link
    if not _inside(where, root) or where == root:
        raise WeightsError(f"refusing to delete {path}: it is not inside the cache {root}")
    if where.is_symlink() or where.is_file():
        where.unlink(missing_ok=True)
    elif where.is_dir():
        shutil.rmtree(where, ignore_errors=True)


def partial_files(target: Path) -> list[Path]:
    """The resumable leftovers of an earlier broken transfer to ``target``."""
    if not target.parent.is_dir():
        return []
    n = len(target.name) + 8 + len(".part")  # gdown's NamedTemporaryFile names
    return [p for p in target.parent.iterdir() if p.name.startswith(target.name) and p.name.endswith(".part") and len(p.name) == n]


# ---------------------------------------------------------------------------- fetching


@dataclass(frozen=True)
class Fetched:
    path: Path
    url: str
    sha256: str
    size: int


def _looks_like_html(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def fetch(
    url: str,
    target: str | os.PathLike,
    *,
    what: str,
    manual: str,
    sha256: str | None = None,
    display: Display | None = None,
    timeout_s: float = TIMEOUT_S,
) -> Fetched:
    """Download ``url`` to ``target`` (inside the cache root), resuming an earlier partial
    transfer; check ``sha256`` (full or prefix) before the file appears at ``target``.

    ``what``: the asset, for messages. ``manual``: how to get the file by hand (ends every
    error). Raises ``DownloadError``; a broken transfer keeps its partial file for the next
    call, any other failure leaves nothing behind.
    """
    target = Path(target)
    display = display or stderr_display()
    if offline():
        raise DownloadError(f"downloads are off ({' / '.join('$' + n for n in OFFLINE_ENVS)}) and {what} is not cached; {manual}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create {target.parent} ({e.strerror}); {manual}") from None
    import gdown
    import requests
    from gdown.exceptions import DownloadError as GdownDownloadError
    from gdown.exceptions import FileURLRetrievalError

    hasher = hashlib.sha256()
    display.start(what, url)
    tmp = target.with_name(target.name + ".download")  # gdown's own .part files hold partial data
    try:
        gdown.download(
            url, str(tmp), quiet=True, resume=True, use_cookies=False, progress=display.progress,
            hasher=hasher, timeout=(timeout_s, timeout_s),
        )
    except FileURLRetrievalError as e:
        text = " ".join(str(e).split())
        if "too many users" in text.lower() or "quota" in text.lower():
            raise DownloadError(f"Google Drive refuses {what} for now (download quota exceeded; try again in a day); {manual}") from None
        raise DownloadError(f"Google Drive did not hand out {what} (no download link on its page: {text[:160]}); {manual}") from None
    except GdownDownloadError as e:
        text = str(e).splitlines()[0]
        if "incomplete" in text.lower():
            raise DownloadError(
                f"the download of {what} broke off ({text.removesuffix('.')}); run the command again to resume it, or {manual}"
            ) from None
        raise DownloadError(f"the download of {what} failed ({text}); {manual}") from None
    except requests.exceptions.HTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise DownloadError(f"{_host(url)} answered HTTP {status} for {what}; {manual}") from None
    except requests.exceptions.RequestException as e:
        kind = "no answer in time" if isinstance(e, requests.exceptions.Timeout) else "cannot connect"
        raise DownloadError(f"cannot download {what} from {_host(url)} ({kind}); {manual}") from None
    except OSError as e:
        for p in partial_files(tmp):
            p.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise DownloadError(f"disk full while downloading {what} into {target.parent}; free space, then run again, or {manual}") from None
        raise DownloadError(f"cannot write {what} into {target.parent} ({e.strerror or e}); {manual}") from None
    try:
        if _looks_like_html(tmp):
            raise DownloadError(f"{_host(url)} sent a web page instead of {what} (a sign-in, quota or error page); {manual}")
        digest = check_sha256(tmp, sha256, hasher.hexdigest())
    except DownloadError as e:
        tmp.unlink(missing_ok=True)
        if "sha256" in str(e):
            raise DownloadError(f"{e} ({what} from {_host(url)}: corrupt or not the published file; deleted); {manual}") from None
        raise
    os.replace(tmp, target)
    size = target.stat().st_size
    display.done(what, size, digest)
    return Fetched(target, url, digest, size)
