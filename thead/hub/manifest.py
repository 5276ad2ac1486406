"""The manifest of known weights: the schema of one entry (its files' sha256 pins, provenance,
licence) and the files that hold them (thead's ``weights/manifest.json``, a Hub repo's own
``manifest.json``). No network, no environment: the other hub modules build on this one."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from thead._hash import sha256_file
from thead._schema import decode, optional, stored_as
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


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_sha256(value: str | None, key: str = "") -> None:
    if value is not None and not _SHA256.fullmatch(value):
        raise WeightsError(f"{key}malformed sha256 {value!r} (expected 64 lowercase hex digits)")


@dataclass(frozen=True)
class FilePin:
    """One file of a weights folder: its name, sha256 (hex; None = not pinned yet), bytes."""

    name: str
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class _StoredPin:
    """A pin as a manifest stores it, under its file's name: ``{"sha256": ..., "size": ...}``
    (both keys optional, as the first manifests were read; thead writes both)."""

    sha256: str | None = optional(None)
    size: int | None = optional(None)

    def __post_init__(self) -> None:
        _check_sha256(self.sha256)


def _pins(stored: dict[str, _StoredPin]) -> tuple[FilePin, ...]:
    return tuple(FilePin(name, pin.sha256, pin.size) for name, pin in sorted(stored.items()))


@dataclass(frozen=True)
class WeightsEntry:
    """A known set of weights: where it lives and what its files must hash to.

    ``revision``: a pinned commit or tag (None = the repo's default branch). ``files``: the
    pins; an entry whose pins are None is verified against the repo's own ``manifest.json``.
    In a manifest only ``name`` and ``repo_id`` are required; every other key is optional and
    reads as the default below. ``files`` is stored as ``{file name: {sha256, size}}``.
    """

    name: str
    repo_id: str
    revision: str | None = optional(None)
    description: str = optional("")
    provenance: str = optional("")
    license: str = optional("")
    source_url: str = optional("")
    files: tuple[FilePin, ...] = stored_as(dict[str, _StoredPin], _pins, default=(), is_optional=True)
    archive_sha256: str | None = optional(None)  # the authors' release archive at source_url, once pinned

    def __post_init__(self) -> None:
        _check_sha256(self.archive_sha256, "archive_sha256: ")

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
    def from_dict(cls, d: dict, *, source: str, path: str = "") -> WeightsEntry:
        """One entry, strictly (``thead._schema``): ``WeightsError`` naming ``source`` and the key."""
        return decode(cls, d, error=WeightsError, source=source, path=path)


@dataclass(frozen=True)
class _ManifestFile:
    """A manifest file: ``{"format_version": 1, "weights": [entry, ...]}`` (``weights``
    optional: an empty list)."""

    format_version: Literal[1]
    weights: tuple[WeightsEntry, ...] = optional(())


def read_manifest(path: str | os.PathLike) -> list[WeightsEntry]:
    """The entries of a manifest file (thead's list, or a repo's single-entry one)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise WeightsError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise WeightsError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format_version") != MANIFEST_FORMAT:
        raise WeightsError(f"{path}: expected a manifest with format_version {MANIFEST_FORMAT}")
    return list(decode(_ManifestFile, data, error=WeightsError, source=str(path)).weights)


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
