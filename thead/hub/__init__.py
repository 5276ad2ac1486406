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

One module per concern, imports running one way (manifest ← env ← resolve, publish):

- ``manifest``: the schema of a weights entry and its files (pins, ``file_sha256``); thead's
  own manifest is read from ``thead.hub.manifest.WEIGHTS_DIR`` (patch it there in tests);
- ``env``: the Hub's environment variables, offline rule, timeout, network failure reasons;
- ``resolve``: spec → verified local folder (probe, download, cache, pins);
- ``publish``: summary of a folder, model card, push.
"""

from __future__ import annotations

from thead.hub.env import DEFAULT_TIMEOUT_S, TIMEOUT_ENV, WEIGHTS_ENV
from thead.hub.manifest import (
    CARD_NAME,
    CONFIG_NAME,
    DEFAULT_REPO_ID,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    REQUIRED_FILES,
    WEIGHTS_NAME,
    FilePin,
    WeightsEntry,
    file_sha256,
    known_entry,
    known_weights,
    manifest_json,
    read_manifest,
    write_manifest,
)
from thead.hub.publish import PushResult, WeightsSummary, make_entry, push_weights, render_model_card, summarize_weights
from thead.hub.resolve import ALTERNATIVES, default_weights, download_weights, resolve_weights, verify_files

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
