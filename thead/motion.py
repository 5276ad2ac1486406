"""Driving motion: a driver (video, photo or motion template) -> per-frame landmarks -> the
avatar's target landmarks.

Driver stages, streaming (one decoded frame at a time, memory constant in the clip's length)::

    pass 1: decode, detect faces (at any roll up to ±90°) in <= ``scan_frames`` evenly spaced
            frames -> one stable crop window for the whole clip (median of the per-frame
            windows, no crop jitter; turned with the face when the clip is sideways); a clip
            with no face in its first ``faceless_s`` seconds fails there
    reference (relative motion): decode -> crop -> landmarks on <= ``reference_frames`` evenly
            spaced frames -> the most neutral one (mouth closed, eyes open, frontal)
    pass 2: decode -> crop (224) -> 68 landmarks on the crop (tracked frame to frame)
            -> hold the last good landmarks where no face is found -> One-Euro smoothing
            (forward-backward over ``lookahead`` frames: no lag; causal with lookahead 0)

When the reference pass measured every frame (``auto``, up to ``reference_frames`` frames),
pass 2 takes its landmarks instead of measuring them again (the same values) and, asked for no
images (``Driver.frames(images=False)``), decodes nothing. Passes that measure landmarks decode
and crop in a helper thread a few frames ahead.

``start_s``/``duration_s`` pick a part of a video (frames are numbered from its start).

Motion transfer (``MotionTransfer``) maps the driver's landmarks onto the avatar:

- ``relative`` (default; use it whenever the driver is another person, or the same person at
  another distance or position): the driver's motion relative to its first frame (a similarity
  transform fitted between the driver's reference landmarks and the avatar's removes their
  difference in scale, rotation and position) is added to the avatar's own landmarks, so the
  avatar keeps its face shape, size and place in the frame. The reference is taken as the
  avatar's own expression, so it should be neutral: ``reference="auto"`` (default) picks the
  most neutral frame of the whole driver; ``"first"`` or a frame number force one (a clip that
  opens on a neutral face, or a chosen frame). Inner lips that would cross after the transfer
  are made to meet instead. A photo driver has no first
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
import queue
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
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
from thead.faces.landmarks import DetectorKind, detect_any_roll
from thead.faces.pose import mouth_opening, neutral_cost, roll_degrees, uncross_lips
from thead.faces.smooth import LOOKAHEAD_FRAMES, LookaheadSmoother
from thead.progress import SILENT, Progress
from thead.validate import check_npz_sizes, check_range, refuse_same_file

MotionKind = Literal["relative", "absolute"]
MOTION_KINDS: tuple[str, ...] = ("relative", "absolute")
Reference = Literal["auto", "first"] | int
# A clip whose faces roll further than this from a quarter turn gets a crop turned with them
# (VoxCeleb2's own crops are upright, with heads rolled up to about ±20°, so smaller rolls are
# left as they are).
TURN_CROP_DEG = 30.0
# An open mouth at the reference this wide (inner-lip gap, inter-ocular distances) is noted.
OPEN_MOUTH = 0.08
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
    onto: the avatar these landmarks were retargeted for (``thead motion extract --onto``;
    ``animate`` then feeds them as they are), or "" for a driver's own landmarks.
    reference, reference_index: the neutral reference chosen at extraction (raw landmarks
    float32 [68, 2] and its frame), so a template moves an avatar exactly as its video does;
    None / -1 in templates made before it (their reference is then chosen among the frames).
    """

    landmarks: np.ndarray
    face_found: np.ndarray
    fps: Fraction
    crop_size: int = 224
    onto: str = ""
    reference: np.ndarray | None = None
    reference_index: int = -1

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
        if self.reference is not None and (self.reference.shape != (68, 2) or not np.isfinite(self.reference).all()):
            raise MotionError(f"a motion template's reference must be 68 finite points, got {self.reference.shape}")

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
                    onto=np.array(self.onto),
                    **({} if self.reference is None else {
                        "reference": self.reference.astype(np.float32),
                        "reference_index": np.array(self.reference_index),
                    }),
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
                    onto=str(z["onto"]) if "onto" in z.files else "",
                    reference=np.asarray(z["reference"], np.float32) if "reference" in z.files else None,
                    reference_index=int(z["reference_index"]) if "reference_index" in z.files else -1,
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
    ``lips_apart`` (relative and aligned): inner lips that cross in the target meet instead
    (``uncross_lips``): a closed driver mouth on an avatar enrolled with parted lips, or a
    reference a little more open than the driver's most closed frame.
    """

    def __init__(self, avatar_landmarks: np.ndarray, mode: MotionKind = "relative", *, align: bool = False,
                 lips_apart: bool = True):
        if mode not in MOTION_KINDS:
            raise UsageError(f"unknown motion mode {mode!r} (choose {' or '.join(MOTION_KINDS)})")
        self.avatar = np.asarray(avatar_landmarks, np.float64)
        self.mode, self.align, self.lips_apart = mode, align, lips_apart
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
            out = apply_affine(fit_similarity(d, self.avatar), d)
        else:
            if self.reference is None:
                self.set_reference(d)
            out = (self.avatar + (d - self.reference) @ self._linear.T).astype(np.float32)
        return uncross_lips(out) if self.lips_apart else out


# ------------------------------------------------------------------------ drivers


@dataclass(frozen=True)
class DriverOptions:
    """How a driver's landmarks are measured.

    landmarks: backend ("auto", "dlib", "fan"). crop: the driver crop's framing (``--face``
    picks the person). smooth, smooth_strength: One-Euro smoothing (``thead.faces.smooth``).
    lookahead: frames the smoother looks ahead (forward-backward, no lag; a file driver has
        them); 0 = causal (a live source).
    reference: the neutral frame of relative motion: "auto" (the most neutral frame), "first"
        or a frame number (counted from ``start_s``).
    start_s, duration_s: the part of a video to use (seconds; None: to the end).
    max_frames: stop after this many frames (None: all). scan_frames: frames sampled in pass 1
    to place the stable crop. reference_frames: frames measured to find the "auto" reference.
    faceless_s: a video with no face in this many seconds from its start fails there.
    landmark_batch: crops per batched landmark call (FAN only; dlib tracks frame by frame).
    """

    landmarks: DetectorKind = "auto"
    crop: CropOptions = field(default_factory=CropOptions)
    smooth: bool = True
    smooth_strength: float = 1.0
    lookahead: int = LOOKAHEAD_FRAMES
    reference: Reference = "auto"
    start_s: float = 0.0
    duration_s: float | None = None
    max_frames: int | None = None
    scan_frames: int = 32
    reference_frames: int = 600
    faceless_s: float = 3.0
    landmark_batch: int = 8

    def __post_init__(self):
        if self.max_frames is not None and self.max_frames < 1:
            raise UsageError(f"max frames must be 1 or more, got {self.max_frames}")
        if self.scan_frames < 1 or self.landmark_batch < 1 or self.reference_frames < 1:
            raise UsageError("scan_frames, reference_frames and landmark_batch must be 1 or more")
        if self.lookahead < 0:
            raise UsageError(f"look-ahead must be 0 frames or more, got {self.lookahead}")
        if not (self.start_s >= 0 and np.isfinite(self.start_s)):
            raise UsageError(f"--start must be 0 s or more, got {self.start_s}")
        if self.duration_s is not None and not (self.duration_s > 0 and np.isfinite(self.duration_s)):
            raise UsageError(f"--duration must be more than 0 s, got {self.duration_s}")
        if not self.faceless_s > 0:
            raise UsageError(f"faceless_s must be more than 0, got {self.faceless_s}")
        parse_reference(self.reference)
        SmoothOptions(strength=self.smooth_strength)  # validates the strength


def parse_reference(value: str | int) -> Reference:
    """``auto``, ``first`` or a frame number (0 or more) from an option's text."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value < 0:
            raise UsageError(f"--reference frame must be 0 or more, got {value}")
        return int(value)
    text = str(value).strip().lower()
    if text in ("auto", "first"):
        return text  # type: ignore[return-value]
    if text.isdigit():
        return int(text)
    raise UsageError(f"--reference must be auto, first or a frame number, got {value!r}")


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

    audio_start_s: float = 0.0
    retargeted: bool = False  # landmarks already made for the avatar (feed them as they are)

    def __init__(self, path: Path):
        self.path = path
        self.missing_faces = 0
        self.reference_index: int | None = None

    def __iter__(self) -> Iterator[DriverFrame]:
        raise NotImplementedError

    def frames(self, *, images: bool = True) -> Iterator[DriverFrame]:
        """The frames, as iterating the driver gives them; ``images=False`` lets a driver leave
        ``DriverFrame.image`` None where producing it costs work (a video's crops)."""
        return iter(self)

    def reference_landmarks(self) -> np.ndarray | None:
        """The neutral frame's landmarks for relative motion (float32 [68, 2] crop pixels; its
        number in ``reference_index``), or None where there is no reference (a photo)."""
        return None


def _pick_reference(costs: Iterator[tuple[int, np.ndarray]], reference: Reference, what: str,
                    on_note: Callable[[str], None]) -> tuple[int, np.ndarray]:
    """(frame, landmarks) of the reference among (frame, landmarks) pairs: the lowest
    ``neutral_cost`` for "auto", else the frame asked for (noted when its mouth is open)."""
    want = 0 if reference == "first" else reference
    best: tuple[float, int, np.ndarray] | None = None
    for index, landmarks in costs:
        if reference == "auto":
            cost = float(neutral_cost(landmarks))
            if best is None or cost < best[0]:
                best = (cost, index, landmarks)
        elif index == want:
            opening = float(mouth_opening(landmarks))
            if opening > OPEN_MOUTH:
                on_note(f"the reference frame {index} of {what} has an open mouth ({opening:.2f} of the eye distance): "
                        "the avatar's own expression stands for it; --reference auto picks a neutral frame")
            return index, np.asarray(landmarks, np.float32)
    if reference != "auto":
        raise UsageError(f"--reference {reference}: {what} has no such frame with a face")
    if best is None:
        raise NoFaceError(f"no face found in {what} to take as the neutral reference")
    return best[1], np.asarray(best[2], np.float32)


class MotionDriver(Driver):
    """A motion template, or the part ``start_s``/``duration_s`` of one (frames numbered from
    its start; a retargeted template is cut the same way)."""

    kind = "motion"

    def __init__(self, template: MotionTemplate, path: Path | None = None, max_frames: int | None = None,
                 start_s: float = 0.0, duration_s: float | None = None):
        super().__init__(path or Path("<motion>"))
        self.template = template
        self.fps = template.fps
        self.first = round(start_s * template.fps)
        if self.first >= template.num_frames:
            raise UsageError(f"--start {start_s:g} s is past the end of the motion template {self.path.name} "
                             f"({float(template.num_frames / template.fps):.2f} s)")
        n = template.num_frames - self.first
        if duration_s is not None:
            n = min(n, max(1, round(duration_s * template.fps)))
        self.num_frames = n if max_frames is None else min(max_frames, n)
        if not template.face_found[self.first : self.first + self.num_frames].any():
            raise NoFaceError(f"the motion template {self.path} has no frame with a face" + (" in the part asked for" if self.first or duration_s else ""))
        self.crop_size = template.crop_size
        self.retargeted = bool(template.onto)
        self.reference: Reference = "auto"
        self.on_note: Callable[[str], None] = lambda s: None

    def reference_landmarks(self) -> np.ndarray | None:
        t = self.template
        if self.reference == "auto" and t.reference is not None:  # chosen at extraction
            self.reference_index = t.reference_index - self.first
            return t.reference
        pairs = ((i, t.landmarks[self.first + i]) for i in range(self.num_frames) if t.face_found[self.first + i])
        self.reference_index, landmarks = _pick_reference(pairs, self.reference, f"the motion template {self.path.name}", self.on_note)
        return landmarks

    def __iter__(self) -> Iterator[DriverFrame]:
        self.missing_faces = 0
        t = self.template
        for i in range(self.num_frames):
            found = bool(t.face_found[self.first + i])
            self.missing_faces += not found
            yield DriverFrame(index=i, image=None, landmarks=t.landmarks[self.first + i], face_found=found)


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


_AHEAD_DONE = object()


def _ahead(items: Iterator, depth: int = 4) -> Iterator:
    """``items`` made in a helper thread, up to ``depth`` ahead of the consumer, in order: a
    driver's decoding and cropping (PyAV and PIL release the GIL) overlap its landmarks, so the
    passes that measure them (before the first frame, when the render threads wait) take less
    wall time for the same CPU. An error in the helper is raised here; closing stops it."""
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_AHEAD_DONE, None))
        except BaseException as e:  # raised in the consumer
            put((None, e))
        finally:
            items.close()

    helper = threading.Thread(target=run, name="thead-decode", daemon=True)
    helper.start()
    try:
        while True:
            item, error = handoff.get()
            if error is not None:
                raise error
            if item is _AHEAD_DONE:
                return
            yield item
    finally:
        stop.set()
        helper.join()


class VideoDriver(Driver):
    """A video clip (or the part ``start_s``/``duration_s`` of one), read in passes (pass 1:
    stable crop; the reference; pass 2: landmarks), streaming."""

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
            duration = reader.duration_s
        if duration is not None and options.start_s >= duration:
            raise UsageError(f"--start {options.start_s:g} s is past the end of {path.name} ({duration:.2f} s)")
        self.audio_start_s = options.start_s
        if self.num_frames is not None:
            first = round(options.start_s * self.fps)
            n = self.num_frames - first
            if options.duration_s is not None:
                n = min(n, round(options.duration_s * self.fps))
            self.num_frames = max(n, 0)
        if options.max_frames is not None and self.num_frames is not None:
            self.num_frames = min(self.num_frames, options.max_frames)
        self.crop_size = options.crop.size
        self.box: CropBox | None = None
        self._first_landmarks: np.ndarray | None = None
        self._reference: np.ndarray | None = None
        # Raw landmarks (or None: no face) of every frame in order, kept by the first pass that
        # measured them all in sequence, so that the other pass need not measure them again.
        self._raw: list[np.ndarray | None] | None = None

    def _limit(self, reader) -> Iterator:
        """The frames of [start_s, start_s + duration_s), numbered from 0, at most max_frames."""
        o = self.options
        half = 0.5 / float(self.fps or 25)  # a frame belongs where its time rounds to
        count = 0
        for frame in reader:
            if frame.time_s < o.start_s - half:
                continue
            if o.duration_s is not None and frame.time_s >= o.start_s + o.duration_s - half:
                return
            if o.max_frames is not None and count >= o.max_frames:
                return
            yield frame if count == frame.index else replace(frame, index=count)
            count += 1

    def scan(self) -> CropBox:
        """Pass 1: faces in evenly spaced frames -> one crop window for the clip. Fails once
        ``faceless_s`` seconds of video have shown no face."""
        from thead.video import open_video

        n = self.num_frames
        if n is None:
            with open_video(self.path) as reader:
                n = self.num_frames = sum(1 for _ in self._limit(reader))
        if n == 0:
            raise VideoError(f"{self.path} has no frames" + (" in the part asked for" if self.options.start_s else ""))
        fps = float(self.fps or 25)
        wanted = set(int(i) for i in np.linspace(0, n, min(n, self.options.scan_frames), endpoint=False))
        # until a face is found, a frame every half second: a faceless clip fails early
        searching = set(range(0, n, max(1, round(fps / 2))))
        faces: list[Face] = []
        noted = False
        checked = 0
        turn = 0.0
        with open_video(self.path) as reader:
            for frame in self._limit(reader):
                if frame.index not in (wanted if faces else searching):
                    continue
                if not faces and checked and frame.index / fps > self.options.faceless_s:
                    raise NoFaceError(f"no face found in the first {self.options.faceless_s:g} s of the driver {self.path} "
                                      f"({checked} frames checked, any roll up to ±90°)")
                checked += 1
                found = detect_any_roll(self.detector, frame.image, first_turn=turn)
                if not found:
                    continue
                turn = 90.0 * round(float(roll_degrees(found[0].landmarks)) / 90.0)  # try it first next time
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
            raise NoFaceError(f"no face found in the driver {self.path} ({checked} frames checked)")
        roll = float(np.median([roll_degrees(f.landmarks) for f in faces]))
        quarter = 90.0 * round(roll / 90.0)
        # a quarter turn (a lost rotation tag) is undone exactly, keeping the head's own roll
        # as VoxCeleb2's upright crops do; other large rolls are turned upright
        angle = quarter if abs(roll - quarter) < TURN_CROP_DEG else roll
        if angle:
            self.on_note(f"the driver's face is rolled {roll:.0f}°; its crop is turned to match")
        self.box = stable_crop_box(faces, self.options.crop, angle)
        self._first_landmarks = apply_affine(self.box.from_frame(self.crop_size), faces[0].landmarks)
        return self.box

    def _crops(self, keep: Callable[[int], bool] = lambda i: True, *, landmarks: bool = True
               ) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """(frame, 224 crop, raw landmarks or None) for the frames ``keep`` accepts (without
        ``landmarks``: None for all, none measured)."""
        from thead.video import open_video

        box = self.box or self.scan()
        landmarks_of = _CropLandmarks(self.detector, self.options.crop.face_index)
        batch = 1 if landmarks_of.tracker is not None else self.options.landmark_batch
        chunk: list[tuple[int, np.ndarray]] = []

        def flush():
            found = landmarks_of([c for _, c in chunk]) if landmarks else [None] * len(chunk)
            yield from ((i, c, lm) for (i, c), lm in zip(chunk, found))
            chunk.clear()

        def cropped() -> Iterator[tuple[int, np.ndarray]]:
            with open_video(self.path) as reader:
                for frame in self._limit(reader):
                    if keep(frame.index):
                        yield frame.index, crop_image(frame.image, box, self.crop_size, self.options.crop.pad)

        crops = _ahead(cropped()) if landmarks else cropped()
        try:
            for item in crops:
                chunk.append(item)
                if len(chunk) >= batch:
                    yield from flush()
            yield from flush()
        finally:
            crops.close()

    def _measured(self, frames: Iterator[tuple[int, np.ndarray, np.ndarray | None]]
                  ) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """``frames`` (every frame, in order) passed through; their raw landmarks are kept in
        ``_raw`` once all have gone by (at most ``reference_frames`` of them: memory stays
        bounded), for the other pass to reuse. The landmark tracker then has seen the same
        frames in the same order, so the kept landmarks are exactly what it measures again."""
        seen: list[np.ndarray | None] | None = []
        for index, crop, found in frames:
            if seen is not None:
                seen = seen if len(seen) == index and len(seen) < self.options.reference_frames else None
                if seen is not None:
                    seen.append(found)
            yield index, crop, found
        if seen is not None and self._raw is None:
            self._raw = seen

    def reference_landmarks(self) -> np.ndarray:
        """The reference pass: landmarks on the frame asked for, or on <= ``reference_frames``
        evenly spaced frames for "auto" (the most neutral wins). When that is every frame of a
        clip, their landmarks are kept for pass 2 (which then measures none)."""
        if self._reference is None:
            ref = parse_reference(self.options.reference)
            n = self.num_frames or 1
            stride = max(1, -(-n // self.options.reference_frames))
            want = 0 if ref == "first" else ref
            keep = (lambda i: i % stride == 0) if ref == "auto" else (lambda i: i == want)
            if ref != "auto" or stride > 1:
                frames = self._crops(keep)
            elif self._raw is None:
                frames = self._measured(self._crops())
            else:  # pass 2 measured them all already
                frames = ((i, None, lm) for i, lm in enumerate(self._raw))
            pairs = ((i, lm) for i, _, lm in frames if lm is not None)
            try:
                self.reference_index, self._reference = _pick_reference(pairs, ref, f"the driver {self.path.name}", self.on_note)
            finally:
                frames.close()
        return self._reference

    def frames(self, *, images: bool = True) -> Iterator[DriverFrame]:
        """Pass 2: landmarks on every frame, held where no face, smoothed. Frames whose
        landmarks the reference pass measured already are not measured again; without
        ``images`` they are not even decoded (``DriverFrame.image`` is then None)."""
        raw = self._raw
        if raw is None:
            crops = self._measured(self._crops())
        elif images:
            crops = ((i, c, raw[i]) for i, c, _ in self._crops(landmarks=False))
        else:
            crops = ((i, None, lm) for i, lm in enumerate(raw))
        yield from self._smoothed(crops)

    def __iter__(self) -> Iterator[DriverFrame]:
        return self.frames()

    def _smoothed(self, crops: Iterator[tuple[int, np.ndarray | None, np.ndarray | None]]) -> Iterator[DriverFrame]:
        self.missing_faces = 0
        held: np.ndarray | None = None
        smooth = SmoothOptions(self.options.smooth_strength if self.options.smooth else 0.0, float(self.fps or 25))
        ahead = LookaheadSmoother(smooth, self.options.lookahead) if self.options.lookahead else None
        causal = LandmarkSmoother(smooth)
        for index, crop, found in crops:
            if held is None:
                held = self._first_landmarks  # before the first face: the first face pass 1 saw
            if found is None:
                self.missing_faces += 1
            else:
                held = found
            if ahead is None:
                yield DriverFrame(index=index, image=crop, landmarks=causal(held), face_found=found is not None)
                continue
            for landmarks, (i, c, f) in ahead.push(held, (index, crop, found is not None)):
                yield DriverFrame(index=i, image=c, landmarks=landmarks, face_found=f)
        if ahead is not None:
            for landmarks, (i, c, f) in ahead.flush():
                yield DriverFrame(index=i, image=c, landmarks=landmarks, face_found=f)


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
        driver = MotionDriver(MotionTemplate.load(path), path, options.max_frames, options.start_s, options.duration_s)
        driver.reference, driver.on_note = parse_reference(options.reference), on_note
        return driver
    detector = detector if detector is not None else make_detector(options.landmarks)
    if kind == "photo":
        return PhotoDriver(path, options, detector, on_note)
    return VideoDriver(path, options, detector, on_note)


def driver_targets(driver: Driver, avatar_landmarks: np.ndarray, mode: MotionKind, *, images: bool = True
                   ) -> Iterator[tuple[DriverFrame, np.ndarray]]:
    """(driver frame, the avatar's target landmarks float32 [68, 2]) for each frame: what
    ``animate`` draws. A retargeted template is fed as it is; a photo is aligned; relative
    motion is taken against the driver's reference frame (``DriverOptions.reference``).
    ``images=False``: frames may come without their image (``Driver.frames``), cheaper."""
    mode = "absolute" if driver.retargeted else mode
    transfer = MotionTransfer(avatar_landmarks, mode, align=isinstance(driver, PhotoDriver))
    if mode == "relative" and not isinstance(driver, PhotoDriver):
        transfer.set_reference(driver.reference_landmarks())
    for frame in driver.frames(images=images):
        yield frame, transfer(frame.landmarks)


# ------------------------------------------------------------------------ extraction


def extract_motion(
    driver: str | os.PathLike,
    output: str | os.PathLike | None = None,
    options: DriverOptions = DriverOptions(),
    *,
    detector: LandmarkDetector | None = None,
    progress: Progress | None = None,
    onto: tuple[str, np.ndarray] | None = None,
    motion: MotionKind = "relative",
) -> tuple[MotionTemplate, int]:
    """A video's motion template (written to ``output`` when given, atomically).

    ``onto`` = (avatar name, its reference landmarks): the template holds the landmarks
    exactly as ``animate`` would draw them for that avatar (``driver_targets`` with ``motion``),
    marked with the avatar's name so ``animate`` feeds them as they are.
    Returns (template, frames without a face). Only landmarks are kept, never pixels.
    ``progress``: an update after each frame, and notes.
    """
    progress = progress or SILENT
    if output is not None and Path(output).suffix.lower() != TEMPLATE_SUFFIX:
        raise UsageError(f"a motion template is an .npz file, got {Path(output).name}")
    if output is not None:
        refuse_same_file(output, [driver])
    source = open_driver(driver, options, detector=detector, on_note=progress.note)
    if not isinstance(source, VideoDriver):
        raise UsageError(f"motion templates are extracted from videos, got a {source.kind}: {driver}")
    landmarks, found = [], []
    frames = ((f, f.landmarks) for f in source) if onto is None else driver_targets(source, onto[1], motion)
    for frame, target in frames:
        landmarks.append(target)
        found.append(frame.face_found)
        progress.update(len(landmarks), source.num_frames)
    reference = source.reference_landmarks() if onto is None else None
    template = MotionTemplate(
        landmarks=np.stack(landmarks).astype(np.float32),
        face_found=np.array(found, bool),
        fps=source.fps,
        crop_size=source.crop_size,
        onto=onto[0] if onto is not None else "",
        reference=reference,
        reference_index=source.reference_index if reference is not None else -1,
    )
    if output is not None:
        template.save(output)
    return template, source.missing_faces
