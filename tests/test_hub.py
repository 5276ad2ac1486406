"""thead.hub against a fake Hub on 127.0.0.1 (tests/fake_hub.py): download + load, cache hits
offline, 404s, a corrupted file, a slow server, no server at all, thead's own pins, and a push
that comes back down verified.

thead.hub reads HF_ENDPOINT / HF_HUB_CACHE / HF_HUB_OFFLINE when called (not when
huggingface_hub was imported), so these tests set them with monkeypatch in-process whatever
was imported before; tests/cli/test_weights_cli.py also runs a fresh interpreter with the
variables set before any import, as a user's shell does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.fake_hub import FAKE_REPO, FakeHub, closed_port_url, repo_files
from thead import hub
from thead.download import DownloadError
from thead.errors import HubError, WeightsError

REPO = FAKE_REPO


def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert text and "\n" not in text
    return text


# ------------------------------------------------------------------------------ download


def test_download_verify_and_load(fake_hub, random_lsr_weights, hf_env):
    from thead.model import LSR

    folder = hub.resolve_weights(REPO)
    assert folder.is_relative_to(hf_env / "hf-cache")  # the standard cache layout, our cache
    assert "models--test-org--tiny-lsr" in str(folder) and folder.parent.name == "snapshots"
    for name in hub.REQUIRED_FILES:
        assert (folder / name).read_bytes() == (random_lsr_weights / name).read_bytes()
    loaded = LSR.from_pretrained(folder)
    original = LSR.from_pretrained(random_lsr_weights)
    for (k, a), (_, b) in zip(loaded.state_dict().items(), original.state_dict().items()):
        assert torch.equal(a, b), k
    # The model's own loader goes through the Hub path for a repo id.
    assert LSR.from_pretrained(REPO).weights_sha256 == hub.file_sha256(random_lsr_weights / hub.WEIGHTS_NAME)
    # One probe, then HEAD+GET per file; nothing retried.
    paths = [p for _, p in fake_hub.model_requests()]
    assert paths[0] == f"/api/models/{REPO}/revision/main"
    assert sum(p.endswith("/model.safetensors") for p in paths) >= 2


def test_repo_id_from_env_and_default(fake_hub, monkeypatch, random_lsr_weights):
    monkeypatch.setenv(hub.WEIGHTS_ENV, REPO)
    assert (hub.resolve_weights(None) / hub.WEIGHTS_NAME).read_bytes() == (random_lsr_weights / hub.WEIGHTS_NAME).read_bytes()
    monkeypatch.delenv(hub.WEIGHTS_ENV)
    # The fake Hub does not have the default repo: thead moves on to the authors' release,
    # here at a closed port.
    with pytest.raises(DownloadError, match="cannot download the authors' LSR checkpoint") as e:
        hub.resolve_weights(None)
    assert "thead weights convert" in one_line(e)
    fake_hub.add_repo(hub.DEFAULT_REPO_ID, repo_files(random_lsr_weights, hub.DEFAULT_REPO_ID))
    assert (hub.resolve_weights(None) / hub.WEIGHTS_NAME).read_bytes() == (random_lsr_weights / hub.WEIGHTS_NAME).read_bytes()


def test_cache_hit_offline_and_when_the_hub_is_gone(fake_hub, monkeypatch):
    folder = hub.resolve_weights(REPO)
    fake_hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.resolve_weights(REPO) == folder
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    assert hub.resolve_weights(REPO) == folder  # unreachable: falls back to the cache


def test_offline_without_cache(hf_env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    with pytest.raises(HubError) as e:
        hub.resolve_weights(REPO)
    text = one_line(e)
    assert "HF_HUB_OFFLINE" in text and "--weights PATH" in text and "thead weights convert" in text


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("test-org/missing", "test-org/missing is neither a local folder nor a repo on http://127.0.0.1"),
        (f"{REPO}@v9", "no such revision"),
    ],
)
def test_not_found(fake_hub, spec, message):
    with pytest.raises(HubError, match=message) as e:
        hub.resolve_weights(spec)
    assert "--weights PATH" in one_line(e)


def test_repo_without_weights_file(fake_hub, random_lsr_weights):
    files = repo_files(random_lsr_weights, "test-org/no-weights")
    del files[hub.WEIGHTS_NAME]
    fake_hub.add_repo("test-org/no-weights", files)
    with pytest.raises(HubError, match="has no model.safetensors") as e:
        hub.resolve_weights("test-org/no-weights")
    one_line(e)


def test_repo_without_manifest_is_refused(fake_hub, random_lsr_weights):
    fake_hub.add_repo("test-org/unverified", repo_files(random_lsr_weights, REPO, manifest=False))
    with pytest.raises(HubError, match="no manifest.json, so its files cannot be verified"):
        hub.resolve_weights("test-org/unverified")


def test_corrupted_file_is_deleted_and_refused(fake_hub, random_lsr_weights):
    good = (random_lsr_weights / hub.WEIGHTS_NAME).read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF  # one flipped byte, same size
    fake_hub.served_instead[(REPO, hub.WEIGHTS_NAME)] = bytes(bad)
    with pytest.raises(HubError, match="sha256 mismatch for model.safetensors") as e:
        hub.resolve_weights(REPO)
    assert "deleted" in one_line(e)
    cache = Path(os.environ["HF_HUB_CACHE"])
    blobs = [p for p in cache.rglob("blobs/*") if p.stat().st_size == len(good)]
    assert blobs == []  # neither the snapshot link nor the blob survives
    # The server is fixed: the next call downloads afresh and passes.
    del fake_hub.served_instead[(REPO, hub.WEIGHTS_NAME)]
    folder = hub.resolve_weights(REPO)
    assert (folder / hub.WEIGHTS_NAME).read_bytes() == good


def test_slow_server_fails_fast_without_retries(hf_env, random_lsr_weights, monkeypatch):
    with FakeHub(delay_s=4.0) as slow:
        slow.add_repo(REPO, repo_files(random_lsr_weights, REPO))
        monkeypatch.setenv("HF_ENDPOINT", slow.url)
        with pytest.raises(HubError, match="no answer within the timeout") as e:  # httpx's timeout, nothing else
            hub.resolve_weights(REPO, timeout_s=1.0)
        assert "--weights PATH" in one_line(e)
        # It gave up on the first request (the probe), retried nothing and cached nothing.
        assert [p for _, p in slow.model_requests()] == [f"/api/models/{REPO}/revision/main"]
        assert not list(Path(os.environ["HF_HUB_CACHE"]).rglob("*.safetensors"))
        # The same server within the timeout: the failure above was the timeout, not the server.
        slow.delay_s = 0.2
        folder = hub.resolve_weights(REPO, timeout_s=30.0)
        assert (folder / hub.WEIGHTS_NAME).read_bytes() == (random_lsr_weights / hub.WEIGHTS_NAME).read_bytes()


def test_timeout_from_env(hf_env, random_lsr_weights, monkeypatch):
    with FakeHub(delay_s=3.0) as slow:
        slow.add_repo(REPO, repo_files(random_lsr_weights, REPO))
        monkeypatch.setenv("HF_ENDPOINT", slow.url)
        monkeypatch.setenv(hub.TIMEOUT_ENV, "0.5")
        with pytest.raises(HubError, match="no answer"):
            hub.resolve_weights(REPO)
        monkeypatch.setenv(hub.TIMEOUT_ENV, "soon")
        with pytest.raises(WeightsError, match="THEAD_HUB_TIMEOUT"):
            hub.resolve_weights(REPO)


def test_no_hub_at_all(hf_env, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    with pytest.raises(HubError, match="cannot reach the Hub") as e:
        hub.resolve_weights(REPO)
    text = one_line(e)
    assert "--weights PATH" in text and "thead weights convert" in text and "not cached" in text


# ----------------------------------------------------------------------- thead's own pins


def _pin_manifest(tmp_path: Path, monkeypatch, entry: hub.WeightsEntry) -> None:
    (tmp_path / "pins").mkdir()
    hub.write_manifest(tmp_path / "pins" / hub.MANIFEST_NAME, [entry])
    monkeypatch.setattr(hub.manifest, "WEIGHTS_DIR", tmp_path / "pins")


def test_thead_pins_win_over_the_repo_manifest(fake_hub, random_lsr_weights, hf_env, monkeypatch):
    entry = hub.make_entry(random_lsr_weights, REPO)
    wrong = tuple(hub.FilePin(p.name, "0" * 64, p.size) for p in entry.files)
    _pin_manifest(hf_env, monkeypatch, hub.WeightsEntry(name="tiny", repo_id=REPO, files=wrong))
    with pytest.raises(HubError, match="pinned in thead's weights/manifest.json"):
        hub.resolve_weights(REPO)


def test_thead_pins_verify_a_repo_without_manifest(fake_hub, random_lsr_weights, hf_env, monkeypatch):
    fake_hub.add_repo(REPO, repo_files(random_lsr_weights, REPO, manifest=False))
    _pin_manifest(hf_env, monkeypatch, hub.make_entry(random_lsr_weights, REPO))
    folder = hub.resolve_weights(REPO)
    assert not (folder / hub.MANIFEST_NAME).exists()


def test_unpinned_entry_falls_back_to_repo_manifest(fake_hub, random_lsr_weights, hf_env, monkeypatch):
    unpinned = tuple(hub.FilePin(n) for n in hub.REQUIRED_FILES)
    _pin_manifest(hf_env, monkeypatch, hub.WeightsEntry(name="tiny", repo_id=REPO, files=unpinned))
    assert not hub.known_entry(REPO).pinned
    assert (hub.resolve_weights(REPO) / hub.MANIFEST_NAME).is_file()


def test_shipped_manifest_names_the_default_repo():
    entries = hub.known_weights()
    assert [e.repo_id for e in entries].count(hub.DEFAULT_REPO_ID) == 1
    entry = hub.known_entry(hub.DEFAULT_REPO_ID)
    assert "github.com/MoustafaMeshry/lsr" in entry.provenance and "thead weights convert" in entry.provenance
    assert entry.license == "Apache-2.0"
    assert {p.name for p in entry.files} == set(hub.REQUIRED_FILES)
    # Hashes are filled in once the converted weights exist (weights/README.md says so).
    assert all(p.sha256 is None or len(p.sha256) == 64 for p in entry.files)


# ------------------------------------------------------------------------- local folders


def test_local_folder_is_used_as_is(random_lsr_weights, hf_env, monkeypatch):
    assert hub.resolve_weights(random_lsr_weights) == random_lsr_weights
    assert hub.resolve_weights(str(random_lsr_weights)) == random_lsr_weights
    monkeypatch.setenv(hub.WEIGHTS_ENV, str(random_lsr_weights))
    assert hub.resolve_weights(None) == random_lsr_weights


def test_bad_local_specs(random_lsr_weights, tmp_path):
    with pytest.raises(WeightsError, match="has no config.json or model.safetensors"):
        hub.resolve_weights(tmp_path)  # a folder without weights
    with pytest.raises(WeightsError, match="is a file"):
        hub.resolve_weights(random_lsr_weights / hub.WEIGHTS_NAME)
    with pytest.raises(WeightsError, match="does not exist"):
        hub.resolve_weights(tmp_path / "nope" / "deeper" / "still")
    with pytest.raises(WeightsError, match="does not exist"):
        hub.resolve_weights("./relative-missing")
    with pytest.raises(WeightsError, match="revision"):
        hub.resolve_weights(f"{REPO}@v1", revision="v2")


# ---------------------------------------------------------------------- manifests, cards


def test_manifest_round_trip_and_validation(random_lsr_weights, tmp_path):
    entry = hub.make_entry(random_lsr_weights, REPO, provenance="made in a test")
    assert entry.pinned and entry.pin(hub.WEIGHTS_NAME).size == (random_lsr_weights / hub.WEIGHTS_NAME).stat().st_size
    path = hub.write_manifest(tmp_path / "m.json", [entry])
    assert hub.read_manifest(path) == [entry]
    data = json.loads(path.read_text())
    data["weights"][0]["files"]["config.json"]["sha256"] = "not-a-hash"
    path.write_text(json.dumps(data))
    with pytest.raises(WeightsError, match=r"m.json: weights.0.files.config.json: malformed sha256 'not-a-hash'"):
        hub.read_manifest(path)
    data["weights"][0]["surprise"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(WeightsError, match=r"m.json: weights.0.surprise: unknown key"):
        hub.read_manifest(path)


def test_summary_and_model_card(random_lsr_weights):
    from thead.model import LSR, NETWORKS, count_parameters

    summary = hub.summarize_weights(random_lsr_weights)
    model = LSR.from_pretrained(random_lsr_weights)
    assert {n for n, _, _ in summary.networks} == set(NETWORKS)
    for name, tensors, params in summary.networks:
        module = getattr(model, name)
        assert params == count_parameters(module)
        assert tensors == len(module.state_dict())
    card = hub.render_model_card(hub.make_entry(random_lsr_weights, REPO), summary)
    assert card.startswith("---\nlicense: apache-2.0\n")
    assert hub.file_sha256(random_lsr_weights / hub.WEIGHTS_NAME) in card
    assert f"{summary.total_parameters:,}" in card and REPO in card
    assert "$" not in card.replace("$ ", "")  # every template field was filled


def test_push_then_download_verified(fake_hub, random_lsr_weights):
    result = hub.push_weights(random_lsr_weights, "test-org/pushed", token="hf_test_token", provenance="a test push")
    assert result.commit_url.startswith(fake_hub.url)
    (commit,) = fake_hub.commits
    assert set(commit["files"]) == {"config.json", "model.safetensors", "manifest.json", "README.md"}
    assert commit["files"]["model.safetensors"] == (random_lsr_weights / hub.WEIGHTS_NAME).read_bytes()
    pushed = json.loads(commit["files"]["manifest.json"])
    assert pushed["weights"][0]["provenance"] == "a test push"
    assert b"a test push" in commit["files"]["README.md"]
    # What was pushed comes back down and passes verification.
    folder = hub.resolve_weights("test-org/pushed")
    assert hub.read_manifest(folder / hub.MANIFEST_NAME)[0] == result.entry


def test_push_refuses_bad_input(fake_hub, tmp_path):
    with pytest.raises(WeightsError, match="not a Hub repo id"):
        hub.push_weights(tmp_path, "no-slash", token="x")
    with pytest.raises(WeightsError, match="has no config.json"):
        hub.push_weights(tmp_path, "test-org/x", token="x")
    assert fake_hub.commits == []


def test_push_with_a_bad_token(hf_env, random_lsr_weights, monkeypatch):
    with FakeHub(write_token="hf_right") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        with pytest.raises(HubError, match="not allowed to push to test-org/pushed") as e:
            hub.push_weights(random_lsr_weights, "test-org/pushed", token="hf_wrong")
        one_line(e)
        assert server.commits == []
        hub.push_weights(random_lsr_weights, "test-org/pushed", token="hf_right")
        assert len(server.commits) == 1
