"""Hostile or faulty input files and places: image bombs and tiny images, inflating motion
templates, THEAD_HOME that cannot hold avatars, several people in one enrolment, what
--overwrite discards. Real frames from lsr-sample, the reduced parity weights."""

from __future__ import annotations

import io
import os
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.test_validation import run_limited
from thead.avatar import AvatarStore
from thead.cli import main
from thead.enroll import EnrollOptions, enroll
from thead.errors import AvatarError, ImageError, OutputError
from thead.faces import load_image
from thead.motion import MotionError, MotionTemplate

TRAIN = "fsth_eval_subset/train/{}/{}/combined"
PEOPLE = {"id00017": "OLguY5ofUrY", "id00061": "mMOd25Ag7XY", "id00081": "vvLu_7TpP8c"}


def _frame(sample_dir, person="id00017", i=0):
    return sample_dir / TRAIN.format(person, PEOPLE[person]) / f"{i:05d}_rgb.png"


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


def _bomb(path):
    """A 20000x20000 PNG of a few hundred KB: 400 M pixels, over PIL's bomb limit."""
    Image.new("1", (20000, 20000)).save(path)
    return path


# -- images ---------------------------------------------------------------------------------

def test_a_decompression_bomb_is_one_image_error_under_a_memory_limit(tmp_path):
    bomb = _bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 2 << 20
    r = run_limited(f"""
        from thead.faces import load_image
        from thead.errors import ImageError
        try:
            load_image({str(bomb)!r})
        except ImageError as e:
            print("refused:", e)
    """, limit=1 << 30)
    assert r.returncode == 0 and "refused:" in r.stdout and "bomb" in r.stdout.lower(), r.stderr[-2000:]


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (400, 9)])
def test_tiny_images_are_refused_before_the_detector(tmp_path, size):
    path = tmp_path / "tiny.png"
    Image.new("RGB", size).save(path)
    with pytest.raises(ImageError, match=f"{size[0]}x{size[1]} px, too small"):
        load_image(path)


def test_a_bomb_in_a_folder_is_skipped_not_fatal(tmp_path, sample_dir, encoders, detector, recorder):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in (0, 5):
        shutil.copy(_frame(sample_dir, i=i), folder / f"{i}.png")
    _bomb(folder / "9bomb.png")
    Image.new("RGB", (1, 1)).save(folder / "9tiny.png")
    notes = recorder.notes
    avatar = enroll(folder, "alice", EnrollOptions(num_shots=4), model=encoders, detector=detector,
                    store=AvatarStore(tmp_path / "store"), progress=recorder)
    assert avatar.num_shots == 2
    assert any("9bomb.png" in n for n in notes) and any("9tiny.png" in n for n in notes), notes


# -- several people, --overwrite ------------------------------------------------------------

def test_several_people_are_noted_or_refused(tmp_path, sample_dir, encoders, detector, recorder):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for person in PEOPLE:
        shutil.copy(_frame(sample_dir, person), folder / f"{person}.png")
    store = AvatarStore(tmp_path / "store")
    notes = recorder.notes
    enroll(folder, "mix", EnrollOptions(num_shots=3), model=encoders, detector=detector, store=store, progress=recorder)
    assert any("3 different people" in n and "id00061.png" in n for n in notes), notes
    with pytest.raises(AvatarError, match="3 different people"):
        enroll(folder, "mix2", EnrollOptions(num_shots=3, one_person=True), model=encoders, detector=detector, store=store)
    assert not store.exists("mix2")


def test_one_person_is_not_noted(tmp_path, sample_dir, encoders, detector, recorder):
    folder = tmp_path / "same"
    folder.mkdir()
    for i in (0, 8, 16):
        shutil.copy(_frame(sample_dir, i=i), folder / f"{i}.png")
    notes = recorder.notes
    enroll(folder, "one", EnrollOptions(num_shots=3, one_person=True), model=encoders, detector=detector,
           store=AvatarStore(tmp_path / "store"), progress=recorder)
    assert not any("people" in n for n in notes), notes


def test_overwrite_says_it_discards_fine_tuned_weights(tmp_path, sample_dir, encoders, detector, recorder):
    import torch

    store = AvatarStore(tmp_path / "store")
    photo = _frame(sample_dir)
    enroll(photo, "alice", model=encoders, detector=detector, store=store)
    store.save_finetuned("alice", {"layout_generator.x": torch.zeros(2)})
    notes = recorder.notes
    enroll(photo, "alice", EnrollOptions(overwrite=True), model=encoders, detector=detector, store=store, progress=recorder)
    assert any("replaced avatar 'alice' (1 shot," in n and "fine-tuned weights" in n for n in notes), notes
    assert not store.finetuned_path("alice").exists()


# -- THEAD_HOME -----------------------------------------------------------------------------

def test_thead_home_that_is_a_file_fails_before_any_work(tmp_path, sample_dir, monkeypatch, capsys):
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv("THEAD_HOME", str(home))
    # No such weights: a check after the work would fail on the weights instead.
    assert main(["enroll", str(_frame(sample_dir)), "--name", "alice", "--weights", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, not a folder" in err[0] and "THEAD_HOME" in err[0], err
    assert home.read_text() == "not a folder"


def test_thead_home_where_nothing_can_be_created_fails_before_any_work(sample_dir, monkeypatch, capsys):
    """/proc refuses new folders even to root: the same path as a read-only THEAD_HOME."""
    monkeypatch.setenv("THEAD_HOME", "/proc/thead-home-test")
    assert main(["enroll", str(_frame(sample_dir)), "--name", "alice", "--weights", "/nonexistent-weights"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot store avatars in /proc/thead-home-test" in err[0], err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_thead_home_fails_before_any_work(tmp_path):
    home = tmp_path / "home"
    (home / "avatars").mkdir(parents=True)
    (home / "avatars").chmod(0o500)
    try:
        with pytest.raises(OutputError, match="cannot store avatars"):
            AvatarStore(home / "avatars").check_writable()
    finally:
        (home / "avatars").chmod(0o700)


# -- motion templates -----------------------------------------------------------------------

def _template(tmp_path, frames=4) -> MotionTemplate:
    from fractions import Fraction

    rng = np.random.default_rng(0)
    return MotionTemplate(landmarks=rng.uniform(50, 170, (frames, 68, 2)).astype(np.float32),
                          face_found=np.ones(frames, bool), fps=Fraction(25))


def _rewrite(path, **members):
    """Re-zip a template with some members replaced by raw .npy bytes."""
    with zipfile.ZipFile(path) as z:
        items = {n: z.read(n) for n in z.namelist()}
    for name, array in members.items():
        buf = io.BytesIO()
        np.save(buf, array)
        items[f"{name}.npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, data in items.items():
            z.writestr(n, data)


@pytest.mark.slow
def test_a_template_that_inflates_to_gigabytes_fails_under_a_memory_limit(tmp_path):
    path = _template(tmp_path).save(tmp_path / "t.npz")
    # A member claiming ~1 GiB of zeros: a few MB on disk.
    with zipfile.ZipFile(path) as z:
        items = {n: z.read(n) for n in z.namelist()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2_000_000, 68, 2)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, data in items.items():
            if n != "landmarks.npy":
                z.writestr(n, data)
        with z.open("landmarks.npy", "w", force_zip64=True) as f:
            f.write(header.getvalue())
            chunk = bytes(64 << 20)
            for _ in range(17):
                f.write(chunk)
    assert path.stat().st_size < 8 << 20
    r = run_limited(f"""
        from thead.motion import MotionError, MotionTemplate
        try:
            MotionTemplate.load({str(path)!r})
        except MotionError as e:
            print("refused:", e)
    """, limit=1 << 30)
    assert r.returncode == 0 and "refused:" in r.stdout and "would inflate" in r.stdout, r.stderr[-2000:]


@pytest.mark.parametrize(("members", "message"), [
    ({"crop_size": np.array(10**7)}, "crop_size must be between 8 and 4096"),
    ({"fps": np.array([10**9, 1], np.int64)}, "fps must be between"),
    ({"fps": np.array([0, 1], np.int64)}, "fps must be positive"),
])
def test_template_values_out_of_range(tmp_path, members, message):
    path = _template(tmp_path).save(tmp_path / "t.npz")
    _rewrite(path, **members)
    with pytest.raises(MotionError, match=message):
        MotionTemplate.load(path)


# -- animate uses the weights the avatar records ----------------------------------------------

def test_animate_loads_the_weights_recorded_in_the_avatar(tmp_path, sample_dir, parity_weights, detector, monkeypatch):
    from thead.animate import Animator
    from thead.validate import recorded_weights

    store = AvatarStore(tmp_path / "store")
    avatar = enroll(_frame(sample_dir), "alice", weights=parity_weights, detector=detector, store=store)
    assert avatar.weights == str(parity_weights.resolve())
    # No default weights reachable: only the recorded folder can work.
    monkeypatch.delenv("THEAD_WEIGHTS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    animator = Animator.load("alice", store=store)
    assert animator.model.weights_sha256 == avatar.info.weights_sha256
    # A recorded folder that is gone, or a path that is no repo id, falls back to the default.
    moved = dataclass_replace_weights(avatar, str(tmp_path / "gone"))
    assert recorded_weights(moved) is None
    assert recorded_weights(dataclass_replace_weights(avatar, "owner/name")) == "owner/name"
    assert recorded_weights(dataclass_replace_weights(avatar, "")) is None


def dataclass_replace_weights(avatar, weights):
    import dataclasses

    return dataclasses.replace(avatar, info=dataclasses.replace(avatar.info, weights=weights))


def test_a_video_of_tiny_frames_is_one_video_error(tmp_path):
    import av

    from thead.errors import VideoError
    from thead.video import open_video

    path = tmp_path / "tiny.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 4, 4, "yuv420p"
        for _ in range(3):
            for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((4, 4, 3), np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with pytest.raises(VideoError, match="4x4 px frames, too small"):
        open_video(path)
