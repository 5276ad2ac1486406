"""Faces in, model inputs out: photos, landmarks, crops, smoothing, contour drawings, parsing.

Stages (each its own module):

- ``images``: ``load_image`` (any mode, bit depth, EXIF orientation) and tensor conversion.
- ``landmarks``: ``make_detector("auto"|"fan"|"dlib")`` -> ``LandmarkDetector.detect(image)
  -> list[Face]`` (68 points, largest face first); ``LandmarkTracker`` for video;
  ``detect_any_roll`` for faces rolled up to ±90°.
- ``crop``: VoxCeleb2-style square crops (``CropOptions``, ``crop_face`` -> ``FaceCrop`` with
  both 3x3 affines), one stable window per clip (``stable_crop_box``).
- ``smooth``: One-Euro, causal (``LandmarkSmoother``, live sources) or zero-lag
  (``LookaheadSmoother``, files).
- ``pose``: measures on 68 landmarks (roll, mouth and eye opening, yaw, ``neutral_cost``).
- ``contour``: the authors' landmark drawing, bit-exact (``ContourRenderer``, ``draw_contour``).
- ``parsing``: the 19-class face-parsing oracle and the authors' two-scale merge.
"""

from thead.faces.contour import ContourRenderer, draw_contour
from thead.faces.crop import (
    CropBox,
    CropOptions,
    FaceCrop,
    apply_affine,
    crop_face,
    crop_image,
    detect_and_crop,
    face_box,
    select_face,
    stable_crop_box,
)
from thead.faces.images import from_tensor, load_image, save_image, to_tensor
from thead.faces.landmarks import (
    DlibDetector,
    Face,
    FanDetector,
    LandmarkDetector,
    LandmarkTracker,
    detect_any_roll,
    make_detector,
)
from thead.faces.smooth import LandmarkSmoother, LookaheadSmoother, SmoothOptions

__all__ = [
    "ContourRenderer",
    "CropBox",
    "CropOptions",
    "DlibDetector",
    "Face",
    "FaceCrop",
    "FanDetector",
    "LandmarkDetector",
    "LandmarkSmoother",
    "LandmarkTracker",
    "LookaheadSmoother",
    "SmoothOptions",
    "apply_affine",
    "crop_face",
    "crop_image",
    "detect_and_crop",
    "detect_any_roll",
    "draw_contour",
    "face_box",
    "from_tensor",
    "load_image",
    "make_detector",
    "save_image",
    "select_face",
    "stable_crop_box",
    "to_tensor",
]
