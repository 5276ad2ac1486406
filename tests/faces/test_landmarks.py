"""Landmark detection on the real sample frames (dlib backend; FAN is an optional extra)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thead.errors import NoFaceError, UsageError
from thead.faces import CropOptions, DlibDetector, LandmarkTracker, detect_and_crop, load_image, make_detector, select_face
from thead.faces import landmarks as lm_mod


def test_dlib_detects_at_least_97_percent_of_the_sample_frames(fsth_faces):
    found = sum(bool(faces) for faces in fsth_faces.values())
    assert found / len(fsth_faces) >= 0.97, f"{found}/{len(fsth_faces)}"


def test_landmarks_are_68_points_in_ibug_order(fsth_faces):
    for faces in fsth_faces.values():
        for face in faces[:1]:
            pts = face.landmarks
            assert pts.shape == (68, 2) and pts.dtype == np.float32
            assert ((pts >= -20) & (pts <= 244)).all()
            # iBUG-68: the subject's right eye (36-41) is on the image's left; brows above
            # eyes, eyes above the nose tip, nose above the mouth, chin (8) below the jaw's ends.
            assert pts[36:42, 0].mean() < pts[42:48, 0].mean()
            assert pts[17:27, 1].mean() < pts[36:48, 1].mean() < pts[30, 1] < pts[48:68, 1].mean()
            assert pts[8, 1] > max(pts[0, 1], pts[16, 1])


def test_landmarks_are_in_image_pixels(fsth_frames, detector):
    # Pixel convention: padding the image by (dx, dy) and moving the box with it moves every
    # landmark by exactly (dx, dy).
    image = load_image(fsth_frames[0])
    face = detector.detect(image)[0]
    for dx, dy in ((6, 3), (32, 16), (74, 37)):
        padded = np.pad(image, ((dy, 0), (dx, 0), (0, 0)), mode="edge")
        moved = detector.landmarks_in_box(padded, face.box + np.array([dx, dy, dx, dy]))
        np.testing.assert_array_equal(moved.landmarks, face.landmarks + np.array([dx, dy], np.float32))


def test_several_faces_largest_first_and_selectable(fsth_frames, detector):
    frame = load_image(fsth_frames[0])
    canvas = np.full((400, 700, 3), 120, np.uint8)
    canvas[100:324, 20:244] = frame
    canvas[50:200, 400:550] = np.asarray(Image.fromarray(frame).resize((150, 150), Image.Resampling.LANCZOS))
    faces = detector.detect(canvas)
    assert len(faces) == 2
    assert faces[0].box[0] < 244 < faces[1].box[0]  # the big copy first
    face, note = select_face(faces)
    assert face is faces[0] and "2 faces" in note and "largest" in note
    face, note = select_face(faces, CropOptions(face_index=1))
    assert face is faces[1] and "face 1" in note
    with pytest.raises(UsageError, match="has 2 face"):
        select_face(faces, CropOptions(face_index=2))


def test_no_face_is_an_error_for_a_photo(detector):
    blank = np.full((300, 200, 3), 128, np.uint8)
    assert detector.detect(blank) == []
    with pytest.raises(NoFaceError, match="no face found in the photo"):
        detect_and_crop(blank, detector, what="the photo")


def test_tracker_follows_the_clip(sample_dir, detector):
    from tests.faces.conftest import decode_clip

    frames = decode_clip(next((sample_dir / "test_videos" / "id00081/vvLu_7TpP8c").glob("*.mp4")))[:60]
    tracker = LandmarkTracker(detector)
    tracked = [tracker(f) for f in frames]
    assert all(f is not None for f in tracked)  # profile frames HOG misses are re-fitted
    # Where HOG finds the face, tracking gives exactly the detector's landmarks.
    same = 0
    for frame, face in zip(frames[:20], tracked[:20]):
        rects, _, _ = detector._hog.run(frame, 0, 0.0)
        if len(rects) == 1:
            np.testing.assert_array_equal(face.landmarks, detector.detect(frame)[0].landmarks)
            same += 1
    assert same >= 10
    assert tracker(np.full((224, 224, 3), 128, np.uint8)).score == 0.0  # coasts over a blank frame


def test_auto_falls_back_to_dlib_and_says_so_once(monkeypatch):
    monkeypatch.setattr(lm_mod, "fan_available", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detector = make_detector("auto")
    assert isinstance(detector, DlibDetector)
    assert "face-alignment is not installed" in detector.note and "using dlib" in detector.note
    assert len(caught) == 1 and str(caught[0].message) == detector.note
    assert make_detector("dlib").note is None


def test_auto_uses_fan_when_cached_or_downloadable(monkeypatch, tmp_path):
    import torch.hub

    monkeypatch.setattr(lm_mod, "fan_available", lambda: True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    monkeypatch.setenv("THEAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("THEAD_OFFLINE", "1")  # not cached, not downloadable: dlib, with the reason
    note = lm_mod.auto_fallback_note()
    assert "not downloaded and downloads are off" in note and "using dlib" in note
    for asset in (lm_mod.FAN_2D, lm_mod.FAN_S3FD):  # in thead's cache: FAN
        asset.cached_path().parent.mkdir(parents=True, exist_ok=True)
        asset.cached_path().touch()
    assert lm_mod.auto_fallback_note() is None
    lm_mod.FAN_2D.cached_path().unlink()
    (tmp_path / "torch" / "checkpoints").mkdir(parents=True)  # or in face-alignment's own
    (tmp_path / "torch" / "checkpoints" / "2DFAN4-11f355bf06.pth.tar").touch()
    (tmp_path / "torch" / "checkpoints" / "s3fd-619a316812.pth").touch()
    assert lm_mod.auto_fallback_note() is None
    monkeypatch.delenv("THEAD_OFFLINE")  # downloadable (a host that answers): FAN
    shutil.rmtree(tmp_path / "torch")
    monkeypatch.setattr(lm_mod, "fan_weights_downloadable", lambda: None)
    assert lm_mod.auto_fallback_note() is None


def test_fan_without_face_alignment_is_a_usage_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "face_alignment", None)  # a trimmed install
    with pytest.raises(UsageError, match="pip install face-alignment"):
        make_detector("fan")


def test_unknown_backend():
    with pytest.raises(UsageError, match="auto, fan or dlib"):
        make_detector("mediapipe")


def test_fan_backend_plumbing_with_a_stand_in(monkeypatch, fsth_frames, detector):
    # FAN's weights cannot be downloaded here: a stand-in module returning known landmarks in
    # face-alignment's formats checks thead's side of the interface.
    import sys
    import types

    frames = [load_image(p) for p in fsth_frames[:3]]
    truth = [detector.detect(f)[0] for f in frames]
    calls = {}

    class FakeFA:
        def __init__(self, kind, flip_input, device, face_detector_kwargs, compile):
            calls["init"] = (kind, flip_input, device, face_detector_kwargs, compile)

        def _index(self, image):
            return next(i for i, f in enumerate(frames) if np.array_equal(f, image))

        def get_landmarks_from_image(self, image, detected_faces=None, return_bboxes=False):
            i = self._index(np.asarray(image))
            pts = [np.c_[truth[i].landmarks, np.zeros(68)]]  # FAN may carry a third column
            boxes = [np.r_[truth[i].box, 0.99]]
            return (pts, None, boxes) if return_bboxes else pts

        def get_landmarks_from_batch(self, batch, return_bboxes=False):
            imgs = [b.permute(1, 2, 0).numpy() for b in batch]
            out = [self.get_landmarks_from_image(im, return_bboxes=True) for im in imgs]
            # per image: all faces' points concatenated to [n*68, 2], as face-alignment does
            return [np.concatenate(o[0]) for o in out], None, [o[2] for o in out]

    fake = types.ModuleType("face_alignment")
    fake.LandmarksType = types.SimpleNamespace(TWO_D=1)
    fake.FaceAlignment = FakeFA
    monkeypatch.setitem(sys.modules, "face_alignment", fake)
    weights = (Path("/cache/fan/2DFAN4.pth.tar"), Path("/cache/fan/s3fd.pth"))
    monkeypatch.setattr(lm_mod, "_fan_weights", lambda: weights)
    fan = make_detector("fan", device="cpu")
    assert fan.name == "fan" and calls["init"] == (1, False, "cpu", {"path_to_detector": str(weights[1])}, False)
    for faces, want in zip(fan.detect_batch(frames), truth):
        (face,) = faces
        np.testing.assert_array_equal(face.landmarks, want.landmarks)
        assert face.landmarks.shape == (68, 2) and face.score == pytest.approx(0.99)
    np.testing.assert_array_equal(fan.detect(frames[1])[0].landmarks, truth[1].landmarks)
