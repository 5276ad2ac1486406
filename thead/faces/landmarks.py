"""68-point facial landmarks behind one interface, with two backends.

- ``FanDetector``: face-alignment's FAN 2D (what the authors used, ref §1.3); a core
  dependency, imported lazily; its weights come through ``thead.download``; batched, on CUDA
  when asked.
- ``DlibDetector``: dlib's HOG detector (upsample 0, then 1) with the CNN (MMOD) detector as
  fallback, and the 68-point shape predictor from ``face_recognition_models``. Works offline.

Both give the iBUG-300W 68-point order (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, lips
48-67) in the same pixel convention: x right, y down, pixel centres at integer coordinates
(the convention of the authors' matplotlib drawing, where ``imshow`` puts pixel ``i`` at ``i``).
Both libraries return whole-pixel coordinates, so the two agree without any shift.
"""

from __future__ import annotations

import importlib.util
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from thead.download import Asset
from thead.errors import UsageError, WeightsError

NUM_LANDMARKS = 68
DetectorKind = Literal["auto", "fan", "dlib"]


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    box: float32 [4] ``x0, y0, x1, y1`` in image pixels (the detector's box).
    landmarks: float32 [68, 2] ``(x, y)`` pixels, iBUG-68 order, pixel centres at integers.
    score: detector confidence (HOG score, MMOD confidence or FAN detector score; higher is
    surer; the scales differ between detectors).
    """

    box: np.ndarray
    landmarks: np.ndarray
    score: float = 1.0

    @property
    def size_px(self) -> float:
        """Side of the landmarks' bounding square, in pixels (the face size used for framing)."""
        extent = self.landmarks.max(axis=0) - self.landmarks.min(axis=0)
        return float(extent.max())

    @property
    def box_area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"landmark detection needs a uint8 HxWx3 RGB array, got {got}")
    return np.ascontiguousarray(image)


def _largest_first(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: f.box_area, reverse=True)


class LandmarkDetector:
    """Common interface: ``detect(image) -> list[Face]`` (largest first; empty when none).

    ``name`` says which backend runs; ``note`` is a one-line remark for the user (e.g. why
    ``auto`` fell back to dlib) or None.
    """

    name: str = "base"
    note: str | None = None

    def detect(self, image: np.ndarray) -> list[Face]:
        raise NotImplementedError

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Detect in several images (video frames); one list of faces per image."""
        return [self.detect(im) for im in images]

    def detect_fast(self, image: np.ndarray) -> list[Face]:
        """The backend's cheapest detection pass, for video frames where a miss can fall back
        on the previous frame (``LandmarkTracker``). Same output as ``detect``."""
        return self.detect(image)

    def landmarks_in_box(self, image: np.ndarray, box: np.ndarray, score: float = 1.0) -> Face:
        """Landmarks of the face inside a known ``box`` (x0, y0, x1, y1), skipping detection."""
        raise NotImplementedError


# ----------------------------------------------------------------------------------- dlib


def dlib_models_dir() -> Path:
    """The ``models/`` folder of ``face_recognition_models``, found without importing it (its
    ``__init__`` imports ``pkg_resources``, which recent setuptools removed)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise WeightsError("face_recognition_models is not installed (pip install face-recognition-models)")
    return Path(spec.origin).parent / "models"


def _dlib_file(name: str) -> str:
    path = dlib_models_dir() / name
    if not path.is_file():
        raise WeightsError(f"dlib model {path} is missing (reinstall face-recognition-models)")
    return str(path)


class DlibDetector(LandmarkDetector):
    """dlib HOG detector (upsample 0, then 1), CNN MMOD fallback, 68-point shape predictor.

    HOG at upsample 0 finds ~97% of 224x224 VoxCeleb frames in ~4 ms; upsampling once finds
    small faces (~40 px) at ~4x the cost; the CNN (~270 ms on a 224 frame) catches the rest
    (profiles, blur). Detection runs on a copy whose longer side is at most
    ``max_detect_side`` (the CNN on at most ``max_cnn_side``), and the landmarks on the full
    image, so large photos stay fast.
    """

    name = "dlib"

    def __init__(self, *, cnn_fallback: bool = True, max_detect_side: int = 1024, max_cnn_side: int = 768):
        import dlib

        self._dlib = dlib
        self._hog = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(_dlib_file("shape_predictor_68_face_landmarks.dat"))
        self._cnn_path = _dlib_file("mmod_human_face_detector.dat") if cnn_fallback else None
        self._cnn = None
        self._cnn_lock = threading.Lock()
        self.max_detect_side = max_detect_side
        self.max_cnn_side = max_cnn_side

    def _cnn_model(self):
        with self._cnn_lock:
            if self._cnn is None:
                self._cnn = self._dlib.cnn_face_detection_model_v1(self._cnn_path)
        return self._cnn

    @staticmethod
    def _downscaled(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
        h, w = image.shape[:2]
        s = max(h, w) / max_side
        if s <= 1.0:
            return image, 1.0
        from PIL import Image

        small = Image.fromarray(image).resize((round(w / s), round(h / s)), Image.BILINEAR)
        return np.asarray(small), w / small.width

    def _hog_boxes(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        small, s = self._downscaled(image, self.max_detect_side)
        for upsample in (0, 1):
            rects, scores, _ = self._hog.run(small, upsample, 0.0)
            if len(rects):
                return [
                    (np.array([r.left(), r.top(), r.right(), r.bottom()], np.float64) * s, float(sc))
                    for r, sc in zip(rects, scores)
                ]
        return []

    def _cnn_boxes(self, images: Sequence[np.ndarray]) -> list[list[tuple[np.ndarray, float]]]:
        if self._cnn_path is None or not images:
            return [[] for _ in images]
        cnn = self._cnn_model()
        out = []
        for image in images:  # frames of one video share a size, but batching gives no speed-up on CPU
            small, s = self._downscaled(image, self.max_cnn_side)
            dets = cnn(small, 0)
            out.append(
                [
                    (np.array([d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()], np.float64) * s,
                     float(d.confidence))
                    for d in dets
                ]
            )
        return out

    def landmarks_in_box(self, image: np.ndarray, box: np.ndarray, score: float = 1.0) -> Face:
        image = _check_image(image)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        shape = self._predictor(image, self._dlib.rectangle(x0, y0, x1, y1))
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        return Face(box=np.asarray(box, np.float32), landmarks=pts, score=score)

    def detect(self, image: np.ndarray) -> list[Face]:
        return self.detect_batch([image])[0]

    def detect_fast(self, image: np.ndarray) -> list[Face]:
        """HOG without upsampling only (~4 ms at 224 px): no small faces, no CNN fallback."""
        image = _check_image(image)
        small, s = self._downscaled(image, self.max_detect_side)
        rects, scores, _ = self._hog.run(small, 0, 0.0)
        boxes = [np.array([r.left(), r.top(), r.right(), r.bottom()], np.float64) * s for r in rects]
        return _largest_first([self.landmarks_in_box(image, b, float(sc)) for b, sc in zip(boxes, scores)])

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        images = [_check_image(im) for im in images]
        boxes = [self._hog_boxes(im) for im in images]
        missed = [i for i, b in enumerate(boxes) if not b]
        for i, found in zip(missed, self._cnn_boxes([images[i] for i in missed])):
            boxes[i] = found
        return [
            _largest_first([self.landmarks_in_box(im, box, score) for box, score in found])
            for im, found in zip(images, boxes)
        ]


# ------------------------------------------------------------------------------------ FAN


# face-alignment 1.5's published files (its ``models_urls``); the names carry their sha256 prefix.
_FAN_HOST = "https://www.adrianbulat.com/downloads/python-fan"
FAN_2D = Asset("FAN 2D landmarks (face-alignment)", "2DFAN4-11f355bf06.pth.tar", (f"{_FAN_HOST}/2DFAN4-11f355bf06.pth.tar",),
               sha256="11f355bf06", subdir="fan")
FAN_S3FD = Asset("S3FD face detector (face-alignment)", "s3fd-619a316812.pth", (f"{_FAN_HOST}/s3fd-619a316812.pth",),
                 sha256="619a316812", subdir="fan")
PROBE_TIMEOUT_S = 3.0


def fan_available() -> bool:
    """face-alignment is importable (a core dependency; missing only in a trimmed install)."""
    return importlib.util.find_spec("face_alignment") is not None


def fan_weights_cached() -> bool:
    """FAN's 2D landmark network and its S3FD detector are both in thead's cache (or in the
    torch hub cache, where face-alignment itself puts them)."""
    if all(a.cached_path().is_file() for a in (FAN_2D, FAN_S3FD)):
        return True
    import torch.hub

    ckpt = Path(torch.hub.get_dir()) / "checkpoints"
    return ckpt.is_dir() and any(ckpt.glob("2DFAN4*")) and any(ckpt.glob("s3fd*"))


def fan_weights_downloadable() -> str | None:
    """None when FAN's weights can be downloaded now, else why not: downloads are off, or one
    quick request to their host (``PROBE_TIMEOUT_S``) gets no answer."""
    from thead.download import offline

    if offline():
        return "downloads are off"
    import requests

    try:
        requests.head(FAN_2D.urls[0], timeout=PROBE_TIMEOUT_S, allow_redirects=True).raise_for_status()
    except requests.RequestException as e:
        return f"their host does not answer ({type(e).__name__})"
    return None


def _fan_weights() -> tuple[Path, Path]:
    """(FAN 2D, S3FD) files: thead's cache, face-alignment's own, or downloaded once into
    thead's cache (``thead.download``, sha256-prefix checked)."""
    import torch.hub

    from thead.download import DownloadError, resolve_asset

    ckpt = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        return tuple(resolve_asset(a, also=(ckpt / a.filename,)) for a in (FAN_2D, FAN_S3FD))
    except DownloadError as e:
        raise WeightsError(f"{e} (or use --landmarks dlib)") from None


class FanDetector(LandmarkDetector):
    """face-alignment's FAN 2D landmarks with its default S3FD detector (the authors' setup,
    ref §1.3: ``flip_input=False``). Downloads its weights on first use unless cached."""

    name = "fan"

    def __init__(self, device: str = "cpu"):
        try:
            import face_alignment
        except ImportError:
            raise UsageError("--landmarks fan needs face-alignment (a dependency of thead): pip install face-alignment") from None
        kind = getattr(face_alignment.LandmarksType, "TWO_D", None) or face_alignment.LandmarksType._2D
        import torch

        fan_path, s3fd_path = _fan_weights()

        class _FaceAlignment(face_alignment.FaceAlignment):
            def _load_native(self, network_name, network_size, device, dtype):  # thead's file, not a download
                from face_alignment.models import FAN

                net = FAN(network_size)
                net.load_state_dict(torch.load(fan_path, map_location=device, weights_only=True))
                return net.to(device, dtype=dtype).eval()

        try:
            self._fa = _FaceAlignment(kind, flip_input=False, device=device, face_detector_kwargs={"path_to_detector": str(s3fd_path)}, compile=False)
        except Exception as e:  # a corrupt or mismatched file
            raise WeightsError(f"cannot load FAN weights ({type(e).__name__}: {e})") from None
        self.device = device

    @staticmethod
    def _faces(landmarks, boxes) -> list[Face]:
        """face-alignment's per-image output (landmarks [n*68, 2+] or a list of [68, 2+];
        boxes [n, 5] x0, y0, x1, y1, score) -> Faces, largest first."""
        if landmarks is None or len(landmarks) == 0:
            return []
        points = np.asarray(landmarks, np.float32).reshape(-1, NUM_LANDMARKS, np.shape(landmarks)[-1])[..., :2]
        faces = []
        for i, pts in enumerate(points):
            box = np.asarray(boxes[i][:4], np.float32) if boxes is not None else np.r_[pts.min(0), pts.max(0)]
            score = float(boxes[i][4]) if boxes is not None and len(boxes[i]) > 4 else 1.0
            faces.append(Face(box=box, landmarks=np.ascontiguousarray(pts), score=score))
        return _largest_first(faces)

    def detect(self, image: np.ndarray) -> list[Face]:
        image = _check_image(image)
        landmarks, _, boxes = self._fa.get_landmarks_from_image(image, return_bboxes=True)
        return self._faces(landmarks, boxes)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        import torch

        images = [_check_image(im) for im in images]
        if len({im.shape for im in images}) != 1:
            return [self.detect(im) for im in images]
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(self.device)
        landmarks, _, boxes = self._fa.get_landmarks_from_batch(batch, return_bboxes=True)
        if landmarks is None:  # no face in any image
            return [[] for _ in images]
        return [self._faces(lm, bx) for lm, bx in zip(landmarks, boxes)]

    def landmarks_in_box(self, image: np.ndarray, box: np.ndarray, score: float = 1.0) -> Face:
        image = _check_image(image)
        landmarks = self._fa.get_landmarks_from_image(image, detected_faces=[np.asarray(box, np.float32)])
        return Face(box=np.asarray(box, np.float32), landmarks=np.asarray(landmarks[0][:, :2], np.float32), score=score)


# ---------------------------------------------------------------------------------- tracking

# A dlib-HOG-like box from landmarks: measured on the 192 sample frames, the HOG box is as wide
# as the landmarks' bounding square (median 1.016x) and its centre 0.12 of that side higher
# (p10-p90 0.08-0.21); the horizontal offset follows head yaw, so it is left at 0.
_BOX_SCALE = 1.0
_BOX_RAISE = 0.12


def box_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """A detector-like box (x0, y0, x1, y1) around 68 landmarks, for re-fitting them in the next
    video frame without running the detector."""
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
    side = float((hi - lo).max()) * _BOX_SCALE
    cx, cy = (lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2 - _BOX_RAISE * side
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


class LandmarkTracker:
    """Landmarks frame after frame for a video, following one face.

    Each frame runs the detector's cheap path (dlib: HOG without upsampling) and keeps the face
    that overlaps the previous one most; when that finds nothing it re-fits the landmarks in a
    box around the previous frame's landmarks (a face does not vanish between frames), and only
    with no history runs the full detector (upsampling, CNN). ``__call__`` returns None for a
    frame with no face; after ``max_coast`` such fall-backs in a row the history is dropped.
    """

    def __init__(self, detector: LandmarkDetector, face_index: int = 0, max_coast: int = 5):
        self.detector = detector
        self.face_index = face_index
        self.max_coast = max_coast
        self._prev: Face | None = None
        self._coasted = 0

    def reset(self) -> None:
        self._prev, self._coasted = None, 0

    def _pick(self, faces: list[Face]) -> Face | None:
        """With history, the face overlapping the previous one most (None if none overlaps: a
        different person); without, the ``face_index``-th largest (the last when fewer)."""
        if not faces:
            return None
        if self._prev is None:
            return faces[min(self.face_index, len(faces) - 1)]
        face = max(faces, key=lambda f: _iou(f.box, self._prev.box))
        return face if _iou(face.box, self._prev.box) > 0 else None

    def __call__(self, image: np.ndarray) -> Face | None:
        """Landmarks for the next frame (uint8 HxWx3), or None when there is no face. A face
        re-fitted around the previous landmarks has ``score`` 0."""
        image = _check_image(image)
        face = self._pick(self.detector.detect_fast(image))
        if face is None and self._prev is not None and self._coasted < self.max_coast:
            self._coasted += 1
            self._prev = self.detector.landmarks_in_box(image, box_from_landmarks(self._prev.landmarks), 0.0)
            return self._prev
        if face is None:
            self.reset()
            face = self._pick(self.detector.detect(image))
            if face is None:
                return None
        self._prev, self._coasted = face, 0
        return face


# ---------------------------------------------------------------------------------- rotation

# Turns tried, in order, when an upright search finds nothing: a sideways face (a phone clip
# whose rotation tag was lost) first, then the half-way rolls. HOG finds faces within about
# ±30° of upright, so these five cover any roll up to ±90°. Upside down is left to the
# container's rotation tag (``thead.video`` applies it).
TURNS_DEG = (90.0, -90.0, 45.0, -45.0)


def turn_image(image: np.ndarray, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """``image`` turned ``angle_deg`` counter-clockwise on screen (the canvas grows to hold it)
    and the 3x3 affine taking the turned image's pixels back to ``image``'s."""
    h, w = image.shape[:2]
    quarter = angle_deg / 90.0
    if quarter == round(quarter):
        turned = np.ascontiguousarray(np.rot90(image, int(round(quarter)) % 4))
    else:
        from PIL import Image

        turned = np.asarray(Image.fromarray(image).rotate(angle_deg, Image.Resampling.BILINEAR, expand=True))
    th, tw = turned.shape[:2]
    a = np.radians(angle_deg)
    c, s = np.cos(a), np.sin(a)
    # numpy's rot90 by 1: turned (x, y) <- source (w-1-y, x); in general a point p of the
    # turned image, relative to its centre, came from [[c, -s], [s, c]] p about the source's
    back = np.array([[c, -s], [s, c]])
    centre_src, centre_dst = np.array([(w - 1) / 2, (h - 1) / 2]), np.array([(tw - 1) / 2, (th - 1) / 2])
    out = np.eye(3)
    out[:2, :2] = back
    out[:2, 2] = centre_src - back @ centre_dst
    return turned, out


def detect_any_roll(detector: LandmarkDetector, image: np.ndarray, *, full: bool = True, first_turn: float = 0.0) -> list[Face]:
    """Faces rolled by any angle up to ±90°, landmarks in ``image``'s pixels, largest first.

    The cheap pass (``detect_fast``) upright, then on turned copies (``TURNS_DEG``), whose
    landmarks are measured on the upright face and mapped back; ``first_turn`` is tried first
    (the turn that found the face in the previous frame of a clip). Only when all miss, with
    ``full``, the backend's full search on the upright frame (dlib: upsampling and the CNN,
    which also finds rolled faces but places their landmarks badly).
    """
    turns = [first_turn] + [a for a in (0.0, *TURNS_DEG) if a != first_turn]
    for angle in turns:
        if angle == 0:
            faces = detector.detect_fast(image)
            if faces:
                return faces
            continue
        turned, back = turn_image(image, angle)
        found = detector.detect_fast(turned)
        if found:
            pts = lambda p: (np.asarray(p, np.float64) @ back[:2, :2].T + back[:2, 2]).astype(np.float32)  # noqa: E731
            out = []
            for f in found:
                corners = pts(np.array([[f.box[0], f.box[1]], [f.box[2], f.box[3]], [f.box[0], f.box[3]], [f.box[2], f.box[1]]]))
                box = np.r_[corners.min(0), corners.max(0)].astype(np.float32)
                out.append(Face(box=box, landmarks=pts(f.landmarks), score=f.score))
            return _largest_first(out)
    return detector.detect(image) if full else []


# ---------------------------------------------------------------------------------- factory

def auto_fallback_note() -> str | None:
    """Why ``make_detector("auto")`` would use dlib rather than FAN (one line), or None."""
    if not fan_available():
        why = "face-alignment is not installed"
    elif fan_weights_cached():
        return None
    elif (reason := fan_weights_downloadable()) is None:
        return None
    else:
        why = f"its weights are not downloaded and {reason}"
    return f"FAN landmarks unavailable ({why}); using dlib"


def make_detector(kind: DetectorKind = "auto", device: str = "cpu") -> LandmarkDetector:
    """Build a landmark detector.

    ``auto`` uses FAN (the authors' detector) when its weights are cached or can be downloaded
    now (``thead.download``: once, into thead's cache), otherwise dlib, saying why once through
    ``warnings`` and in the returned detector's ``note``. ``fan`` or ``dlib`` force a backend.
    """
    if kind == "dlib":
        return DlibDetector()
    if kind == "fan":
        return FanDetector(device)
    if kind != "auto":
        raise UsageError(f"unknown landmark detector {kind!r} (choose auto, fan or dlib)")
    note = auto_fallback_note()
    if note is None:
        return FanDetector(device)
    detector = DlibDetector()
    detector.note = note
    warnings.warn(detector.note, stacklevel=2)  # the default filter shows it once per call site
    return detector
