"""What a weights folder holds (``summarize_weights``, for ``thead weights info``), its model
card, and publishing it to the Hub in one commit (``push_weights``)."""

from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass, replace
from pathlib import Path

from thead.config import LSRConfig
from thead.errors import HubError, WeightsError
from thead.hub import env, manifest
from thead.hub.manifest import (
    CARD_NAME,
    CONFIG_NAME,
    MANIFEST_NAME,
    REPO_ID,
    REQUIRED_FILES,
    WEIGHTS_NAME,
    FilePin,
    WeightsEntry,
    file_sha256,
    known_entry,
    known_weights,
    manifest_json,
    read_manifest,
)


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
        text = (folder / CONFIG_NAME).read_text()
    except FileNotFoundError:
        raise WeightsError(f"{folder} has no {CONFIG_NAME}") from None
    except UnicodeDecodeError as e:
        raise WeightsError(f"{folder / CONFIG_NAME} is not valid JSON ({e})") from None
    LSRConfig.from_json(text, source=str(folder / CONFIG_NAME))  # strict: one line naming the key
    config = json.loads(text)
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
        raise WeightsError(f"{folder / WEIGHTS_NAME} is not a readable safetensors file ({env.first_line(e)})") from None
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

    path = Path(template) if template is not None else manifest.WEIGHTS_DIR / "MODEL_CARD.md"
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

    if not REPO_ID.match(repo_id):
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
    api = HfApi(endpoint=env.endpoint(), token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations, commit_message=f"thead weights: {entry.name}")
    except Exception as e:  # noqa: BLE001
        from huggingface_hub import errors

        status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(e, errors.HfHubHTTPError) and status in (401, 403):
            raise HubError(f"not allowed to push to {repo_id}: set HF_TOKEN or run `hf auth login` with a write token") from None
        if isinstance(e, errors.HfHubHTTPError):
            raise HubError(f"push to {repo_id} failed: HTTP {status} ({env.first_line(e)})") from None
        raise HubError(f"push to {repo_id} failed: {env.network_reason(e)}") from None
    return PushResult(repo_id=repo_id, commit_url=str(info.commit_url), entry=entry)
