"""The manifest of known weights: the schema of one entry (its files' sha256 pins, provenance,
licence) and the files that hold them (thead's ``weights/manifest.json``, a Hub repo's own
``manifest.json``). No network, no environment: the other hub modules build on this one."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from thead._hash import sha256_file
from thead.errors import WeightsError

#: The one place thead's default weights are named.
DEFAULT_REPO_ID = "thead-models/lsr-voxceleb2"

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MANIFEST_NAME = "manifest.json"
CARD_NAME = "README.md"
REQUIRED_FILES = (CONFIG_NAME, WEIGHTS_NAME)
MANIFEST_FORMAT = 1

#: thead's own manifest and model card template (in a source checkout; not in a wheel).
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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
