"""The avatar store: one safetensors file per avatar, atomic writes, list/show/rm, names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

from thead.avatar import MAX_PHOTO_SIDE, Avatar, AvatarInfo, AvatarStore, check_name, limit_photo, thead_home
from thead.errors import AvatarError, UsageError
from thead.faces import apply_affine, load_image


def _frame(sample_dir, i=0):
    return load_image(sample_dir / f"fsth_eval_subset/train/id00017/OLguY5ofUrY/combined/{i:05d}_rgb.png")


def make_avatar(sample_dir, name="alice", sha="ab" * 32, k=2) -> Avatar:
    """An avatar built from real frames (the crops are the frames themselves, identity crop)."""
    shots = np.stack([_frame(sample_dir, i) for i in range(k)])
    rng = np.random.default_rng(0)
    return Avatar(
        info=AvatarInfo(name=name, weights_sha256=sha, weights="/w", created="2024-01-01T00:00:00+00:00",
                        source="test", num_shots=k, landmarks="dlib", crop_scale=1.0, photo_size=(224, 224), z_dim=64),
        z_style=torch.randn(1, 64),
        z_layout=torch.randn(1, 64),
        shots=shots,
        landmarks=rng.uniform(40, 180, (k, 68, 2)).astype(np.float32),
        photo=shots[0],
        photo_to_crop=np.eye(3),
    )


def test_round_trip_is_exact(tmp_path, sample_dir):
    store = AvatarStore(tmp_path)
    a = make_avatar(sample_dir)
    path = store.save(a)
    assert path == tmp_path / "alice.safetensors" and path.is_file()
    b = store.load("alice")
    assert b.info == a.info
    assert torch.equal(a.z_style, b.z_style) and torch.equal(a.z_layout, b.z_layout)
    assert np.array_equal(a.shots, b.shots) and b.shots.dtype == np.uint8
    assert np.array_equal(a.landmarks, b.landmarks) and np.array_equal(a.photo, b.photo)
    assert np.array_equal(a.photo_to_crop, b.photo_to_crop)
    assert np.array_equal(b.reference_landmarks, a.landmarks[0])
    # Metadata lives in the safetensors header, readable without thead.
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert meta["weights_sha256"] == "ab" * 32 and meta["num_shots"] == "2" and meta["format"] == "thead-avatar"
        assert set(f.keys()) == {"z_style", "z_layout", "shots", "landmarks", "photo_png", "photo_to_crop"}
    assert [p.name for p in tmp_path.iterdir()] == ["alice.safetensors"]  # no temporary left


def test_list_show_remove_and_finetuned(tmp_path, sample_dir):
    store = AvatarStore(tmp_path)
    store.save(make_avatar(sample_dir, "bob"))
    store.save(make_avatar(sample_dir, "alice"))
    assert [i.name for i in store.list()] == ["alice", "bob"]
    assert store.info("bob").num_shots == 2
    state = {"image_generator.x": torch.ones(3)}
    store.save_finetuned("bob", state)
    personal = store.load_finetuned("bob")
    assert personal.base_weights_sha256 == "ab" * 32 and torch.equal(personal.state["image_generator.x"], torch.ones(3))
    assert store.names() == ["alice", "bob"]  # the fine-tuned file is not an avatar
    assert store.load_finetuned("alice") is None
    removed = store.remove("bob")
    assert sorted(p.name for p in removed) == ["bob.finetuned.safetensors", "bob.safetensors"]
    assert store.names() == ["alice"]


def test_missing_and_taken_names(tmp_path, sample_dir):
    store = AvatarStore(tmp_path)
    with pytest.raises(AvatarError, match="no avatars are enrolled yet"):
        store.load("nobody")
    store.save(make_avatar(sample_dir))
    with pytest.raises(AvatarError, match="no avatar named 'nobody'.*known avatars: alice"):
        store.remove("nobody")
    with pytest.raises(AvatarError, match="already exists"):
        store.save(make_avatar(sample_dir))
    store.save_finetuned("alice", {"image_generator.x": torch.ones(1)})
    store.save(make_avatar(sample_dir, sha="cd" * 32), overwrite=True)
    assert store.info("alice").weights_sha256 == "cd" * 32
    assert store.load_finetuned("alice") is None  # belonged to the replaced latents


@pytest.mark.parametrize("name", ["", "a/b", "../x", ".hidden", "a.finetuned", "x" * 65, "é"])
def test_invalid_names(name):
    with pytest.raises(UsageError, match="invalid avatar name"):
        check_name(name)


def test_corrupt_file_is_one_clear_error(tmp_path, sample_dir):
    store = AvatarStore(tmp_path)
    store.save(make_avatar(sample_dir))
    data = store.path("alice").read_bytes()
    store.path("alice").write_bytes(data[: len(data) // 3])
    with pytest.raises(AvatarError, match="alice"):
        store.load("alice")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    assert [i.name for i in store.list()] == []  # unreadable files are skipped by list


def test_home_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("THEAD_HOME", str(tmp_path / "home"))
    assert thead_home() == tmp_path / "home"
    assert AvatarStore().root == tmp_path / "home" / "avatars"
    monkeypatch.delenv("THEAD_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    if thead_home().parent == tmp_path / "xdg":  # Linux layout
        assert thead_home() == tmp_path / "xdg" / "thead"


def test_huge_photo_is_downscaled_with_a_consistent_affine(sample_dir):
    frame = _frame(sample_dir)
    big = np.asarray(__import__("PIL.Image").Image.fromarray(frame).resize((224 * 12, 224 * 10)))
    # photo -> crop: the crop is the whole original frame, scaled down by 12 x 10.
    to_crop = np.array([[1 / 12, 0, 0.5 / 12 - 0.5], [0, 1 / 10, 0.5 / 10 - 0.5], [0, 0, 1]])
    small, small_to_crop = limit_photo(big, to_crop)
    assert max(small.shape[:2]) == MAX_PHOTO_SIDE
    # The same crop point, reached from both photos' pixel of one location, agrees.
    p_big = np.array([[1200.0, 900.0], [100.0, 2000.0]])
    sx, sy = big.shape[1] / small.shape[1], big.shape[0] / small.shape[0]
    p_small = (p_big + 0.5) / [sx, sy] - 0.5
    assert np.allclose(apply_affine(to_crop, p_big), apply_affine(small_to_crop, p_small), atol=1e-3)
