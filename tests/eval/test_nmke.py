"""NMKE: the Bi-layer and LPD normalisations, and landmarks on real frames."""

from __future__ import annotations

import numpy as np
import pytest

from thead.eval.nmke import LandmarkError, nmke, normalizing_distance


def _face() -> np.ndarray:
    rng = np.random.default_rng(0)
    pts = rng.uniform(60, 160, size=(68, 2))
    pts[36:42] = [100, 100] + rng.normal(0, 2, (6, 2))  # right eye around (100, 100)
    pts[36:42] -= pts[36:42].mean(0) - [100, 100]
    pts[42:48] = [140, 103] + rng.normal(0, 2, (6, 2))  # left eye around (140, 103)
    pts[42:48] -= pts[42:48].mean(0) - [140, 103]
    return pts


def test_identical_landmarks_give_zero():
    gt = _face()
    assert nmke(gt, gt) == 0.0
    assert nmke(gt[None].repeat(3, 0), gt[None].repeat(3, 0)).shape == (3,)


def test_bilayer_normalisation_is_the_eye_centre_distance():
    gt = _face()
    assert normalizing_distance(gt) == pytest.approx(np.hypot(40, 3))  # centres (100,100), (140,103)
    shifted = gt + [3.0, 4.0]  # every point 5 px off
    assert nmke(shifted, gt) == pytest.approx(5.0 / np.hypot(40, 3))


def test_lpd_normalisation_is_the_outer_eye_corner_distance():
    gt = _face()
    corners = np.linalg.norm(gt[45] - gt[36])
    assert nmke(gt + [0.0, 2.0], gt, "outer_eye_corners") == pytest.approx(2.0 / corners)
    # the mean of point distances, not the distance of means
    pred = gt.copy()
    pred[0] += [68.0, 0.0]
    assert nmke(pred, gt, "outer_eye_corners") == pytest.approx(1.0 / corners)


def test_landmark_error_on_real_frames(frame, detector):
    face = detector.detect(frame)[0]
    scorer = LandmarkError(detector)
    same = scorer([frame], [face.landmarks], [face.box])
    assert same[0] == 0.0
    moved = np.zeros_like(frame)
    moved[:, 8:] = frame[:, :-8]  # the face moves 8 px right
    err = scorer([moved], [face.landmarks], [face.box])[0]
    assert err == pytest.approx(8.0 / normalizing_distance(face.landmarks), rel=0.35)
    # no face in the result: landmarks are taken in the ground truth's box, and counted
    assert np.isfinite(scorer([np.zeros_like(frame)], [face.landmarks], [face.box])[0])
    assert scorer.fallbacks == 1
