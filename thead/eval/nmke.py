"""NMKE: normalised mean keypoint error between the generated and the ground-truth frame.

The LSR paper reports NMKE "as computed in" LPD / Bi-layer and its release has no code for it
(ref §7, §9.12). The two definitions, from the authors' public code:

- **Bi-layer** (Zakharov et al., ECCV 2020; ``saic-violet/bilayer-model``,
  ``losses/pose_matching.py``, reported as "normalized pose error"): 68 FAN landmarks on the
  result and on the ground truth; per frame, the mean over the 68 points of the Euclidean
  distance, divided by the distance between the **eye centres** of the ground truth (mean of
  points 36-41 and mean of 42-47, 0-based); averaged over frames.
- **LPD** (Burkov et al., CVPR 2020; ``shrubb/latent-pose-reenactment``,
  ``compute_pose_identity_error.py``, ``pose_reconstruction_error``): the same mean distance
  divided by the ground truth's **outer eye corner** distance (points 36 and 45), clipped
  below at 1e-2 px; averaged over all points and frames.

thead uses the Bi-layer definition by default (``eye_centers``; LSR is evaluated on the same
FSTH split as Bi-layer) and offers LPD's as ``outer_eye_corners``. Landmarks come from
``thead.faces`` (dlib offline, FAN when its weights can be had); the papers used FAN, so values with
dlib landmarks are comparable between methods scored here, not with the papers' tables.
"""

from __future__ import annotations

import numpy as np

from thead.eval.options import NMKENormalization

RIGHT_EYE = slice(36, 42)
LEFT_EYE = slice(42, 48)
OUTER_CORNERS = (36, 45)
MIN_SCALE_PX = 1e-2  # LPD's clip; only guards degenerate ground truth


def normalizing_distance(gt: np.ndarray, normalization: NMKENormalization = "eye_centers") -> np.ndarray:
    """Ground truth landmarks [..., 68, 2] -> the per-frame scale in pixels [...]."""
    gt = np.asarray(gt, np.float64)
    if normalization == "eye_centers":
        d = gt[..., LEFT_EYE, :].mean(-2) - gt[..., RIGHT_EYE, :].mean(-2)
    elif normalization == "outer_eye_corners":
        d = gt[..., OUTER_CORNERS[1], :] - gt[..., OUTER_CORNERS[0], :]
    else:
        raise ValueError(f"unknown NMKE normalization {normalization!r}")
    return np.maximum(np.linalg.norm(d, axis=-1), MIN_SCALE_PX)


def nmke(pred: np.ndarray, gt: np.ndarray, normalization: NMKENormalization = "eye_centers") -> np.ndarray:
    """Per-frame NMKE: mean_i ‖pred_i − gt_i‖₂ / scale(gt), for [..., 68, 2] arrays -> [...]."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.shape[-2:] != (68, 2):
        raise ValueError(f"NMKE needs two [..., 68, 2] arrays, got {pred.shape} and {gt.shape}")
    return np.linalg.norm(pred - gt, axis=-1).mean(-1) / normalizing_distance(gt, normalization)


class LandmarkError:
    """Landmarks on generated frames, scored against the ground truth's.

    Where the detector finds no face in a generated frame, the landmark predictor is run inside
    the ground truth's face box instead (dlib's shape predictor and FAN both accept a given
    box), so a broken result is measured, not dropped; ``fallbacks`` counts those frames.
    """

    def __init__(self, detector, normalization: NMKENormalization = "eye_centers"):
        self.detector = detector
        self.normalization = normalization
        self.fallbacks = 0

    def landmarks(self, image: np.ndarray, gt_box: np.ndarray) -> np.ndarray:
        faces = self.detector.detect(image)
        if faces:
            return faces[0].landmarks
        self.fallbacks += 1
        return self.detector.landmarks_in_box(image, gt_box).landmarks

    def __call__(self, fakes: list[np.ndarray], gt_landmarks: list[np.ndarray], gt_boxes: list[np.ndarray]) -> np.ndarray:
        pred = np.stack([self.landmarks(im, box) for im, box in zip(fakes, gt_boxes)])
        return nmke(pred, np.stack(gt_landmarks), self.normalization)
