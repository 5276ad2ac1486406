"""The one downloader: every asset thead fetches (the authors' LSR release and evaluation
subset, VGG19, VGG-Face, LPIPS, Inception, ...) comes through ``fetch``.

- **One cache root**: ``cache_root()`` = ``$THEAD_CACHE``, else ``$XDG_CACHE_HOME/thead``,
  else ``~/.cache/thead``. Downloads land in a subfolder of it; nothing outside it is written
  or deleted (``remove_cached`` refuses, and never follows a symlink).
- **One hash policy**: every file is checked before anyone reads it, against the publisher's
  pin when there is one (sha256, full or the prefix torch-hub file names carry; an md5 where
  that is all the publisher gives), else against the sha256 recorded the first time that URL
  was downloaded (trust on first use: ``cache_root()/trust.json``, printed when recorded). A
  file that does not match is deleted and refused.
- **One progress display**: downloads report through ``thead.progress.Progress`` like every
  long-running call; ``StderrDisplay`` (the default) shows size, rate and time left on stderr,
  ``quiet_display`` nothing.
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
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from thead.errors import WeightsError
from thead.progress import SILENT, Progress

__all__ = [
    "DownloadError",
    "StderrDisplay",
    "Fetched",
    "cache_root",
    "offline",
    "fetch",
    "check_sha256",
    "remove_cached",
    "partial_files",
    "stderr_display",
    "quiet_display",
    "Asset",
    "AssetUnavailable",
    "resolve_asset",
    "recorded_sha256",
    "record_sha256",
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


def quiet_display() -> Progress:
    """Shows nothing (tests and scripts): ``thead.progress.SILENT``."""
    return SILENT


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


class StderrDisplay:
    """Downloads as a ``thead.progress.Progress``: each transfer's size, rate and time left on
    one self-updating stderr line (a new line every 5% when not a TTY); notes as plain lines."""

    def __init__(self, stream=None):
        self.out = stream or sys.stderr
        self._reset()

    def _reset(self) -> None:
        self.first: tuple[int, float] | None = None  # (bytes, time) of a transfer's first update
        self.shown, self.open_line = -1.0, False

    def update(self, done: int, total: int | None = None, *, stage: str = "", info: str = "") -> None:
        out, now = self.out, time.monotonic()
        if self.first is None:
            self.first = (done, now)
            if total:
                print(f"  size {_mb(total)}", file=out, flush=True)
        d0, t0 = self.first
        rate = (done - d0) / max(now - t0, 1e-6)
        frac = done / total if total else 0.0
        tty = out.isatty()
        if tty and now - self.shown < 0.2 and done != total:
            return
        if not tty and (frac - self.shown < 0.05 and done != total):
            return
        self.shown = now if tty else frac
        left = f", {((total - done) / rate):.0f} s left" if total and rate > 0 else ""
        size = f"{_mb(done)} / {_mb(total)} ({100 * frac:.0f}%)" if total else _mb(done)
        line = f"  {size} at {rate / 1e6:.1f} MB/s{left}"
        print(("\r" + line + "   ") if tty else line, file=out, end="" if tty else "\n", flush=True)
        self.open_line = tty

    def note(self, text: str) -> None:
        """A line of its own (ending a transfer's self-updating line); the next update starts
        a new transfer's measurement."""
        if self.open_line:
            print(file=self.out)
        print(text, file=self.out, flush=True)
        self._reset()


def stderr_display(stream=None) -> StderrDisplay:
    return StderrDisplay(stream)


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


# ---------------------------------------------------------------------------- trust on first use


def _trust_file() -> Path:
    return cache_root() / "trust.json"


@dataclass(frozen=True)
class TrustRecord:
    """One URL's entry in ``trust.json``: the sha256 of its first download, and when."""

    sha256: str
    first_seen: str


def _read_trust(path: Path) -> dict[str, TrustRecord]:
    """``trust.json`` ({url: {sha256, first_seen}}) strictly; {} when there is none yet. A
    damaged file is a ``DownloadError`` (never read as empty: that would trust anew)."""
    import json

    from thead._schema import decode

    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise DownloadError(f"{path} is not readable ({e}); fix or remove it") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise DownloadError(f"{path} is not valid JSON ({e}); fix or remove it") from None
    return decode(dict[str, TrustRecord], data, error=DownloadError, source=str(path))


def recorded_sha256(url: str) -> str | None:
    """The sha256 recorded at the first download of ``url`` (None: never downloaded)."""
    record = _read_trust(_trust_file()).get(url)
    return record.sha256 if record else None


def record_sha256(url: str, sha256: str) -> None:
    """Remember ``url``'s sha256 (first download only; a later one must match it)."""
    import datetime as dt
    import json
    from dataclasses import asdict

    from thead._atomic import atomic_file

    path = _trust_file()
    data = _read_trust(path)
    if url in data:
        return
    data[url] = TrustRecord(sha256, dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat())
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({u: asdict(r) for u, r in data.items()}, indent=2, sort_keys=True) + "\n")


def check_recorded(url: str, sha256: str, what: str, manual: str) -> bool:
    """False when ``url`` was never recorded; True when it matches; ``DownloadError`` else."""
    expected = recorded_sha256(url)
    if expected is None:
        return False
    if sha256 != expected:
        raise DownloadError(
            f"{url} now serves a different {what} (sha256 {sha256[:16]}…, recorded at the first download: {expected[:16]}…); "
            f"refused. If the publisher replaced it on purpose, remove its entry from {_trust_file()}; {manual}"
        )
    return True


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
    md5: str | None = None,
    display: Progress | None = None,
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
    display.note(f"downloading {what} from {url}")
    tmp = target.with_name(target.name + ".download")  # gdown's own .part files hold partial data
    try:
        gdown.download(
            url, str(tmp), quiet=True, resume=True, use_cookies=False, progress=lambda done, total: display.update(done, total, stage=what),
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
        if md5 is not None:
            actual = hashlib.md5(tmp.read_bytes()).hexdigest() if tmp.stat().st_size < 1 << 31 else _md5_file(tmp)
            if actual != md5:
                raise DownloadError(f"{tmp.name} has md5 {actual}, expected {md5}")
    except DownloadError as e:
        tmp.unlink(missing_ok=True)
        if "sha256" in str(e) or "md5" in str(e):
            raise DownloadError(f"{e} ({what} from {_host(url)}: corrupt or not the published file; deleted); {manual}") from None
        raise
    os.replace(tmp, target)
    size = target.stat().st_size
    display.note(f"  {what}: {_mb(size)}, sha256 {digest}")
    return Fetched(target, url, digest, size)


def _md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------- assets


@dataclass(frozen=True)
class Asset:
    """One published file thead may download: where from (mirrors in order), its pin, and
    where it is cached (``cache_root()/subdir/filename``).

    sha256: the full hex digest, or a prefix where only that is published (torch-hub names);
    md5: where the publisher gives only that; neither: trust on first use.
    """

    name: str
    filename: str
    urls: tuple[str, ...]
    sha256: str | None = None
    md5: str | None = None
    subdir: str = "assets"

    def cached_path(self, cache_dir: str | os.PathLike | None = None) -> Path:
        return Path(cache_dir if cache_dir is not None else cache_root() / self.subdir) / self.filename

    def manual(self, target: Path) -> str:
        source = self.urls[0] if self.urls else "its publisher"
        return f"download {source} yourself and put {self.filename} at {target}"


class AssetUnavailable(DownloadError):
    """An asset that is neither cached nor downloadable (downloads off, publisher unreachable)."""


def check_asset(asset: Asset, path: Path) -> None:
    """The asset's pin, else the sha256 recorded at its first download (``WeightsError``)."""
    from thead._hash import sha256_file

    digest = sha256_file(path)
    if asset.sha256 and not digest.startswith(asset.sha256.lower()):
        raise WeightsError(f"{path} has sha256 {digest[:16]}…, {asset.name} must start with {asset.sha256[:16]}…")
    if asset.md5 and _md5_file(path) != asset.md5:
        raise WeightsError(f"{path} has md5 {_md5_file(path)}, {asset.name} must have {asset.md5}")
    if not (asset.sha256 or asset.md5) and path.is_relative_to(cache_root()):
        for url in asset.urls:
            if (expected := recorded_sha256(url)) is not None and expected != digest:
                raise WeightsError(f"{path} has sha256 {digest[:16]}…, recorded for {asset.name} at its download: {expected[:16]}…")


def resolve_asset(
    asset: Asset,
    *,
    cache_dir: str | os.PathLike | None = None,
    also: tuple[Path, ...] = (),
    allow_download: bool = True,
    display: Progress | None = None,
) -> Path:
    """A local, checked copy of ``asset``: in the cache (or one of ``also``, other programs'
    caches), else downloaded into the cache from its first reachable mirror."""
    target = asset.cached_path(cache_dir)
    for path in (target, *also):
        if path.is_file():
            check_asset(asset, path)
            return path
    manual = asset.manual(target)
    if not allow_download:
        raise AssetUnavailable(f"{asset.name} weights not found and downloads are disabled; {manual}")
    if offline():
        raise AssetUnavailable(f"downloads are off ({' / '.join('$' + n for n in OFFLINE_ENVS)}) and {asset.name} is not cached; {manual}")
    failures = []
    for url in asset.urls:
        try:
            got = fetch(url, target, what=asset.name, manual=manual, sha256=asset.sha256, md5=asset.md5, display=display)
        except DownloadError as e:
            if "sha256" in str(e) or "md5" in str(e) or "different" in str(e):
                raise
            failures.append(str(e).split(";")[0])
            continue
        if not (asset.sha256 or asset.md5):
            try:
                check_recorded(url, got.sha256, asset.name, manual)
            except DownloadError:
                remove_cached(target)
                raise
            record_sha256(url, got.sha256)
        return got.path
    raise AssetUnavailable(f"{asset.name} could not be downloaded ({failures[0] if failures else 'no mirror'}); {manual}")
