"""Resolve what the user gave (``--weights``, ``$THEAD_WEIGHTS``, or nothing) into a weights
folder: a local folder as it is; a Hub repo id downloaded into the Hub cache after one short
probe, every file's sha256 checked against thead's pins or the repo's manifest; nothing: the
default model from the first source that has it (``default_weights``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from thead.errors import HubError, WeightsError
from thead.hub import env
from thead.hub.env import WEIGHTS_ENV
from thead.hub.manifest import (
    CONFIG_NAME,
    DEFAULT_REPO_ID,
    MANIFEST_NAME,
    REPO_ID,
    REQUIRED_FILES,
    WEIGHTS_NAME,
    FilePin,
    WeightsEntry,
    file_sha256,
    known_entry,
    read_manifest,
)

ALTERNATIVES = (
    "pass --weights PATH (a folder with config.json + model.safetensors), "
    "or make one with `thead weights convert <authors' checkpoint> -o DIR`"
)


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
    if isinstance(spec, Path) or not REPO_ID.match(repo_id) or text.startswith((".", "/", "~")):
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
    if not env.offline():
        try:
            problem = _probe(DEFAULT_REPO_ID, revision, env.timeout_s(timeout_s))
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
    timeout = env.timeout_s(timeout_s)
    if env.offline():
        folder = _from_cache(repo_id, revision)
        if folder is None:
            raise HubError(f"HF_HUB_OFFLINE is set and {label} is not in the cache ({env.cache_dir()}); {ALTERNATIVES}")
    else:
        problem = _probe(repo_id, revision, timeout)
        if problem is None:
            folder = _download(repo_id, revision, timeout, label)
        else:
            folder = _from_cache(repo_id, revision)
            if folder is None:
                raise HubError(f"cannot reach the Hub at {env.endpoint()} ({problem}) and {label} is not cached; {ALTERNATIVES}")
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
        return f"{repo} is neither a local folder nor a repo on {env.endpoint()} (if it is private, log in with `hf auth login`)"
    if isinstance(e, errors.RemoteEntryNotFoundError):
        return f"{label}: a required file is missing from the repo ({env.first_line(e)})"
    if isinstance(e, (httpx2.TransportError, errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)):
        return None
    if isinstance(e, errors.HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status is not None and status >= 500:
            return None
        return f"{label}: the Hub answered HTTP {status} ({env.first_line(e)})"
    return None


def _probe(repo_id: str, revision: str, timeout: float) -> str | None:
    """One quick request, no retries: None when the Hub answers, else why not (network).
    Answers that settle the matter (no such repo or revision) raise ``HubError`` at once."""
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=env.endpoint()).model_info(repo_id, revision=revision, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - sorted into "final answer" vs "network" below
        reason = _hub_call_error(e, f"{repo_id}@{revision}")
        if reason is not None:
            raise HubError(f"{reason}; {ALTERNATIVES}") from None
        return env.network_reason(e)
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
                cache_dir=env.cache_dir(),
                endpoint=env.endpoint(),
                etag_timeout=timeout,
            )
        except Exception as e:  # noqa: BLE001
            from huggingface_hub import errors

            if name == MANIFEST_NAME and isinstance(e, errors.RemoteEntryNotFoundError):
                continue  # verified against thead's pins instead, or refused in _verify
            reason = _hub_call_error(e, label)
            if reason is None:
                reason = f"{label}: the download of {name} failed ({env.network_reason(e)})"
            raise HubError(reason) from None
        folder = Path(path).parent
    assert folder is not None
    return folder


def _from_cache(repo_id: str, revision: str) -> Path | None:
    from huggingface_hub import hf_hub_download

    folder = None
    for name in REQUIRED_FILES:
        try:
            path = hf_hub_download(repo_id, name, revision=revision, cache_dir=env.cache_dir(), local_files_only=True)
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

    cache = Path(env.cache_dir()).resolve()
    target = path.resolve()
    if path.is_symlink() and target.is_file() and target.is_relative_to(cache):
        remove_cached(target, cache)
    if path.parent.resolve().is_relative_to(cache):
        remove_cached(path, cache)
