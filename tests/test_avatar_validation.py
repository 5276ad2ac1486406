"""Hand-edited or damaged avatars are refused on load with one line naming the file and what is
wrong; an avatar without a weights hash is refused like one made with other weights."""

from __future__ import annotations

import json
from pathlib import Path
import struct

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.test_avatar import make_avatar
from tests.test_validation import run_limited
from thead.avatar import AvatarStore
from thead.cli import main
from thead.errors import AvatarError


@pytest.fixture
def store(tmp_path, sample_dir):
    s = AvatarStore(tmp_path / "avatars")
    s.save(make_avatar(sample_dir, "alice"))
    return s


def _edit(store, name="alice", tensors=None, meta=None):
    path = store.path(name)
    t = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        m = f.metadata()
    if tensors:
        tensors(t)
    if meta:
        m.update(meta)
    save_file(t, str(path), metadata=m)
    return path


TENSOR_EDITS = {
    "latents of the wrong size": (lambda t: t.update(z_style=torch.zeros(1, 32)), "z_style has shape 1x32, expected 1x64"),
    "integer latents": (lambda t: t.update(z_layout=torch.zeros(1, 64, dtype=torch.int64)), "z_layout is int64, expected float32"),
    "NaN latents": (lambda t: t["z_style"].__setitem__((0, 3), float("nan")), "z_style holds NaN"),
    "infinite latents": (lambda t: t["z_layout"].__setitem__((0, 0), float("inf")), "z_layout holds NaN or infinite"),
    "NaN landmarks": (lambda t: t["landmarks"].__setitem__((1, 30, 0), float("nan")), "landmarks holds NaN"),
    "landmarks of the wrong shape": (lambda t: t.update(landmarks=torch.zeros(2, 5, 2)), "landmarks has shape 2x5x2, expected 2x68x2"),
    "shots of the wrong size": (lambda t: t.update(shots=torch.zeros(2, 100, 100, 3, dtype=torch.uint8)), "shots has shape 2x100x100x3"),
    "fewer shots than recorded": (lambda t: t.update(shots=t["shots"][:1]), "shots has shape 1x224x224x3, expected 2x224x224x3"),
    "float shots": (lambda t: t.update(shots=t["shots"].float()), "shots is float32, expected uint8"),
    "singular crop transform": (lambda t: t.update(photo_to_crop=torch.zeros(3, 3, dtype=torch.float64)), "photo_to_crop is not an invertible"),
    "crop transform of the wrong shape": (lambda t: t.update(photo_to_crop=torch.eye(3, dtype=torch.float64)[:2]), "photo_to_crop has shape 2x3"),
    "NaN crop transform": (lambda t: t["photo_to_crop"].__setitem__((0, 2), float("nan")), "photo_to_crop holds NaN"),
    "missing tensor": (lambda t: t.pop("landmarks"), "lacks landmarks"),
}


@pytest.mark.parametrize("case", list(TENSOR_EDITS))
def test_hand_edited_tensors_are_refused(store, case):
    edit, message = TENSOR_EDITS[case]
    path = _edit(store, tensors=edit)
    with pytest.raises(AvatarError) as e:
        store.load("alice")
    assert str(path) in str(e.value) and message in str(e.value)


META_EDITS = {
    "zero shots": ({"num_shots": "0"}, "num_shots 0"),
    "huge latent size": ({"z_dim": "100000"}, "z_dim 100000"),
    "huge photo": ({"photo_size": "100000x1"}, "photo_size 100000x1"),
    "NaN crop scale": ({"crop_scale": "nan"}, "crop_scale: expected a finite number, got NaN"),
    "photo size that disagrees with the photo": ({"photo_size": "200x224"}, "the stored photo is 224x224, its metadata says 200x224"),
    "not a number": ({"num_shots": "two"}, 'num_shots: expected an int, got "two"'),
}


@pytest.mark.parametrize("case", list(META_EDITS))
def test_hand_edited_metadata_is_refused(store, case):
    meta, message = META_EDITS[case]
    path = _edit(store, meta=meta)
    with pytest.raises(AvatarError) as e:
        store.load("alice")
    assert str(path) in str(e.value) and message in str(e.value)


def test_a_header_claiming_huge_tensors_fails_under_a_memory_limit(store):
    path = store.path("alice")
    header = {"__metadata__": {"format": "thead-avatar"}, "z_style": {"dtype": "F32", "shape": [1, 10**10], "data_offsets": [0, 4 * 10**10]}}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 64)
    r = run_limited(f"""
        from thead.avatar import AvatarStore
        from thead.errors import AvatarError
        try:
            AvatarStore({str(store.root)!r}).load("alice")
        except AvatarError as e:
            print("refused:", e)
    """)
    assert r.returncode == 0 and "refused:" in r.stdout, r.stderr[-2000:]


def test_avatars_list_says_when_it_skips_a_corrupt_avatar(store, monkeypatch, capsys, sample_dir):
    monkeypatch.setenv("THEAD_HOME", str(store.root.parent))
    store.save(make_avatar(sample_dir, "bob"))
    store.path("bob").write_bytes(b"garbage")
    assert main(["avatars", "list"]) == 0
    out, err = capsys.readouterr()
    assert "alice" in out and "bob" not in out
    assert "skipped 1 unreadable avatar file(s): bob" in err
    assert main(["avatars", "show", "bob"]) == 1
    assert "corrupt" in capsys.readouterr().err


def test_an_avatar_without_a_weights_hash_is_refused_like_other_weights(store, sample_dir):
    from thead.config import LSRConfig
    from thead.model import RENDER_NETWORKS, LSR, WeightsRecord
    from thead.renderer import check_compatible

    store.save(make_avatar(sample_dir, "nohash", sha=""))
    model = LSR(LSRConfig.reduced(), networks=RENDER_NETWORKS)
    model.weights = WeightsRecord(folder=Path("/w"), spec="/w", sha256="cd" * 32)
    with pytest.raises(AvatarError, match="does not record"):
        check_compatible(model, store.load("nohash"))
    with pytest.raises(AvatarError, match="other weights"):
        check_compatible(model, store.load("alice"))
    model.weights = WeightsRecord(folder=Path("/w"), spec="/w", sha256="ab" * 32)
    check_compatible(model, store.load("alice"))  # the same weights: fine
