"""Published metric weights: found in the cache or torch hub's folder, pinned by sha256, and a
clear ``WeightsUnavailable`` offline."""

from __future__ import annotations

import hashlib

import pytest
import torch

from thead.errors import WeightsError
from thead.eval import weights as W


def _spec(tmp_path, payload: bytes | None = None, **kw) -> W.PublishedWeights:
    digest = hashlib.sha256(payload).hexdigest() if payload is not None else "0" * 64
    return W.PublishedWeights(name="test net", filename="net-1234.pth", urls=("http://127.0.0.1:9/none",), sha256=kw.get("sha", digest))


def test_cached_file_is_checked_and_loaded(tmp_path):
    state = {"w": torch.arange(4.0)}
    torch.save(state, tmp_path / "net-1234.pth")
    payload = (tmp_path / "net-1234.pth").read_bytes()
    spec = _spec(tmp_path, payload)
    assert W.resolve(spec, cache_dir=tmp_path, allow_download=False) == tmp_path / "net-1234.pth"
    assert torch.equal(W.load_state(spec, cache_dir=tmp_path, allow_download=False)["w"], state["w"])
    prefix = W.PublishedWeights("test net", "net-1234.pth", (), hashlib.sha256(payload).hexdigest()[:8])
    assert W.resolve(prefix, cache_dir=tmp_path, allow_download=False).is_file()  # torch-hub style pin


def test_wrong_bytes_fail_the_pin(tmp_path):
    (tmp_path / "net-1234.pth").write_bytes(b"not the published file")
    with pytest.raises(WeightsError, match="sha256"):
        W.resolve(_spec(tmp_path, b"the published file"), cache_dir=tmp_path, allow_download=False)


def test_torch_hub_folder_is_searched(tmp_path, monkeypatch):
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "net-1234.pth").write_bytes(b"weights")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert W.resolve(_spec(tmp_path, b"weights"), cache_dir=tmp_path / "cache", allow_download=False) == hub / "net-1234.pth"


def test_missing_offline_names_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(W.WeightsUnavailable, match=r"put net-1234.pth at .*cache"):
        W.resolve(_spec(tmp_path, b"x"), cache_dir=tmp_path / "cache", allow_download=False)
    # A download that fails (nothing listens on port 9) is the same one-line error, no partial file.
    monkeypatch.delenv("THEAD_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(W.WeightsUnavailable, match="could not be downloaded"):
        W.resolve(_spec(tmp_path, b"x"), cache_dir=tmp_path / "cache", allow_download=True)
    assert not any((tmp_path / "cache").iterdir())


def test_pins_are_well_formed():
    for spec in (W.ALEXNET, W.LPIPS_ALEX_HEADS, W.FID_INCEPTION):
        assert len(spec.sha256) in (8, 64) and int(spec.sha256, 16) >= 0
        stem_hash = spec.filename.rsplit("-", 1)[-1].split(".")[0]
        if len(stem_hash) == 8:  # torch-hub names carry the sha256 prefix
            assert spec.sha256.startswith(stem_hash)
