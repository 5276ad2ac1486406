"""Square face crops framed like VoxCeleb2's, from photos and videos of any size.

The networks were trained on VoxCeleb2's 224x224 crops (ref §1.1), and the authors' model is
sensitive to framing (their issue #1). thead measures that framing on real VoxCeleb2 frames
and reproduces it for any input: the crop's side and centre follow from the face's landmarks.
Every crop keeps its 3x3 affine both ways (``to_frame``: crop pixels -> frame pixels,
``from_frame``: the inverse) so results can be pasted back exactly.

Pixel convention as in ``landmarks``: pixel ``i`` is centred at ``i`` and spans [i-0.5, i+0.5].
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from thead.errors import NoFaceError, UsageError
from thead.faces.landmarks import Face, LandmarkDetector

# VoxCeleb2 framing, measured with the dlib backend on the 192 sample frames of the FSTH eval
# subset (lsr-sample/fsth_eval_subset, 3 identities x 64 frames, each VoxCeleb2's own 224x224
# crop): the side of the landmarks' bounding square is 0.567 of the frame side (median;
# p10-p90 0.536-0.598; per identity 0.545-0.585), and the frame centre lies 0.103 of that side
# below the square's centre (median; p10-p90 0.073-0.164). The horizontal offset measured
# -0.008 (p10-p90 -0.045..0.032), i.e. none: faces are centred left-right.
FACE_FRACTION = 0.567
CENTRE_BELOW_FACE = 0.103
CROP_SIZE = 224
PAD_MODES = ("blur", "edge", "black")


# A crop side of 0.25x-4x the VoxCeleb2 framing: beyond that the face is a few pixels or the
# crop a whole-frame upscale, and a huge scale would allocate a huge padded canvas.
MIN_CROP_SCALE, MAX_CROP_SCALE = 0.25, 4.0


@dataclass(frozen=True)
class CropOptions:
    """How to frame a face.

    scale: multiplies the crop side (>1 shows more background, the face gets smaller).
    offset_x, offset_y: move the crop window by this fraction of its side (positive = right /
        down, so the face moves left / up inside the crop).
    face_index: which face when there are several, 0 = the largest, 1 = the next, ...
    min_face_px: warn when the face (landmarks' bounding square) is smaller than this in the
        source, since the crop is then an upscale and will look soft.
    pad: how to fill where the crop window leaves the image: ``blur`` (default: the picture
        mirrored across its edge and blurred more the further out, like the out-of-focus
        background VoxCeleb2 crops show there), ``edge`` (repeat the border pixels: streaks) or
        ``black``.
    size: output side in pixels (the networks take 224).
    """

    scale: float = 1.0
    offset_x: float = 0.0
    offset_y: float = 0.0
    face_index: int = 0
    min_face_px: int = 64
    pad: Literal["blur", "edge", "black"] = "blur"
    size: int = CROP_SIZE

    def __post_init__(self):
        if not (MIN_CROP_SCALE <= self.scale <= MAX_CROP_SCALE):  # NaN fails too
            raise UsageError(f"crop scale must be between {MIN_CROP_SCALE} and {MAX_CROP_SCALE}, got {self.scale}")
        if self.face_index < 0:
            raise UsageError(f"face index must be 0 or more, got {self.face_index}")
        if self.pad not in PAD_MODES:
            raise UsageError(f"crop padding must be one of {', '.join(PAD_MODES)}, got {self.pad!r}")
        if self.size < 8:
            raise UsageError(f"crop size must be at least 8 px, got {self.size}")


@dataclass(frozen=True)
class CropBox:
    """A square window in frame pixels: centre ``(cx, cy)`` and ``side`` (continuous, pixel
    centres at integers; the window spans ``cx ± side/2``), turned ``angle_deg`` clockwise on
    screen (0 for upright faces; a rolled face's crop turns with it, so the crop is upright)."""

    cx: float
    cy: float
    side: float
    angle_deg: float = 0.0

    def from_frame(self, size: int = CROP_SIZE) -> np.ndarray:
        """3x3 affine: frame pixel (x, y, 1) -> crop pixel, for a ``size``-pixel crop."""
        k = size / self.side
        # crop u spans [-0.5, size-0.5] <-> frame x in [cx - side/2, cx + side/2] along the
        # window's own axes (x: (cos a, sin a), y: (-sin a, cos a) in frame pixels)
        a = math.radians(self.angle_deg)
        c, s = math.cos(a), math.sin(a)
        linear = k * np.array([[c, s], [-s, c]])
        t = np.array([size / 2 - 0.5, size / 2 - 0.5]) - linear @ [self.cx, self.cy]
        return np.array([[linear[0, 0], linear[0, 1], t[0]], [linear[1, 0], linear[1, 1], t[1]], [0.0, 0.0, 1.0]])

    def to_frame(self, size: int = CROP_SIZE) -> np.ndarray:
        """3x3 affine: crop pixel (u, v, 1) -> frame pixel."""
        return np.linalg.inv(self.from_frame(size))


@dataclass(frozen=True, eq=False)
class FaceCrop:
    """A face crop and how it maps back.

    image: uint8 [size, size, 3] RGB.
    landmarks: float32 [68, 2] in crop pixels.
    to_frame / from_frame: 3x3 float64 affines between crop and source-frame pixels.
    box: the crop window in the source frame.
    face: the detected face in source-frame pixels.
    """

    image: np.ndarray
    landmarks: np.ndarray
    to_frame: np.ndarray
    from_frame: np.ndarray
    box: CropBox
    face: Face


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map float [N, 2] points through a 3x3 affine."""
    pts = np.asarray(points, np.float64)
    return (pts @ matrix[:2, :2].T + matrix[:2, 2]).astype(np.float32)


def face_box(face: Face, options: CropOptions = CropOptions(), angle_deg: float = 0.0) -> CropBox:
    """The VoxCeleb2-style crop window for one face (see FACE_FRACTION, CENTRE_BELOW_FACE),
    measured along axes turned ``angle_deg`` clockwise (0: the frame's own axes)."""
    a = math.radians(angle_deg)
    axes = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])  # rows: window x, y
    pts = np.asarray(face.landmarks, np.float64) @ axes.T  # landmarks in the window's axes
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    face_side = float((hi - lo).max())
    side = face_side / FACE_FRACTION * options.scale
    centre = np.array([(lo[0] + hi[0]) / 2 + options.offset_x * side,
                       (lo[1] + hi[1]) / 2 + CENTRE_BELOW_FACE * face_side + options.offset_y * side])
    cx, cy = axes.T @ centre  # back to frame axes
    return CropBox(float(cx), float(cy), side, float(angle_deg))


def stable_crop_box(faces: Sequence[Face | None], options: CropOptions = CropOptions(), angle_deg: float = 0.0) -> CropBox:
    """One crop window for a whole clip: the per-frame windows' median centre and side, turned
    by ``angle_deg`` (the clip's roll, for sideways clips; 0 keeps VoxCeleb2's upright frames).

    Frames without a face (None) are ignored. A single window means no frame-to-frame jitter
    of the crop itself; the median ignores the odd misdetection. Raises ``NoFaceError`` when no
    frame has a face.
    """
    boxes = np.array([[b.cx, b.cy, b.side] for b in (face_box(f, options, angle_deg) for f in faces if f is not None)])
    if len(boxes) == 0:
        raise NoFaceError("no face found in any frame of the clip")
    cx, cy, side = np.median(boxes, axis=0)
    return CropBox(float(cx), float(cy), float(side), float(angle_deg))


def _pad(region: np.ndarray, pads: tuple, mode: str) -> np.ndarray:
    """``region`` grown by ``pads`` ((top, bottom), (left, right), (0, 0)) filled per ``mode``.

    ``blur``: the picture mirrored across its edges (np.pad "symmetric", repeated where the pad
    is wider than the picture), then a Gaussian blur whose radius grows with the distance from
    the picture, mixed in only outside it: texture and colour continue, with no streaks and no
    hard seam, and the far padding reads as out-of-focus background.
    """
    if mode == "black":
        return np.pad(region, pads)
    if mode == "edge":
        return np.pad(region, pads, mode="edge")
    from PIL import ImageFilter

    (top, bottom), (left, right), _ = pads
    h, w = region.shape[:2]
    out = np.pad(region, pads, mode="symmetric")
    widest = max(top, bottom, left, right)
    blurred = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(max(2.0, min(h, w) / 16))))
    ys = np.maximum(np.maximum(top - np.arange(out.shape[0]), np.arange(out.shape[0]) - (top + h - 1)), 0)
    xs = np.maximum(np.maximum(left - np.arange(out.shape[1]), np.arange(out.shape[1]) - (left + w - 1)), 0)
    reach = max(min(widest, min(h, w) / 8), 1.0)
    # The blur is mixed in only outside the picture (inside, the mix is 0 and the picture stays
    # as it is), so only the four bands of padding are computed.
    bands = ((slice(0, top), slice(None)), (slice(top + h, None), slice(None)),
             (slice(top, top + h), slice(0, left)), (slice(top, top + h), slice(left + w, None)))
    for rows, cols in bands:
        ramp = np.clip(np.maximum(ys[rows][:, None], xs[cols][None, :]).astype(np.float32) / reach, 0.0, 1.0)[..., None]
        picture = out[rows, cols]
        out[rows, cols] = np.clip(picture + ramp * (blurred[rows, cols].astype(np.float32) - picture) + 0.5, 0, 255).astype(np.uint8)
    return out


def crop_image(image: np.ndarray, box: CropBox, size: int = CROP_SIZE, pad: str = "blur") -> np.ndarray:
    """Resample the window ``box`` of ``image`` to ``size`` x ``size`` (PIL Lanczos, which
    antialiases when shrinking; a turned window is shrunk with Lanczos, then turned with
    bicubic); parts outside the image are filled per ``pad`` (``CropOptions.pad``)."""
    if box.angle_deg % 360:
        return _crop_turned(image, box, size, pad)
    h, w = image.shape[:2]
    # PIL boxes use corner coordinates (pixel i spans [i, i+1)): corner = centre + 0.5.
    left, top = box.cx - box.side / 2 + 0.5, box.cy - box.side / 2 + 0.5
    # Take only the region the filter reads (Lanczos support: 3 source px per output px when
    # shrinking), padded, so huge photos are never copied whole.
    margin = 3 * max(box.side / size, 1.0) + 2
    x0, y0 = math.floor(left - margin), math.floor(top - margin)
    x1, y1 = math.ceil(left + box.side + margin), math.ceil(top + box.side + margin)
    region = image[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)]
    pads = ((max(-y0, 0), max(y1 - h, 0)), (max(-x0, 0), max(x1 - w, 0)), (0, 0))
    if region.size == 0:  # the window misses the image entirely
        region = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    elif any(p for ax in pads for p in ax):
        region = _pad(region, pads, pad)
    resized = Image.fromarray(np.ascontiguousarray(region)).resize(
        (size, size), Image.Resampling.LANCZOS, box=(left - x0, top - y0, left - x0 + box.side, top - y0 + box.side)
    )
    return np.asarray(resized)


def _crop_turned(image: np.ndarray, box: CropBox, size: int, pad: str) -> np.ndarray:
    """``crop_image`` for a turned window: the upright square holding it is cropped at the same
    scale (Lanczos), then turned about its centre (bicubic) and its middle kept; a quarter
    turn is the upright crop's pixels turned (exact, and as cheap as an upright crop)."""
    quarter = box.angle_deg / 90.0
    if quarter == round(quarter):
        upright = crop_image(image, CropBox(box.cx, box.cy, box.side), size, pad)
        return np.ascontiguousarray(np.rot90(upright, int(round(quarter)) % 4))
    outer = box.side * (abs(math.cos(math.radians(box.angle_deg))) + abs(math.sin(math.radians(box.angle_deg))))
    big = int(math.ceil(size * outer / box.side)) + 4
    big += (big - size) % 2  # the kept middle starts on a whole pixel
    upright = crop_image(image, CropBox(box.cx, box.cy, box.side * big / size), big, pad)
    # Image.rotate turns counter-clockwise on screen; the window is turned clockwise by angle.
    turned = Image.fromarray(upright).rotate(box.angle_deg, Image.Resampling.BICUBIC, center=(big / 2, big / 2))
    lo = (big - size) // 2
    return np.asarray(turned.crop((lo, lo, lo + size, lo + size)))


def crop_face(image: np.ndarray, face: Face, options: CropOptions = CropOptions(), box: CropBox | None = None) -> FaceCrop:
    """Crop ``face`` from ``image`` (uint8 HxWx3) framed as VoxCeleb2 frames are.

    ``box`` overrides the window (e.g. a clip's ``stable_crop_box``). Warns when the face is
    smaller than ``options.min_face_px``.
    """
    if face.size_px < options.min_face_px:
        warnings.warn(
            f"the face is only {face.size_px:.0f} px tall (< {options.min_face_px}); the crop is an upscale "
            "and will look soft",
            stacklevel=2,
        )
    box = face_box(face, options) if box is None else box
    from_frame = box.from_frame(options.size)
    return FaceCrop(
        image=crop_image(image, box, options.size, options.pad),
        landmarks=apply_affine(from_frame, face.landmarks),
        to_frame=box.to_frame(options.size),
        from_frame=from_frame,
        box=box,
        face=face,
    )


def select_face(faces: Sequence[Face], options: CropOptions = CropOptions(), what: str = "the image") -> tuple[Face, str | None]:
    """Pick ``options.face_index`` among faces sorted largest first.

    Returns the face and a one-line note when there was a choice (to show the user), else None.
    Raises ``NoFaceError`` when there is no face and ``UsageError`` for an index out of range.
    """
    if not faces:
        raise NoFaceError(f"no face found in {what}")
    if options.face_index >= len(faces):
        raise UsageError(f"face index {options.face_index} asked, but {what} has {len(faces)} face(s)")
    face = faces[options.face_index]
    note = None
    if len(faces) > 1:
        x0, y0 = (int(v) for v in face.box[:2])
        rank = "the largest" if options.face_index == 0 else f"face {options.face_index}"
        note = (
            f"{len(faces)} faces in {what}; using {rank} (box at x={x0}, y={y0}, {face.size_px:.0f} px); "
            "choose another with --face N (0 = largest)"
        )
    return face, note


def detect_and_crop(
    image: np.ndarray, detector: LandmarkDetector, options: CropOptions = CropOptions(), what: str = "the image"
) -> tuple[FaceCrop, str | None]:
    """Detect, pick the face (``select_face``) and crop it; returns the crop and the note."""
    face, note = select_face(detector.detect(image), options, what)
    return crop_face(image, face, options), note
