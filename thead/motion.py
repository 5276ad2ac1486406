"""Driving motion: a driver (video, photo or motion template) -> per-frame landmarks -> the
avatar's target landmarks.

Driver stages, streaming (one decoded frame at a time, memory constant in the clip's length)::

    pass 1: decode, detect faces in <= ``scan_frames`` evenly spaced frames -> one stable crop
            window for the whole clip (median of the per-frame windows, no crop jitter)
    pass 2: decode -> crop (224) -> 68 landmarks on the crop (tracked frame to frame)
            -> hold the last good landmarks where no face is found -> One-Euro smoothing (causal)

Motion transfer (``MotionTransfer``) maps the driver's landmarks onto the avatar:

- ``relative`` (default; use it whenever the driver is another person, or the same person at
  another distance or position): the driver's motion relative to its first frame (a similarity
  transform fitted between the driver's first-frame landmarks and the avatar's removes their
  difference in scale, rotation and position) is added to the avatar's own landmarks, so the
  avatar keeps its face shape, size and place in the frame; the driver's first frame should
  show a neutral-ish face, since it is taken as the avatar's pose. A photo driver has no first
  frame to be relative to, so in ``relative`` mode its landmarks are aligned onto the avatar's
  (same similarity fit): the avatar keeps its size and place and takes the photo's expression.
- ``absolute``: the driver's landmarks as they are (the authors' behaviour, ref §6 "no landmark
  adaptation"): the rendered face takes the driver's face shape and framing. Best for
  self-reenactment (the same person driving their own avatar), where it is exact.

Motion templates (``MotionTemplate``, ``.npz``) store a driver's smoothed landmarks (224-crop
pixels), a face-found flag per frame, the fps and the frame count, and nothing of the driver's
pixels: animate from them again without the video, faster and without keeping anyone's face.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np

from thead._atomic import atomic_file
from thead.errors import NoFaceError, TheadError, UsageError, VideoError
from thead.faces import (
    CropBox,
    CropOptions,
    DlibDetector,
    Face,
    LandmarkDetector,
    LandmarkSmoother,
    LandmarkTracker,
    SmoothOptions,
    apply_affine,
    crop_face,
    crop_image,
    load_image,
    make_detector,
    select_face,
    stable_crop_box,
)
from thead.faces.images import IMAGE_SUFFIXES
from thead.faces.landmarks import DetectorKind
from thead.validate import check_npz_sizes, check_range, refuse_same_file

MotionKind = Literal["relative", "absolute"]
MOTION_KINDS: tuple[str, ...] = ("relative", "absolute")
TEMPLATE_FORMAT = "thead-motion"
TEMPLATE_VERSION = 1
TEMPLATE_SUFFIX = ".npz"


class MotionError(TheadError):
    """A motion template that is missing, corrupt or unusable."""


# ------------------------------------------------------------------------ templates


@dataclass(frozen=True, eq=False)
class MotionTemplate:
    """A driver's motion without its pixels.

    landmarks: float32 [N, 68, 2], smoothed, in ``crop_size`` crop pixels (held from the last
        good frame where no face was found).
    face_found: bool [N]. fps: exact frame rate. crop_size: side of the crop they refer to.
    """

    landmarks: np.ndarray
    face_found: np.ndarray
    fps: Fraction
    crop_size: int = 224

    def __post_init__(self):
        n = self.landmarks.shape[0]
        if self.landmarks.shape != (n, 68, 2) or self.face_found.shape != (n,):
            raise MotionError(
                f"motion landmarks must be [N, 68, 2] with N face flags, got {self.landmarks.shape} and {self.face_found.shape}"
            )
        if not np.isfinite(self.landmarks).all():
            raise MotionError("motion landmarks contain non-finite values")
        if self.fps <= 0:
            raise MotionError(f"motion fps must be positive, got {self.fps}")

    @property
    def num_frames(self) -> int:
        return int(self.landmarks.shape[0])

    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` atomically."""
        path = Path(path)
        if path.suffix.lower() != TEMPLATE_SUFFIX:
            raise UsageError(f"a motion template is an .npz file, got {path.name}")
        with atomic_file(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(
                    f,
                    format=np.array(TEMPLATE_FORMAT),
                    format_version=np.array(TEMPLATE_VERSION),
                    landmarks=self.landmarks.astype(np.float32),
                    face_found=self.face_found.astype(bool),
                    fps=np.array([self.fps.numerator, self.fps.denominator], np.int64),
                    num_frames=np.array(self.num_frames),
                    crop_size=np.array(self.crop_size),
                )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> MotionTemplate:
        path = Path(path)
        if not path.is_file():
            raise MotionError(f"motion template {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                check_npz_sizes(z, path, error=MotionError)
                if str(z["format"]) != TEMPLATE_FORMAT:
                    raise MotionError(f"{path} is not a thead motion template")
                if int(z["format_version"]) != TEMPLATE_VERSION:
                    raise MotionError(f"{path} has motion format version {int(z['format_version'])}, this thead reads {TEMPLATE_VERSION}")
                num, den = (int(v) for v in z["fps"])
                template = cls(
                    landmarks=np.asarray(z["landmarks"], np.float32),
                    face_found=np.asarray(z["face_found"], bool),
                    fps=Fraction(num, den),
                    crop_size=int(z["crop_size"]),
                )
                check_range(template.crop_size, f"{path}: crop_size", 8, 4096, MotionError)
                check_range(float(template.fps), f"{path}: fps", 0.01, 1000, MotionError)
                if template.num_frames != int(z["num_frames"]):
                    raise MotionError(f"{path} says {int(z['num_frames'])} frames but holds {template.num_frames}")
        except MotionError:
            raise
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, ZeroDivisionError) as e:
            raise MotionError(f"{path} is not a readable motion template ({type(e).__name__}: {e})") from None
        return template


# ------------------------------------------------------------------------ transfer


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (scale, rotation, translation) taking ``src`` [N, 2] onto
    ``dst`` [N, 2] (Umeyama 1991); returns a 3x3 affine."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    if var_s <= 1e-12:
        raise MotionError("degenerate landmarks (all points coincide)")
    u, sig, vt = np.linalg.svd(d0.T @ s0 / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ d @ vt
    scale = float(np.trace(np.diag(sig) @ d) / var_s)
    out = np.eye(3)
    out[:2, :2] = scale * rot
    out[:2, 2] = mu_d - scale * rot @ mu_s
    return out


class MotionTransfer:
    """Driver landmarks -> the avatar's target landmarks (float32 [68, 2], crop pixels).

    ``relative``: ``target_t = A + sR·(D_t − D_0)``, with (s, R) the similarity fitted from the
    driver's reference landmarks D_0 (its first frame, or ``reference``) to the avatar's A; at
    the reference frame the target is exactly A. With ``align`` (photo drivers), every frame is
    mapped by its own fit: ``target = S(D)`` with S fitted from D to A.
    ``absolute``: ``target_t = D_t``.
    """

    def __init__(self, avatar_landmarks: np.ndarray, mode: MotionKind = "relative", *, align: bool = False):
        if mode not in MOTION_KINDS:
            raise UsageError(f"unknown motion mode {mode!r} (choose {' or '.join(MOTION_KINDS)})")
        self.avatar = np.asarray(avatar_landmarks, np.float64)
        self.mode, self.align = mode, align
        self.reference: np.ndarray | None = None
        self._linear: np.ndarray | None = None

    def set_reference(self, driver_landmarks: np.ndarray) -> None:
        self.reference = np.asarray(driver_landmarks, np.float64)
        self._linear = fit_similarity(self.reference, self.avatar)[:2, :2]

    def __call__(self, driver_landmarks: np.ndarray) -> np.ndarray:
        d = np.asarray(driver_landmarks, np.float64)
        if self.mode == "absolute":
            return d.astype(np.float32)
        if self.align:
            return apply_affine(fit_similarity(d, self.avatar), d)
        if self.reference is None:
            self.set_reference(d)
        return (self.avatar + (d - self.reference) @ self._linear.T).astype(np.float32)


# ------------------------------------------------------------------------ drivers


@dataclass(frozen=True)
class DriverOptions:
    """How a driver's landmarks are measured.

    landmarks: backend ("auto", "dlib", "fan"). crop: the driver crop's framing (``--face``
    picks the person). smooth, smooth_strength: One-Euro smoothing (``thead.faces.smooth``).
    max_frames: stop after this many frames (None: all). scan_frames: frames sampled in pass 1
    to place the stable crop. landmark_batch: crops per batched landmark call (FAN only; dlib
    tracks frame by frame).
    """

    landmarks: DetectorKind = "auto"
    crop: CropOptions = field(default_factory=CropOptions)
    smooth: bool = True
    smooth_strength: float = 1.0
    max_frames: int | None = None
    scan_frames: int = 32
    landmark_batch: int = 8

    def __post_init__(self):
        if self.max_frames is not None and self.max_frames < 1:
            raise UsageError(f"max frames must be 1 or more, got {self.max_frames}")
        if self.scan_frames < 1 or self.landmark_batch < 1:
            raise UsageError("scan_frames and landmark_batch must be 1 or more")
        SmoothOptions(strength=self.smooth_strength)  # validates the strength


@dataclass(frozen=True, eq=False)
class DriverFrame:
    """index: frame number. image: the driver's 224 crop, uint8 [224, 224, 3] (None for motion
    templates). landmarks: float32 [68, 2] crop pixels, smoothed (held where no face).
    face_found: whether this frame had a face of its own."""

    index: int
    image: np.ndarray | None
    landmarks: np.ndarray
    face_found: bool


class Driver:
    """A source of driving frames: ``kind`` ("video", "photo", "motion"), ``fps`` (None for a
    photo), ``num_frames`` (None when the container does not say), ``has_audio``,
    ``missing_faces`` (frames without a face so far, counted while iterating)."""

    kind: str = ""
    fps: Fraction | None = None
    num_frames: int | None = None
    has_audio: bool = False
    crop_size: int = 224

    def __init__(self, path: Path):
        self.path = path
        self.missing_faces = 0

    def __iter__(self) -> Iterator[DriverFrame]:
        raise NotImplementedError


class MotionDriver(Driver):
    kind = "motion"

    def __init__(self, template: MotionTemplate, path: Path | None = None, max_frames: int | None = None):
        super().__init__(path or Path("<motion>"))
        if not template.face_found.any():
            raise NoFaceError(f"the motion template {self.path} has no frame with a face")
        self.template = template
        self.fps = template.fps
        self.num_frames = template.num_frames if max_frames is None else min(max_frames, template.num_frames)
        self.crop_size = template.crop_size

    def __iter__(self) -> Iterator[DriverFrame]:
        self.missing_faces = 0
        t = self.template
        for i in range(self.num_frames):
            found = bool(t.face_found[i])
            self.missing_faces += not found
            yield DriverFrame(index=i, image=None, landmarks=t.landmarks[i], face_found=found)


class PhotoDriver(Driver):
    """One photo: detect, crop as enrolment does, landmarks on the crop."""

    kind = "photo"

    def __init__(self, path: Path, options: DriverOptions, detector: LandmarkDetector, on_note: Callable[[str], None]):
        super().__init__(path)
        self.num_frames = 1
        image = load_image(path)
        face, note = select_face(detector.detect(image), options.crop, f"the driver {path}")
        if note:
            on_note(note)
        from thead.enroll import landmarks_on_crop

        self.crop = crop_face(image, face, options.crop)
        self.crop_size = options.crop.size
        self.landmarks = landmarks_on_crop(detector, self.crop)

    def __iter__(self) -> Iterator[DriverFrame]:
        yield DriverFrame(index=0, image=self.crop.image, landmarks=self.landmarks, face_found=True)


class _CropLandmarks:
    """Landmarks on a stream of 224 crops of one clip: dlib tracks frame by frame (its detector
    has no batch speed-up); other backends (FAN) run batched and keep the face nearest the
    previous one."""

    def __init__(self, detector: LandmarkDetector, face_index: int):
        self.detector = detector
        self.tracker = LandmarkTracker(detector, face_index) if isinstance(detector, DlibDetector) else None
        self._prev: np.ndarray | None = None

    def __call__(self, crops: list[np.ndarray]) -> list[np.ndarray | None]:
        if self.tracker is not None:
            return [None if (f := self.tracker(c)) is None else f.landmarks for c in crops]
        out = []
        for faces in self.detector.detect_batch(crops):
            if not faces:
                out.append(None)
                continue
            if self._prev is None:
                face = faces[0]
            else:
                centre = self._prev.mean(0)
                face = min(faces, key=lambda f: float(np.linalg.norm(f.landmarks.mean(0) - centre)))
            self._prev = face.landmarks
            out.append(face.landmarks)
        return out


class VideoDriver(Driver):
    """A video clip, read twice (pass 1: stable crop; pass 2: landmarks), streaming."""

    kind = "video"

    def __init__(self, path: Path, options: DriverOptions, detector: LandmarkDetector, on_note: Callable[[str], None]):
        from thead.video import open_video

        super().__init__(path)
        self.options, self.detector, self.on_note = options, detector, on_note
        with open_video(path) as reader:  # validates the file before any heavy work
            self.fps = reader.fps
            self.num_frames = reader.num_frames
            self.has_audio = bool(reader.has_audio)
            self.size = reader.size
        if options.max_frames is not None and self.num_frames is not None:
            self.num_frames = min(self.num_frames, options.max_frames)
        self.crop_size = options.crop.size
        self.box: CropBox | None = None
        self._first_landmarks: np.ndarray | None = None

    def _limit(self, reader) -> Iterator:
        for frame in reader:
            if self.options.max_frames is not None and frame.index >= self.options.max_frames:
                return
            yield frame

    def scan(self) -> CropBox:
        """Pass 1: faces in evenly spaced frames -> one crop window for the clip."""
        from thead.video import open_video

        n = self.num_frames
        if n is None:
            with open_video(self.path) as reader:
                n = self.num_frames = sum(1 for _ in self._limit(reader))
        if n == 0:
            raise VideoError(f"{self.path} has no frames")
        wanted = set(int(i) for i in np.linspace(0, n, min(n, self.options.scan_frames), endpoint=False))
        faces: list[Face] = []
        noted = False
        with open_video(self.path) as reader:
            for frame in self._limit(reader):
                if frame.index not in wanted:
                    continue
                found = self.detector.detect(frame.image)
                if not found:
                    continue
                if faces:  # follow the chosen person: the face nearest the previous one
                    centre = faces[-1].landmarks.mean(0)
                    face = min(found, key=lambda f: float(np.linalg.norm(f.landmarks.mean(0) - centre)))
                else:
                    face, note = select_face(found, self.options.crop, f"the driver {self.path.name}")
                    if note and not noted:
                        self.on_note(note)
                        noted = True
                faces.append(face)
        if not faces:
            raise NoFaceError(f"no face found in the driver {self.path} ({len(wanted)} frames checked)")
        self.box = stable_crop_box(faces, self.options.crop)
        self._first_landmarks = apply_affine(self.box.from_frame(self.crop_size), faces[0].landmarks)
        return self.box

    def __iter__(self) -> Iterator[DriverFrame]:
        from thead.video import open_video

        box = self.box or self.scan()
        self.missing_faces = 0
        landmarks_of = _CropLandmarks(self.detector, self.options.crop.face_index)
        smoother = LandmarkSmoother(SmoothOptions(self.options.smooth_strength if self.options.smooth else 0.0, float(self.fps or 25)))
        held = self._first_landmarks  # before the first face: the first face pass 1 saw
        chunk: list[tuple[int, np.ndarray]] = []
        batch = 1 if landmarks_of.tracker is not None else self.options.landmark_batch

        def flush():
            nonlocal held
            for (index, crop), found in zip(chunk, landmarks_of([c for _, c in chunk])):
                if found is None:
                    self.missing_faces += 1
                else:
                    held = found
                yield DriverFrame(index=index, image=crop, landmarks=smoother(held), face_found=found is not None)
            chunk.clear()

        with open_video(self.path) as reader:
            for frame in self._limit(reader):
                crop = crop_image(frame.image, box, self.crop_size, self.options.crop.pad)
                chunk.append((frame.index, crop))
                if len(chunk) >= batch:
                    yield from flush()
            yield from flush()


def driver_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == TEMPLATE_SUFFIX:
        return "motion"
    if suffix in IMAGE_SUFFIXES:
        return "photo"
    return "video"


def open_driver(
    path: str | os.PathLike,
    options: DriverOptions = DriverOptions(),
    *,
    detector: LandmarkDetector | None = None,
    on_note: Callable[[str], None] = lambda s: None,
) -> Driver:
    """A driver from a video, a photo or a motion template (``.npz``), chosen by suffix.

    Raises ``VideoError``/``ImageError``/``MotionError`` for a missing or unreadable file and
    ``NoFaceError`` when it has no face (a video: at iteration, after pass 1).
    """
    path = Path(path)
    kind = driver_kind(path)
    if not path.exists():
        raise VideoError(f"driver {path} does not exist")
    if path.is_dir():
        raise VideoError(f"driver {path} is a folder; give a video, a photo or a motion template (.npz)")
    if kind == "motion":
        return MotionDriver(MotionTemplate.load(path), path, options.max_frames)
    detector = detector if detector is not None else make_detector(options.landmarks)
    if kind == "photo":
        return PhotoDriver(path, options, detector, on_note)
    return VideoDriver(path, options, detector, on_note)


# ------------------------------------------------------------------------ extraction


def extract_motion(
    driver: str | os.PathLike,
    output: str | os.PathLike | None = None,
    options: DriverOptions = DriverOptions(),
    *,
    detector: LandmarkDetector | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    on_note: Callable[[str], None] = lambda s: None,
) -> tuple[MotionTemplate, int]:
    """A video's motion template (written to ``output`` when given, atomically).

    Returns (template, frames without a face). Only landmarks are kept, never pixels.
    """
    if output is not None and Path(output).suffix.lower() != TEMPLATE_SUFFIX:
        raise UsageError(f"a motion template is an .npz file, got {Path(output).name}")
    if output is not None:
        refuse_same_file(output, [driver])
    source = open_driver(driver, options, detector=detector, on_note=on_note)
    if not isinstance(source, VideoDriver):
        raise UsageError(f"motion templates are extracted from videos, got a {source.kind}: {driver}")
    landmarks, found = [], []
    for frame in source:
        landmarks.append(frame.landmarks)
        found.append(frame.face_found)
        if progress is not None:
            progress(len(landmarks), source.num_frames)
    template = MotionTemplate(
        landmarks=np.stack(landmarks).astype(np.float32),
        face_found=np.array(found, bool),
        fps=source.fps,
        crop_size=source.crop_size,
    )
    if output is not None:
        template.save(output)
    return template, source.missing_faces
