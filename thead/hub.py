"""Weights from the Hugging Face Hub: resolve, download, verify, publish.

A weights folder holds ``config.json`` + ``model.safetensors`` (``LSR.save_pretrained``), and on
the Hub also ``manifest.json`` (sha256 and size of every file, name, provenance) and a model
card ``README.md``. ``resolve_weights`` turns what the user gave (``--weights``,
``$THEAD_WEIGHTS``, or nothing) into such a folder:

- a local folder is used as it is;
- a repo id (``owner/name``, optionally ``owner/name@revision``) is downloaded with
  ``huggingface_hub`` into its standard cache, then every file's sha256 is checked against
  thead's own pins (``weights/manifest.json``) when it has them for that repo, else against
  the repo's ``manifest.json``; a mismatch deletes the bad cached file and raises ``HubError``.

Network behaviour. ``huggingface_hub`` retries an unreachable Hub for ~23 s (and minutes when
a server accepts connections but never answers; environment-notes §"Read this first"), so one
short probe (``GET /api/models/<repo>/revision/<rev>``, no retries, ``$THEAD_HUB_TIMEOUT``
seconds, default 5) runs first. If it fails, a cached copy is used; otherwise ``HubError``
says so in one line and names the alternatives. ``HF_HUB_OFFLINE=1`` skips the network.
``HF_ENDPOINT``, ``HF_HUB_CACHE``/``HF_HOME`` and ``HF_HUB_OFFLINE`` are read when called, not
when ``huggingface_hub`` was imported, so they work whatever was imported first.
"""

from __future__ import annotations

import json
import os
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from thead._hash import sha256_file
from thead.errors import HubError, WeightsError

__all__ = [
    "DEFAULT_REPO_ID",
    "FilePin",
    "WeightsEntry",
    "WeightsSummary",
    "PushResult",
    "manifest_json",
    "resolve_weights",
    "download_weights",
    "push_weights",
    "known_weights",
    "known_entry",
    "read_manifest",
    "write_manifest",
    "make_entry",
    "render_model_card",
    "summarize_weights",
    "verify_files",
    "file_sha256",
]

#: The one place thead's default weights are named.
DEFAULT_REPO_ID = "thead-models/lsr-voxceleb2"
WEIGHTS_ENV = "THEAD_WEIGHTS"
TIMEOUT_ENV = "THEAD_HUB_TIMEOUT"
DEFAULT_TIMEOUT_S = 5.0

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MANIFEST_NAME = "manifest.json"
CARD_NAME = "README.md"
REQUIRED_FILES = (CONFIG_NAME, WEIGHTS_NAME)
MANIFEST_FORMAT = 1

#: thead's own manifest and model card template (in a source checkout; not in a wheel).
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"

ALTERNATIVES = (
    "pass --weights PATH (a folder with config.json + model.safetensors), "
    "or make one with `thead weights convert <authors' checkpoint> -o DIR`"
)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ------------------------------------------------------------------------------ manifests


@dataclass(frozen=True)
class FilePin:
    """One file of a weights folder: its name, sha256 (hex; None = not pinned yet), bytes."""

    name: str
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class WeightsEntry:
    """A known set of weights: where it lives and what its files must hash to.

    ``revision``: a pinned commit or tag (None = the repo's default branch). ``files``: the
    pins; an entry whose pins are None is verified against the repo's own ``manifest.json``.
    """

    name: str
    repo_id: str
    revision: str | None = None
    description: str = ""
    provenance: str = ""
    license: str = ""
    source_url: str = ""
    files: tuple[FilePin, ...] = field(default_factory=tuple)
    archive_sha256: str | None = None  # the authors' release archive at source_url, once pinned

    @property
    def pinned(self) -> bool:
        return bool(self.files) and all(f.sha256 for f in self.files)

    def pin(self, name: str) -> FilePin | None:
        return next((f for f in self.files if f.name == name), None)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "description": self.description,
            "provenance": self.provenance,
            "license": self.license,
            "source_url": self.source_url,
            "files": {f.name: {"sha256": f.sha256, "size": f.size} for f in self.files},
            "archive_sha256": self.archive_sha256,
        }

    @classmethod
    def from_dict(cls, d: dict, *, source: str) -> WeightsEntry:
        known = {"name", "repo_id", "revision", "description", "provenance", "license", "source_url", "files", "archive_sha256"}
        unknown = sorted(set(d) - known)
        if unknown or "name" not in d or "repo_id" not in d:
            raise WeightsError(f"{source}: malformed weights entry (unknown keys {unknown} or no name/repo_id)")
        files = d.get("files") or {}
        if not isinstance(files, dict):
            raise WeightsError(f"{source}: 'files' must map file names to {{sha256, size}}")
        pins = []
        for name, pin in sorted(files.items()):
            sha = (pin or {}).get("sha256")
            if sha is not None and not re.fullmatch(r"[0-9a-f]{64}", sha):
                raise WeightsError(f"{source}: {name} has a malformed sha256 {sha!r}")
            pins.append(FilePin(name, sha, (pin or {}).get("size")))
        archive = d.get("archive_sha256")
        if archive is not None and not re.fullmatch(r"[0-9a-f]{64}", archive):
            raise WeightsError(f"{source}: archive_sha256 is malformed ({archive!r})")
        return cls(
            name=d["name"],
            repo_id=d["repo_id"],
            revision=d.get("revision"),
            description=d.get("description", ""),
            provenance=d.get("provenance", ""),
            license=d.get("license", ""),
            source_url=d.get("source_url", ""),
            files=tuple(pins),
            archive_sha256=archive,
        )


def read_manifest(path: str | os.PathLike) -> list[WeightsEntry]:
    """The entries of a manifest file (thead's list, or a repo's single-entry one)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise WeightsError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format_version") != MANIFEST_FORMAT:
        raise WeightsError(f"{path}: expected a manifest with format_version {MANIFEST_FORMAT}")
    return [WeightsEntry.from_dict(e, source=str(path)) for e in data.get("weights", [])]


def manifest_json(entries: Iterable[WeightsEntry]) -> str:
    body = {"format_version": MANIFEST_FORMAT, "weights": [e.to_dict() for e in entries]}
    return json.dumps(body, indent=2, sort_keys=False) + "\n"


def write_manifest(path: str | os.PathLike, entries: Iterable[WeightsEntry]) -> Path:
    """Write a manifest atomically."""
    from thead._atomic import atomic_file

    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(manifest_json(entries))
    return path


def known_weights() -> list[WeightsEntry]:
    """thead's manifest of known weights (empty when running from a wheel without it)."""
    path = WEIGHTS_DIR / MANIFEST_NAME
    return read_manifest(path) if path.is_file() else []


def known_entry(repo_id: str) -> WeightsEntry | None:
    return next((e for e in known_weights() if e.repo_id == repo_id), None)


# --------------------------------------------------------------------------------- hashing

_HASHES: dict[tuple, str] = {}


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 (hex) of a file; remembered per (path, size, mtime) within the process."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path, chunk)
    return _HASHES[key]


def verify_files(folder: Path, pins: Iterable[FilePin], *, source: str, delete_bad: bool = False) -> None:
    """Check each pinned file of ``folder``; on a mismatch optionally delete it (and, in the
    Hub cache, the blob the snapshot links to) and raise ``HubError``."""
    for pin in pins:
        if pin.sha256 is None:
            continue
        path = folder / pin.name
        if not path.exists():
            raise HubError(f"{source}: {pin.name} is missing from {folder}")
        actual = file_sha256(path)
        if actual != pin.sha256:
            note = ""
            if delete_bad:
                _delete_cached(path)
                note = "; the bad copy was deleted, run again to download it afresh"
            raise HubError(
                f"{source}: sha256 mismatch for {pin.name} (expected {pin.sha256[:12]}…, got {actual[:12]}…){note}"
            )


def _delete_cached(path: Path) -> None:
    """Remove a bad file of a Hub snapshot: the snapshot's link and, when it is a blob inside
    the Hub cache, the blob (else a re-download would reuse it). Nothing outside the Hub cache
    is deleted, whatever the link points to."""
    from thead.download import remove_cached

    cache = Path(_cache_dir()).resolve()
    target = path.resolve()
    if path.is_symlink() and target.is_file() and target.is_relative_to(cache):
        remove_cached(target, cache)
    if path.parent.resolve().is_relative_to(cache):
        remove_cached(path, cache)


# -------------------------------------------------------------------------- environment


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _cache_dir() -> str:
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return constants.HF_HUB_CACHE


def _offline() -> bool:
    from huggingface_hub import constants

    return _env_true("HF_HUB_OFFLINE") or _env_true("THEAD_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE") or constants.HF_HUB_OFFLINE


def _timeout_s(timeout_s: float | None) -> float:
    if timeout_s is not None:
        return float(timeout_s)
    value = os.environ.get(TIMEOUT_ENV)
    if value:
        try:
            return float(value)
        except ValueError:
            raise WeightsError(f"${TIMEOUT_ENV} must be a number of seconds, got {value!r}") from None
    return DEFAULT_TIMEOUT_S


# ------------------------------------------------------------------------------ resolving


def _parse_spec(spec: str | os.PathLike | None, revision: str | None) -> tuple[Path | None, str, str | None]:
    """(local folder, or None and a repo id + revision)."""
    if spec is None or str(spec).strip() == "":
        spec = os.environ.get(WEIGHTS_ENV) or DEFAULT_REPO_ID
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        return path, "", None
    if path.exists():
        raise WeightsError(f"{path} is a file; weights are a folder with {CONFIG_NAME} + {WEIGHTS_NAME}")
    repo_id, _, at_revision = text.partition("@")
    if isinstance(spec, Path) or not _REPO_ID.match(repo_id) or text.startswith((".", "/", "~")):
        raise WeightsError(f"weights folder {text} does not exist (and it is not a Hub repo id like owner/name)")
    if at_revision and revision and at_revision != revision:
        raise WeightsError(f"{text} names revision {at_revision} but --revision says {revision}")
    return None, repo_id, revision or at_revision or None


def resolve_weights(
    spec: str | os.PathLike | None = None,
    *,
    revision: str | None = None,
    timeout_s: float | None = None,
    keep_archive: bool = False,
    display=None,
) -> Path:
    """A folder with ``config.json`` + ``model.safetensors`` for ``spec``.

    ``spec``: a local folder (used as it is), a Hub repo id (``owner/name[@revision]``), or
    None for ``$THEAD_WEIGHTS``, else thead's default model (``default_weights``).
    ``timeout_s``: how long the Hub may take to answer the first request (default
    ``$THEAD_HUB_TIMEOUT`` or 5 s). Raises ``WeightsError`` (bad folder) or ``HubError``
    (unreachable, not found, hash mismatch) or ``DownloadError`` (the authors' release).
    """
    if (spec is None or str(spec).strip() == "") and not os.environ.get(WEIGHTS_ENV) and revision is None:
        return default_weights(timeout_s=timeout_s, keep_archive=keep_archive, display=display)
    folder, repo_id, revision = _parse_spec(spec, revision)
    if folder is not None:
        missing = [n for n in REQUIRED_FILES if not (folder / n).is_file()]
        if missing:
            raise WeightsError(f"{folder} has no {' or '.join(missing)} (expected a thead weights folder)")
        return folder
    return download_weights(repo_id, revision=revision, timeout_s=timeout_s)


def default_weights(*, timeout_s: float | None = None, keep_archive: bool = False, display=None) -> Path:
    """thead's default model, from the first source that has it: the converted authors'
    release in thead's cache; ``DEFAULT_REPO_ID`` in the Hub cache; the Hub (one quick probe;
    "not found" or no answer moves on at once); the authors' release on Google Drive,
    downloaded and converted (``thead.release``)."""
    from thead import release

    cached = release.cached_release_weights()
    if cached is not None:
        return cached
    entry = known_entry(DEFAULT_REPO_ID)
    revision = (entry.revision if entry else None) or "main"
    label = f"{DEFAULT_REPO_ID}@{revision}"
    folder = _from_cache(DEFAULT_REPO_ID, revision)
    if folder is not None:
        _verify(folder, entry, label)
        return folder
    if not _offline():
        try:
            problem = _probe(DEFAULT_REPO_ID, revision, _timeout_s(timeout_s))
        except HubError:
            problem = "not published"
        if problem is None:
            return download_weights(DEFAULT_REPO_ID, revision=revision, timeout_s=timeout_s)
    return release.release_weights(keep_archive=keep_archive, display=display)


def download_weights(repo_id: str, *, revision: str | None = None, timeout_s: float | None = None) -> Path:
    """Fetch (or find in the cache) ``repo_id``'s weights, verified; returns the snapshot folder."""
    entry = known_entry(repo_id)
    revision = revision or (entry.revision if entry else None) or "main"
    label = f"{repo_id}@{revision}"
    timeout = _timeout_s(timeout_s)
    if _offline():
        folder = _from_cache(repo_id, revision)
        if folder is None:
            raise HubError(f"HF_HUB_OFFLINE is set and {label} is not in the cache ({_cache_dir()}); {ALTERNATIVES}")
    else:
        problem = _probe(repo_id, revision, timeout)
        if problem is None:
            folder = _download(repo_id, revision, timeout, label)
        else:
            folder = _from_cache(repo_id, revision)
            if folder is None:
                raise HubError(f"cannot reach the Hub at {_endpoint()} ({problem}) and {label} is not cached; {ALTERNATIVES}")
    _verify(folder, entry, label)
    return folder


def _hub_call_error(e: Exception, label: str) -> str | None:
    """A one-line reason for a failed Hub call, or None when it is a network failure (the
    caller then falls back to the cache)."""
    import httpx2
    from huggingface_hub import errors

    if isinstance(e, errors.RevisionNotFoundError):
        return f"{label}: the repo has no such revision"
    if isinstance(e, errors.GatedRepoError):
        return f"{label} is gated: accept its terms on the Hub and log in (`hf auth login`)"
    if isinstance(e, errors.RepositoryNotFoundError):
        repo = label.split("@")[0]
        return f"{repo} is neither a local folder nor a repo on {_endpoint()} (if it is private, log in with `hf auth login`)"
    if isinstance(e, errors.RemoteEntryNotFoundError):
        return f"{label}: a required file is missing from the repo ({_first_line(e)})"
    if isinstance(e, (httpx2.TransportError, errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)):
        return None
    if isinstance(e, errors.HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status is not None and status >= 500:
            return None
        return f"{label}: the Hub answered HTTP {status} ({_first_line(e)})"
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _network_reason(e: BaseException) -> str:
    import httpx2

    if isinstance(e, httpx2.TimeoutException):
        return "no answer within the timeout"
    if isinstance(e, httpx2.ConnectError):
        return f"connection failed: {_first_line(e)}"
    return _first_line(e)


def _probe(repo_id: str, revision: str, timeout: float) -> str | None:
    """One quick request, no retries: None when the Hub answers, else why not (network).
    Answers that settle the matter (no such repo or revision) raise ``HubError`` at once."""
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=_endpoint()).model_info(repo_id, revision=revision, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - sorted into "final answer" vs "network" below
        reason = _hub_call_error(e, f"{repo_id}@{revision}")
        if reason is not None:
            raise HubError(f"{reason}; {ALTERNATIVES}") from None
        return _network_reason(e)
    names = {s.rfilename for s in (info.siblings or [])}
    missing = [n for n in REQUIRED_FILES if n not in names]
    if info.siblings is not None and missing:
        raise HubError(f"{repo_id}@{revision} has no {' or '.join(missing)}; it is not a thead weights repo")
    return None


def _download(repo_id: str, revision: str, timeout: float, label: str) -> Path:
    from huggingface_hub import hf_hub_download

    folder = None
    for name in (*REQUIRED_FILES, MANIFEST_NAME):
        try:
            path = hf_hub_download(
                repo_id,
                name,
                revision=revision,
                cache_dir=_cache_dir(),
                endpoint=_endpoint(),
                etag_timeout=timeout,
            )
        except Exception as e:  # noqa: BLE001
            from huggingface_hub import errors

            if name == MANIFEST_NAME and isinstance(e, errors.RemoteEntryNotFoundError):
                continue  # verified against thead's pins instead, or refused in _verify
            reason = _hub_call_error(e, label)
            if reason is None:
                reason = f"{label}: the download of {name} failed ({_network_reason(e)})"
            raise HubError(reason) from None
        folder = Path(path).parent
    assert folder is not None
    return folder


def _from_cache(repo_id: str, revision: str) -> Path | None:
    from huggingface_hub import hf_hub_download

    folder = None
    for name in REQUIRED_FILES:
        try:
            path = hf_hub_download(repo_id, name, revision=revision, cache_dir=_cache_dir(), local_files_only=True)
        except Exception:  # noqa: BLE001 - any failure here means "not cached"
            return None
        folder = Path(path).parent
    return folder


def _verify(folder: Path, entry: WeightsEntry | None, label: str) -> None:
    """Pins from thead's manifest when it has them for this repo, else the repo's manifest."""
    if entry is not None and entry.pinned:
        pins, source = entry.files, f"{label} (pinned in thead's weights/manifest.json)"
    else:
        manifest = folder / MANIFEST_NAME
        if not manifest.is_file():
            raise HubError(
                f"{label} has no {MANIFEST_NAME}, so its files cannot be verified; {ALTERNATIVES}"
            )
        try:
            entries = read_manifest(manifest)
        except WeightsError as e:
            raise HubError(f"{label}: its {MANIFEST_NAME} is unusable ({e})") from None
        if len(entries) != 1 or not entries[0].pinned:
            raise HubError(f"{label}: its {MANIFEST_NAME} must hold one entry with a sha256 for every file")
        pins, source = entries[0].files, label
    listed = {p.name for p in pins}
    unlisted = [n for n in REQUIRED_FILES if n not in listed]
    if unlisted:
        raise HubError(f"{label}: the manifest has no sha256 for {', '.join(unlisted)}")
    verify_files(folder, [p for p in pins if p.name in REQUIRED_FILES], source=source, delete_bad=True)


# ------------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class WeightsSummary:
    """What ``thead weights info`` shows: the config (as stored), tensors and parameters per
    network (from the safetensors header, no model built), the files' pins, and the manifest
    entry that describes them (None when unknown)."""

    folder: Path
    config: dict
    networks: tuple[tuple[str, int, int], ...]
    files: tuple[FilePin, ...]
    entry: WeightsEntry | None

    @property
    def total_parameters(self) -> int:
        return sum(n[2] for n in self.networks)


def summarize_weights(folder: str | os.PathLike) -> WeightsSummary:
    """Read a weights folder without building the model (``WeightsError`` when unreadable)."""
    from safetensors import safe_open

    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except FileNotFoundError:
        raise WeightsError(f"{folder} has no {CONFIG_NAME}") from None
    except json.JSONDecodeError as e:
        raise WeightsError(f"{folder / CONFIG_NAME} is not valid JSON ({e})") from None
    counts: dict[str, list[int]] = {}
    try:
        with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as f:
            for key in f.keys():
                numel = 1
                for d in f.get_slice(key).get_shape():
                    numel *= d
                c = counts.setdefault(key.split(".", 1)[0], [0, 0])
                c[0] += 1
                c[1] += numel
    except FileNotFoundError:
        raise WeightsError(f"{folder} has no {WEIGHTS_NAME}") from None
    except Exception as e:  # noqa: BLE001 - safetensors raises its own types on corrupt headers
        raise WeightsError(f"{folder / WEIGHTS_NAME} is not a readable safetensors file ({_first_line(e)})") from None
    files = tuple(FilePin(n, file_sha256(folder / n), (folder / n).stat().st_size) for n in REQUIRED_FILES)
    return WeightsSummary(
        folder=folder,
        config=config,
        networks=tuple((name, c[0], c[1]) for name, c in counts.items()),
        files=files,
        entry=_describing_entry(folder, files),
    )


def _describing_entry(folder: Path, files: tuple[FilePin, ...]) -> WeightsEntry | None:
    """The folder's own manifest (a Hub snapshot), else a known entry with the same hashes."""
    if (folder / MANIFEST_NAME).is_file():
        entries = read_manifest(folder / MANIFEST_NAME)
        if entries:
            return entries[0]
    digest = {f.name: f.sha256 for f in files}
    for entry in known_weights():
        if entry.pinned and all(digest.get(p.name) == p.sha256 for p in entry.files if p.name in digest):
            return entry
    return None


# ------------------------------------------------------------------------------- publish


def make_entry(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    name: str | None = None,
    provenance: str | None = None,
    description: str | None = None,
) -> WeightsEntry:
    """The manifest entry for a local weights folder (hashes and sizes of its files).

    Name, provenance, licence and source default to thead's known entry for ``repo_id``.
    """
    folder = Path(folder)
    missing = [n for n in REQUIRED_FILES if not (folder / n).is_file()]
    if missing:
        raise WeightsError(f"{folder} has no {' or '.join(missing)} (expected a thead weights folder)")
    base = known_entry(repo_id) or WeightsEntry(
        name=repo_id.split("/")[-1],
        repo_id=repo_id,
        provenance="converted with `thead weights convert` or trained with thead",
    )
    files = tuple(FilePin(n, file_sha256(folder / n), (folder / n).stat().st_size) for n in REQUIRED_FILES)
    return replace(
        base,
        name=name or base.name,
        repo_id=repo_id,
        revision=None,
        provenance=provenance or base.provenance,
        description=description or base.description,
        files=files,
    )


def render_model_card(entry: WeightsEntry, summary: WeightsSummary, template: str | os.PathLike | None = None) -> str:
    """Fill ``weights/MODEL_CARD.md`` (``string.Template`` ``$fields``) for ``entry``."""
    import thead

    path = Path(template) if template is not None else WEIGHTS_DIR / "MODEL_CARD.md"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise WeightsError(f"model card template {path} not found (push from a thead source checkout)") from None
    files = "\n".join(f"| `{f.name}` | {f.size:,} | `{f.sha256}` |" for f in entry.files)
    networks = "\n".join(f"| {n} | {t} | {p:,} |" for n, t, p in summary.networks)
    fields = {
        "name": entry.name,
        "repo_id": entry.repo_id,
        "description": entry.description or "LSR talking-head weights for thead.",
        "provenance": entry.provenance or "unknown",
        "license": entry.license or "apache-2.0",
        "license_id": (entry.license or "apache-2.0").lower(),
        "source_url": entry.source_url or "-",
        "files_table": files,
        "networks_table": networks,
        "total_parameters": f"{summary.total_parameters:,}",
        "config_json": json.dumps(summary.config, indent=2, sort_keys=True),
        "thead_version": thead.__version__,
    }
    try:
        return string.Template(text).substitute(fields)
    except (KeyError, ValueError) as e:
        raise WeightsError(f"model card template {path} has an unknown or malformed field ({e})") from None


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    commit_url: str
    entry: WeightsEntry


def push_weights(
    folder: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    *,
    private: bool = False,
    name: str | None = None,
    provenance: str | None = None,
    template: str | os.PathLike | None = None,
) -> PushResult:
    """Upload ``config.json``, ``model.safetensors``, a ``manifest.json`` and a model card to
    ``repo_id`` in one commit (creating the repo if needed). ``token``: a Hub token with write
    access (default: ``$HF_TOKEN`` or the one saved by ``hf auth login``)."""
    from huggingface_hub import CommitOperationAdd, HfApi

    if not _REPO_ID.match(repo_id):
        raise WeightsError(f"{repo_id!r} is not a Hub repo id (owner/name)")
    folder = Path(folder)
    entry = make_entry(folder, repo_id, name=name, provenance=provenance)
    card = render_model_card(entry, summarize_weights(folder), template)
    operations = [
        CommitOperationAdd(path_in_repo=CONFIG_NAME, path_or_fileobj=str(folder / CONFIG_NAME)),
        CommitOperationAdd(path_in_repo=WEIGHTS_NAME, path_or_fileobj=str(folder / WEIGHTS_NAME)),
        CommitOperationAdd(path_in_repo=MANIFEST_NAME, path_or_fileobj=manifest_json([entry]).encode()),
        CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card.encode()),
    ]
    api = HfApi(endpoint=_endpoint(), token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations, commit_message=f"thead weights: {entry.name}")
    except Exception as e:  # noqa: BLE001
        from huggingface_hub import errors

        status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(e, errors.HfHubHTTPError) and status in (401, 403):
            raise HubError(f"not allowed to push to {repo_id}: set HF_TOKEN or run `hf auth login` with a write token") from None
        if isinstance(e, errors.HfHubHTTPError):
            raise HubError(f"push to {repo_id} failed: HTTP {status} ({_first_line(e)})") from None
        raise HubError(f"push to {repo_id} failed: {_network_reason(e)}") from None
    return PushResult(repo_id=repo_id, commit_url=str(info.commit_url), entry=entry)
