"""Motion: similarity fit, relative/absolute transfer, drivers, templates, synthetic motion."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from thead.demo import synthetic_motion
from thead.errors import NoFaceError, UsageError, VideoError
from thead.motion import (
    DriverOptions,
    MotionError,
    MotionTemplate,
    MotionTransfer,
    extract_motion,
    fit_similarity,
    open_driver,
)

CLIP_17 = "test_videos/id00017/OLguY5ofUrY/00039.mp4"


@pytest.fixture(scope="module")
def clip_motion(sample_dir, detector):
    """The first 30 frames of a real clip: (template, missing)."""
    return extract_motion(sample_dir / CLIP_17, options=DriverOptions(max_frames=30), detector=detector)


def _similar(points, scale, angle, shift):
    c, s = math.cos(angle), math.sin(angle)
    return (points @ (scale * np.array([[c, -s], [s, c]])).T + shift).astype(np.float32)


def test_fit_similarity_recovers_a_known_transform(clip_motion):
    src = clip_motion[0].landmarks[0]
    dst = _similar(src, 1.7, 0.3, [12.0, -5.0])
    m = fit_similarity(src, dst)
    assert np.allclose(src @ m[:2, :2].T + m[:2, 2], dst, atol=1e-3)
    assert math.isclose(np.linalg.det(m[:2, :2]), 1.7**2, rel_tol=1e-5)


def test_relative_motion_moves_the_avatars_own_face(clip_motion, sample_dir):
    driver = clip_motion[0].landmarks
    # An avatar with another face shape: the driver's first frame, narrowed by 20% and moved.
    avatar = driver[0] * [0.8, 1.0] + [20.0, 10.0]
    rel = MotionTransfer(avatar, "relative")
    assert np.allclose(rel(driver[0]), avatar, atol=1e-4)  # the reference frame is the avatar itself
    # A driver that only moves 6 px right and 3 px down moves the avatar by the fitted scale.
    moved = rel(driver[0] + [6.0, 3.0])
    shift = (moved - avatar).mean(0)
    linear = fit_similarity(driver[0], avatar)[:2, :2]  # driver -> avatar scale and rotation
    assert np.allclose(moved - avatar, shift, atol=1e-3) and np.allclose(shift, linear @ [6.0, 3.0], atol=1e-3)
    # Expression moves (later frames) keep the avatar's width, not the driver's.
    for d in driver[1:]:
        out = rel(d)
        assert abs(np.ptp(out[:, 0]) - np.ptp(avatar[:, 0])) < 0.5 * abs(np.ptp(d[:, 0]) - np.ptp(avatar[:, 0])) + 2
    absolute = MotionTransfer(avatar, "absolute")
    assert np.array_equal(absolute(driver[5]), driver[5])
    aligned = MotionTransfer(avatar, "relative", align=True)(_similar(driver[0], 0.5, 0.2, [3, 4]))
    assert np.abs(aligned.mean(0) - avatar.mean(0)).max() < 1e-3  # placed on the avatar
    with pytest.raises(UsageError, match="unknown motion mode"):
        MotionTransfer(avatar, "sideways")


def test_extract_real_clip(clip_motion):
    template, missing = clip_motion
    assert template.num_frames == 30 and template.fps == Fraction(25) and template.crop_size == 224
    assert missing == 0 and template.face_found.all()
    lm = template.landmarks
    assert lm.dtype == np.float32 and lm.min() > 0 and lm.max() < 224
    # smoothed: frame-to-frame jitter is small compared with the face (a talking head, 25 fps)
    assert np.abs(np.diff(lm, axis=0)).mean() < 3


def test_template_round_trip_holds_no_pixels(tmp_path, clip_motion):
    template, _ = clip_motion
    path = template.save(tmp_path / "m.npz")
    with np.load(path) as z:
        assert set(z.files) == {"format", "format_version", "landmarks", "face_found", "fps", "num_frames", "crop_size", "onto", "reference", "reference_index"}
        assert all(z[k].size <= 30 * 68 * 2 for k in z.files)  # nothing image-sized
    back = MotionTemplate.load(path)
    assert np.array_equal(back.landmarks, template.landmarks) and back.fps == template.fps
    assert np.array_equal(back.face_found, template.face_found)
    driver = open_driver(path)
    assert driver.kind == "motion" and driver.num_frames == 30 and not driver.has_audio
    frames = list(driver)
    assert [f.index for f in frames] == list(range(30)) and frames[0].image is None


def test_bad_templates(tmp_path, clip_motion):
    template, _ = clip_motion
    with pytest.raises(UsageError, match=r"\.npz"):
        template.save(tmp_path / "m.json")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(MotionError, match="junk.npz is not a readable motion template"):
        MotionTemplate.load(junk)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(MotionError, match="not a readable motion template"):
        MotionTemplate.load(tmp_path / "other.npz")
    faceless = MotionTemplate(template.landmarks, np.zeros(30, bool), template.fps)
    faceless.save(tmp_path / "faceless.npz")
    with pytest.raises(NoFaceError, match="no frame with a face"):
        open_driver(tmp_path / "faceless.npz")
    with pytest.raises(VideoError, match="does not exist"):
        open_driver(tmp_path / "missing.mp4")


def test_video_without_any_face(tmp_path, detector):
    from skimage import data

    from thead.video import VideoWriter

    path = tmp_path / "coffee.mp4"
    image = np.ascontiguousarray(data.coffee()[:224, :224])
    with VideoWriter(path, Fraction(25), (224, 224)) as w:
        for _ in range(5):
            w.write(image)
    driver = open_driver(path, detector=detector)
    with pytest.raises(NoFaceError, match="no face found in the driver"):
        list(driver)


def test_synthetic_motion(clip_motion):
    base = clip_motion[0].landmarks[0]
    m = synthetic_motion(base, seconds=4.0, fps=25)
    assert m.num_frames == 100 and m.fps == 25 and m.face_found.all()
    assert np.allclose(m.landmarks[0], base, atol=1e-3)
    lm = m.landmarks
    eye_gap = np.linalg.norm(lm[:, 37] - lm[:, 41], axis=1)
    mouth_gap = lm[:, 66, 1] - lm[:, 62, 1]
    nose_x = lm[:, 30, 0] - lm[:, 27:36].mean(1)[:, 0]
    assert eye_gap.min() < 0.4 * eye_gap[0]  # blinks close the eyes
    assert mouth_gap[50:].max() > mouth_gap[0] + 5  # speech in the second half
    assert np.allclose(mouth_gap[:45], mouth_gap[0], atol=0.5)  # mouth still in the first half
    assert np.ptp(lm[:25, 30, 1] - lm[:25, 8, 1]) > 2  # the nod changes nose-to-chin height
    assert np.ptp(nose_x[25:75]) > 3  # the turn moves the nose sideways
