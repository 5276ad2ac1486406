"""Measures read off 68 iBUG landmarks: in-plane roll, mouth and eye opening, yaw.

All are in the face's own frame (the eye line is its x axis), so they hold for a face rolled
by any angle, and in units of the inter-ocular distance, so they hold at any scale. They rank
frames (a neutral reference for relative motion, enrolment shots); they are not a head-pose
estimator.
"""

from __future__ import annotations

import numpy as np

# iBUG-68 indices: eyes 36-41 (subject's right, image left) and 42-47; inner lips 60-67, the
# upper inner lip 61-63 facing the lower 67-65.
RIGHT_EYE = slice(36, 42)
LEFT_EYE = slice(42, 48)
UPPER_INNER_LIP = [61, 62, 63]
LOWER_INNER_LIP = [67, 66, 65]
NOSE_TIP = 30
JAW_LEFT, JAW_RIGHT = 0, 16


def _as_batch(landmarks: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks, np.float64)
    return lm[None] if lm.ndim == 2 else lm


def face_axes(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x axis [N, 2] along the eye line, y axis [N, 2] pointing down the face, inter-ocular
    distance [N]) for landmarks [68, 2] or [N, 68, 2]."""
    lm = _as_batch(landmarks)
    eyes = lm[:, LEFT_EYE].mean(1) - lm[:, RIGHT_EYE].mean(1)
    iod = np.maximum(np.linalg.norm(eyes, axis=-1), 1e-6)
    x = eyes / iod[:, None]
    y = np.stack([-x[:, 1], x[:, 0]], axis=-1)  # x turned +90° in image coordinates (y down)
    return x, y, iod


def roll_degrees(landmarks: np.ndarray) -> np.ndarray:
    """In-plane rotation of the eye line, degrees, positive = clockwise on screen; [N] (or a
    scalar for one face)."""
    x, _, _ = face_axes(landmarks)
    out = np.degrees(np.arctan2(x[:, 1], x[:, 0]))
    return out[0] if np.ndim(landmarks) == 2 else out


def inner_lip_gaps(landmarks: np.ndarray) -> np.ndarray:
    """Lower minus upper inner lip along the face's down axis, for the three facing pairs, in
    inter-ocular distances: [N, 3] (negative = the lips cross)."""
    lm = _as_batch(landmarks)
    _, y, iod = face_axes(lm)
    d = lm[:, LOWER_INNER_LIP] - lm[:, UPPER_INNER_LIP]
    return (d * y[:, None]).sum(-1) / iod[:, None]


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """Mean inner-lip gap in inter-ocular distances ([N]; about 0 closed, 0.3-0.6 wide open)."""
    out = inner_lip_gaps(landmarks).mean(-1)
    return out[0] if np.ndim(landmarks) == 2 else out


def eye_opening(landmarks: np.ndarray) -> np.ndarray:
    """Eye aspect ratio (Soukupová & Čech 2016), the smaller of the two eyes: lid distance over
    eye width; about 0.25-0.35 open, below ~0.15 closed. [N] (or a scalar)."""
    lm = _as_batch(landmarks)

    def ear(eye: np.ndarray) -> np.ndarray:
        lids = np.linalg.norm(eye[:, 1] - eye[:, 5], axis=-1) + np.linalg.norm(eye[:, 2] - eye[:, 4], axis=-1)
        return lids / np.maximum(2 * np.linalg.norm(eye[:, 0] - eye[:, 3], axis=-1), 1e-6)

    out = np.minimum(ear(lm[:, RIGHT_EYE]), ear(lm[:, LEFT_EYE]))
    return out[0] if np.ndim(landmarks) == 2 else out


def yaw_asymmetry(landmarks: np.ndarray) -> np.ndarray:
    """How far the nose tip sits from the middle of the jaw's ends along the eye line, as a
    fraction of the jaw width: 0 frontal, about 0.5 in profile. [N] (or a scalar)."""
    lm = _as_batch(landmarks)
    x, _, _ = face_axes(lm)
    left, right = (lm[:, JAW_LEFT] * x).sum(-1), (lm[:, JAW_RIGHT] * x).sum(-1)
    nose = (lm[:, NOSE_TIP] * x).sum(-1)
    out = np.abs(nose - (left + right) / 2) / np.maximum(np.abs(right - left), 1e-6)
    return out[0] if np.ndim(landmarks) == 2 else out


def neutral_cost(landmarks: np.ndarray) -> np.ndarray:
    """How far a face is from a neutral reference (lower is better): an open mouth, closed
    eyes and a turned head each add. [N] (or a scalar).

    Weights: the mouth dominates (crossed lips come from an open reference mouth); eyes count
    once they close past an aspect ratio of 0.2; yaw beyond 0.1 of the jaw width.
    """
    mouth = np.abs(mouth_opening(landmarks))
    eyes = np.maximum(0.2 - eye_opening(landmarks), 0.0)
    yaw = np.maximum(yaw_asymmetry(landmarks) - 0.1, 0.0)
    return mouth + 2.0 * eyes + 0.5 * yaw


def uncross_lips(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks [68, 2] whose inner lips cross (the lower above the upper along the face's down
    axis) moved to meet at their midpoint; others unchanged. Returns float32 [68, 2]."""
    lm = np.asarray(landmarks, np.float64).copy()
    _, y, iod = face_axes(lm)
    y, iod = y[0], iod[0]
    gaps = inner_lip_gaps(lm)[0] * iod
    for upper, lower, gap in zip(UPPER_INNER_LIP, LOWER_INNER_LIP, gaps):
        if gap < 0:
            lm[upper] += 0.5 * gap * y
            lm[lower] -= 0.5 * gap * y
    return lm.astype(np.float32)
