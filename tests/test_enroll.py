"""Enrolment on real VoxCeleb2 frames and clips with the authors' reduced parity weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from thead.avatar import AvatarStore
from thead.enroll import EnrollOptions, enroll, shot_indices
from thead.errors import AvatarError, NoFaceError, UsageError
from thead.video import open_video
from thead.faces import detect_and_crop, draw_contour, load_image, to_tensor

TRAIN_17 = "fsth_eval_subset/train/id00017/OLguY5ofUrY/combined"
CLIP_61 = "test_videos/id00061/mMOd25Ag7XY/00239.mp4"
CLIP_17 = "test_videos/id00017/OLguY5ofUrY/00039.mp4"


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


def test_shot_indices_are_the_authors():
    # ref §1.8: N = 32 -> K=1: [0]; K=4: [0,8,16,24]; K=8: [0,4,...,28]; K=16: even; K=32: all
    assert shot_indices(32, 1) == [0]
    assert shot_indices(32, 4) == [0, 8, 16, 24]
    assert shot_indices(32, 8) == list(range(0, 32, 4))
    assert shot_indices(32, 16) == list(range(0, 32, 2))
    assert shot_indices(32, 32) == list(range(32))
    assert shot_indices(126, 3) == [0, 42, 84]
    assert shot_indices(3, 8) == [0, 1, 2]  # never more shots than frames


def test_enroll_folder_matches_encoding_each_shot(tmp_path, sample_dir, encoders, detector):
    store = AvatarStore(tmp_path)
    avatar = enroll(sample_dir / TRAIN_17, "p17", EnrollOptions(num_shots=4), model=encoders, store=store, detector=detector)
    assert avatar.num_shots == 4 and avatar.shots.shape == (4, 224, 224, 3) and avatar.landmarks.shape == (4, 68, 2)
    assert avatar.info.weights_sha256 == encoders.weights_sha256 and avatar.info.landmarks == "dlib"
    # Landmarks were measured on the crops: inside the crop, face-sized.
    lm = avatar.landmarks
    assert lm.min() > 0 and lm.max() < 224 and np.ptp(lm[0, :, 0]) > 80
    # The latents are the mean over the 4 shots of E^s / E^l on [crop ‖ contour] (ref §4.6).
    with torch.inference_mode():
        per_shot = [
            encoders.encode(to_tensor(avatar.shots[i])[None, None], to_tensor(draw_contour(lm[i]))[None, None])
            for i in range(4)
        ]
    z_style = torch.stack([z.z_style for z in per_shot]).mean(0)
    z_layout = torch.stack([z.z_layout for z in per_shot]).mean(0)
    assert torch.allclose(avatar.z_style, z_style, atol=1e-5) and torch.allclose(avatar.z_layout, z_layout, atol=1e-5)
    # The shots are frames 0, 8, 16, 24 of the sorted folder (VoxCeleb2 frames are already
    # 224 crops, so the crop of a frame is close to the frame itself).
    loaded = store.load("p17")
    assert np.array_equal(loaded.shots, avatar.shots)
    assert torch.equal(loaded.z_style, avatar.z_style)


def test_enroll_one_photo_and_a_video(tmp_path, sample_dir, encoders, detector, recorder):
    store = AvatarStore(tmp_path)
    notes = recorder.notes
    one = enroll(sample_dir / TRAIN_17 / "00005_rgb.png", "one", EnrollOptions(num_shots=4), model=encoders, store=store,
                 detector=detector, progress=recorder)
    assert one.num_shots == 1 and any("one photo gives one shot" in n for n in notes)
    assert one.photo.shape == (224, 224, 3)
    assert np.array_equal(one.photo, load_image(sample_dir / TRAIN_17 / "00005_rgb.png"))
    video = enroll(sample_dir / CLIP_61, "vid", EnrollOptions(num_shots=3, pick="even"), model=encoders, store=store,
                   detector=detector)
    assert video.num_shots == 3 and video.info.source.endswith("00239.mp4")
    # 126 frames, K = 3 -> frames 0, 42, 84; shot 1 is frame 42's crop.
    with open_video(sample_dir / CLIP_61) as reader:
        frame42 = next(f.image for f in reader if f.index == 42)
    crop, _ = detect_and_crop(frame42, detector)
    assert np.array_equal(video.shots[1], crop.image)
    assert sorted(store.names()) == ["one", "vid"]


def test_no_face_and_bad_sources(tmp_path, sample_dir, encoders, detector):
    from skimage import data

    from thead.faces import save_image

    coffee = tmp_path / "coffee.png"
    save_image(coffee, data.coffee())
    store = AvatarStore(tmp_path / "store")
    with pytest.raises(NoFaceError, match="no face found in .*coffee.png"):
        enroll(coffee, "c", model=encoders, store=store, detector=detector)
    with pytest.raises(UsageError, match="does not exist"):
        enroll(tmp_path / "nope.jpg", "c", model=encoders, store=store, detector=detector)
    with pytest.raises(UsageError, match="invalid avatar name"):
        enroll(coffee, "../x", model=encoders, store=store, detector=detector)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="has no photos"):
        enroll(empty, "e", model=encoders, store=store, detector=detector)
    assert store.names() == []


def test_name_taken_unless_overwrite(tmp_path, sample_dir, encoders, detector):
    store = AvatarStore(tmp_path)
    photo = sample_dir / TRAIN_17 / "00000_rgb.png"
    enroll(photo, "x", model=encoders, store=store, detector=detector)
    with pytest.raises(AvatarError, match="already exists"):
        enroll(photo, "x", model=encoders, store=store, detector=detector)
    enroll(photo, "x", EnrollOptions(overwrite=True, num_shots=1), model=encoders, store=store, detector=detector)


def test_best_shots_avoid_closed_eyes(tmp_path, sample_dir, detector):
    # id00017's clip blinks at frames 80-83; cut to open mid-blink, the authors' evenly spaced
    # frames take the blink as shot 0, "best" takes a frame of the same part with open eyes.
    from tests.test_motion_driver import write_clip
    from thead.enroll import collect_shots, shot_cost
    from thead.faces.pose import eye_opening

    clip = write_clip(sample_dir / CLIP_17, tmp_path / "blink.mp4", first=80)
    notes_even, notes_best = [], []
    even = collect_shots(clip, EnrollOptions(num_shots=2, pick="even"), detector, notes_even.append)
    best = collect_shots(clip, EnrollOptions(num_shots=2), detector, notes_best.append)
    closed = [n for n in notes_even if n.startswith("closed eyes")]
    assert len(closed) == 1 and "1 of 2 shot(s)" in closed[0] and even[0].where in closed[0]  # said, with the frame
    assert not [n for n in notes_best if n.startswith("closed eyes")]
    assert [s.where.split()[1] for s in even] == ["0", "42"]
    assert eye_opening(even[0].landmarks) < 0.18  # measured 0.164: eyes half shut
    assert all(eye_opening(s.landmarks) > 0.22 for s in best)  # measured 0.263, 0.263
    assert int(best[0].where.split()[1]) < 42 and shot_cost(best[0]) < shot_cost(even[0])
    # a folder: each of the K parts gives its best photo, the part's own range kept
    folder = sample_dir / "fsth_eval_subset/train/id00061/mMOd25Ag7XY/combined"
    shots = collect_shots(folder, EnrollOptions(num_shots=4), detector)
    numbers = [int(Path(s.where).name[:5]) for s in shots]
    assert [n // 8 for n in numbers] == [0, 1, 2, 3]
    assert min(eye_opening(s.landmarks) for s in shots) >= min(
        eye_opening(s.landmarks) for s in collect_shots(folder, EnrollOptions(num_shots=4, pick="even"), detector))
    with pytest.raises(UsageError):
        EnrollOptions(pick="worst")
