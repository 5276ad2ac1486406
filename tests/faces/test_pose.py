"""Landmark measures on real frames: roll, mouth and eye opening, yaw, crossed lips, and faces
found at any roll."""

from __future__ import annotations

import numpy as np
import pytest

from thead.faces import load_image
from thead.faces.landmarks import detect_any_roll, turn_image
from thead.faces.pose import (
    eye_opening,
    inner_lip_gaps,
    mouth_opening,
    neutral_cost,
    roll_degrees,
    uncross_lips,
    yaw_asymmetry,
)


@pytest.fixture(scope="module")
def sample_landmarks(fsth_faces):
    return np.stack([faces[0].landmarks for faces in fsth_faces.values() if faces])


def test_measures_are_in_range_on_voxceleb_frames(sample_landmarks):
    lm = sample_landmarks
    # VoxCeleb2 talking heads: near upright, eyes mostly open, mouths closed to open
    assert np.median(np.abs(roll_degrees(lm))) < 10
    assert 0.2 < np.median(eye_opening(lm)) < 0.4
    assert np.percentile(mouth_opening(lm), 5) > -0.02 and 0.0 < np.median(mouth_opening(lm)) < 0.3  # (profiles cross)
    assert 0 <= yaw_asymmetry(lm).min() and yaw_asymmetry(lm).max() < 0.7  # 0 frontal .. ~0.5 profile
    # scalar in, scalar out; batch in, batch out
    assert np.ndim(mouth_opening(lm[0])) == 0 and mouth_opening(lm).shape == (len(lm),)


def test_measures_ignore_roll_and_scale(sample_landmarks):
    lm = sample_landmarks[:20].astype(np.float64)
    a = np.radians(70)
    turned = 2.5 * lm @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]).T + 300
    np.testing.assert_allclose(roll_degrees(turned), roll_degrees(lm) + 70, atol=1e-6)
    for measure in (mouth_opening, eye_opening, yaw_asymmetry, neutral_cost):
        np.testing.assert_allclose(measure(turned), measure(lm), atol=1e-9)


def test_neutral_cost_prefers_closed_mouths_and_open_eyes(sample_landmarks):
    lm = sample_landmarks
    cost = neutral_cost(lm)
    best, worst = lm[np.argmin(cost)], lm[np.argmax(cost)]
    assert mouth_opening(best) < 0.05 and eye_opening(best) > 0.2
    assert mouth_opening(worst) > mouth_opening(best) + 0.1 or eye_opening(worst) < 0.15
    opened = lm[0].copy()
    opened[[65, 66, 67]] += [0, 8]  # drop the lower inner lip
    assert neutral_cost(opened) > neutral_cost(lm[0])


def test_uncross_lips(sample_landmarks):
    lm = sample_landmarks[0].copy()
    assert inner_lip_gaps(lm).min() > -0.01
    np.testing.assert_array_equal(uncross_lips(lm), lm)  # apart already: unchanged
    crossed = lm.copy()
    crossed[[65, 66, 67]] -= [0, 6]  # lower lip 6 px above its place
    fixed = uncross_lips(crossed)
    assert inner_lip_gaps(crossed).min() < -0.05
    assert inner_lip_gaps(fixed).min() == pytest.approx(0, abs=1e-5)
    # they meet half way; nothing else moves
    others = [i for i in range(68) if i not in (61, 62, 63, 65, 66, 67)]
    np.testing.assert_array_equal(fixed[others], crossed[others])


@pytest.mark.parametrize("angle", [90.0, -90.0, 45.0, -60.0, 20.0])
def test_faces_are_found_at_any_roll(fsth_frames, detector, angle):
    frame = load_image(fsth_frames[0])
    truth = detector.detect(frame)[0].landmarks
    turned, back = turn_image(frame, angle)
    expected = (truth - back[:2, 2]) @ np.linalg.inv(back[:2, :2]).T
    faces = detect_any_roll(detector, turned, full=False)
    assert faces, angle
    err = np.linalg.norm(faces[0].landmarks - expected, axis=1).mean()
    # measured: 0 px for quarter turns (the same pixels), 1-3.2 px for 20°-60°
    assert err < 5.0, err
    assert roll_degrees(faces[0].landmarks) == pytest.approx(roll_degrees(truth) - angle, abs=8)
