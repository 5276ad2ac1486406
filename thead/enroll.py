"""Enrolment: photos or a video of a person -> an ``Avatar`` (both encoders, once).

    source -> K shots (the best frame of each of K equal parts; or the authors' floor(linspace(0,
              N, K)), ref §1.8) -> face crop (VoxCeleb2 framing)
           -> 68 landmarks on the 224 crop -> contour drawing (ref §1.3)
           -> E^s, E^l on [rgb ‖ contour], averaged over the K shots (ref §4.6) -> avatar store

The landmarks are detected again on the 224 crop, as the authors detected them on VoxCeleb2's
224 frames (ref §1.3), so the contour the encoders see is drawn from landmarks measured at the
networks' own scale.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from thead.avatar import Avatar, AvatarInfo, AvatarStore, check_name, limit_photo, now_utc
from thead.errors import AvatarError, ImageError, NoFaceError, UsageError
from thead.faces import (
    ContourRenderer,
    CropOptions,
    Face,
    FaceCrop,
    LandmarkDetector,
    crop_face,
    load_image,
    make_detector,
    select_face,
    to_tensor,
)
from thead.faces.images import IMAGE_SUFFIXES
from thead.faces.landmarks import DetectorKind
from thead.faces.pose import eye_opening, yaw_asymmetry
from thead.model import ENCODE_NETWORKS, LSR
from thead.progress import SILENT, Progress
from thead.runtime import resolve_device
from thead.validate import check_one_person

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass(frozen=True)
class EnrollOptions:
    """How to enroll.

    num_shots: K, the number of photos or video frames encoded (at most the number available;
        one photo gives K = 1). The authors evaluate K = 1, 4, 8, 16, 32; more shots give a
        better likeness at a cost of ~50 ms per shot on a CPU, once.
    landmarks: landmark backend, "auto" (FAN when installed and cached, else dlib), "dlib", "fan".
    crop: framing of the face crops (``--crop-scale``, ``--face N``).
    device: where the encoders run (None: CUDA when present, else CPU).
    overwrite: replace an existing avatar of the same name.
    one_person: refuse shots that show different people (by default a note says so).
    pick: how a video's frames or a folder's photos become the K shots: "best" (default: the
        source cut in K equal parts, and in each the best of ``candidates`` evenly spaced
        frames: eyes open, frontal, sharp, the crop inside the picture, ``shot_cost``) or
        "even" (the authors' evenly spaced frames, ref §1.8, for comparisons with the paper).
    """

    num_shots: int = 8
    landmarks: DetectorKind = "auto"
    crop: CropOptions = field(default_factory=CropOptions)
    device: str | None = None
    overwrite: bool = False
    one_person: bool = False
    pick: Literal["best", "even"] = "best"
    candidates: int = 4

    def __post_init__(self):
        if self.num_shots < 1:
            raise UsageError(f"--shots must be 1 or more, got {self.num_shots}")
        if self.pick not in ("best", "even"):
            raise UsageError(f"shot pick must be 'best' or 'even', got {self.pick!r}")
        if self.candidates < 1:
            raise UsageError(f"candidates must be 1 or more, got {self.candidates}")


@dataclass(frozen=True, eq=False)
class Shot:
    """One enrolment shot: its crop (uint8 [224, 224, 3]), landmarks on the crop (float32 [68, 2]),
    contour drawing (uint8 [224, 224, 3]) and the source image it came from."""

    crop: FaceCrop
    landmarks: np.ndarray
    contour: np.ndarray
    source_image: np.ndarray
    where: str


@contextlib.contextmanager
def notes_from_warnings(on_note: Callable[[str], None]) -> Iterator[None]:
    """Route ``warnings`` raised by the face stages (detector fallback, small faces) to
    ``on_note`` as one-line remarks instead of Python warning blocks (main thread only)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            seen = set()
            for w in caught:
                text = str(w.message)
                if text not in seen:
                    seen.add(text)
                    on_note(text)


def shot_indices(n: int, k: int) -> list[int]:
    """The authors' few-shot selection (ref §1.8), for enrolment and evaluation alike:
    floor(linspace(0, n, k, endpoint=False)); N=32, K=4 -> [0, 8, 16, 24]; K > N gives N."""
    k = min(k, n)
    return [int(math.floor(v)) for v in np.linspace(0, n, k, endpoint=False)]


def source_kind(source: Path) -> str:
    """'folder', 'photo' or 'video' (by suffix); ``UsageError`` when it does not exist."""
    if not source.exists():
        raise UsageError(f"{source} does not exist")
    if source.is_dir():
        return "folder"
    suffix = source.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "photo"
    raise UsageError(f"{source}: unknown file type {suffix!r} (photos: {', '.join(IMAGE_SUFFIXES)}; videos: {', '.join(VIDEO_SUFFIXES)})")


def landmarks_on_crop(detector: LandmarkDetector, crop: FaceCrop) -> np.ndarray:
    """68 landmarks measured on the crop itself (the face overlapping the mapped landmarks
    most); the source landmarks mapped into the crop when the detector finds nothing there."""
    faces = detector.detect(crop.image)
    if not faces:
        return crop.landmarks
    centre = crop.landmarks.mean(axis=0)
    best = min(faces, key=lambda f: float(np.linalg.norm(f.landmarks.mean(axis=0) - centre)))
    return best.landmarks.astype(np.float32)


def sharpness(image: np.ndarray, landmarks: np.ndarray) -> float:
    """Variance of the Laplacian of the grey face region (inside the landmarks' box) of a
    crop: higher is sharper (Pech-Pacheco et al. 2000); motion blur and defocus lower it."""
    grey = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    (x0, y0), (x1, y1) = np.clip(landmarks.min(0), 0, None).astype(int), np.ceil(landmarks.max(0)).astype(int) + 1
    face = grey[y0:y1, x0:x1]
    if face.shape[0] < 3 or face.shape[1] < 3:
        return 0.0
    lap = face[1:-1, :-2] + face[1:-1, 2:] + face[:-2, 1:-1] + face[2:, 1:-1] - 4 * face[1:-1, 1:-1]
    return float(lap.var())


def inside_fraction(crop: FaceCrop, image_size: tuple[int, int]) -> float:
    """The share of the crop window that lies inside the picture (1: no padding)."""
    w, h = image_size
    b = crop.box
    x = max(0.0, min(b.cx + b.side / 2, w - 0.5) - max(b.cx - b.side / 2, -0.5))
    y = max(0.0, min(b.cy + b.side / 2, h - 0.5) - max(b.cy - b.side / 2, -0.5))
    return x * y / (b.side * b.side)


def shot_cost(shot: Shot) -> float:
    """How poor a shot is (lower is better), comparable between frames of one source: closed
    eyes (aspect ratio under 0.2) cost most, then a turned head (yaw beyond 0.1), a crop
    reaching past the picture, and blur (log of the Laplacian variance, so only ratios count)."""
    lm = shot.landmarks
    closed = max(0.2 - float(eye_opening(lm)), 0.0) / 0.2  # 0 open .. 1 shut
    turned = max(float(yaw_asymmetry(lm)) - 0.1, 0.0)
    outside = 1.0 - inside_fraction(shot.crop, (shot.source_image.shape[1], shot.source_image.shape[0]))
    blur = -0.25 * math.log(sharpness(shot.crop.image, lm) + 1.0)
    return 4.0 * closed + 2.0 * turned + 2.0 * outside + blur


class ShotMaker:
    """Detect -> pick the face -> crop -> landmarks on the crop -> contour."""

    def __init__(self, detector: LandmarkDetector, options: CropOptions, on_note: Callable[[str], None]):
        self.detector, self.options, self.on_note = detector, options, on_note
        self.renderer = ContourRenderer(options.size)

    def __call__(self, image: np.ndarray, where: str, *, required: bool) -> Shot | None:
        faces = self.detector.detect(image)
        if not faces:
            if required:
                raise NoFaceError(f"no face found in {where}")
            return None
        face, note = select_face(faces, self.options, where)
        if note:
            self.on_note(note)
        return self.shot(image, face, where)

    def shot(self, image: np.ndarray, face: Face, where: str) -> Shot:
        crop = crop_face(image, face, self.options)
        landmarks = landmarks_on_crop(self.detector, crop)
        return Shot(crop=crop, landmarks=landmarks, contour=self.renderer.draw(landmarks), source_image=image, where=where)


def _parts(n: int, k: int, candidates: int) -> list[list[int]]:
    """For each of the K shots, the frames it is chosen among: [start of the part] for one
    candidate (the authors' frames), else up to ``candidates`` evenly spaced frames of the
    part, its start first."""
    starts = shot_indices(n, k)
    ends = starts[1:] + [n]
    return [sorted(set(int(v) for v in np.linspace(a, b, min(candidates, b - a), endpoint=False))) for a, b in zip(starts, ends)]


def _folder_shots(folder: Path, k: int, candidates: int, make: ShotMaker, on_note) -> Iterator[Shot]:
    photos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not photos:
        raise UsageError(f"{folder} has no photos ({', '.join(IMAGE_SUFFIXES)})")
    if k > len(photos):
        on_note(f"{folder} has {len(photos)} photo(s); using all of them (K = {len(photos)})")

    def shot_of(i: int) -> Shot | None:
        try:
            shot = make(load_image(photos[i]), str(photos[i]), required=False)
        except ImageError as e:
            on_note(f"skipping {photos[i].name}: {e}")
            return None
        if shot is None:
            on_note(f"skipping {photos[i].name}: no face found")
        return shot

    for part in _parts(len(photos), k, candidates):
        shots = [s for s in map(shot_of, part) if s is not None]
        if shots:
            yield min(shots, key=shot_cost)


def _video_shots(video: Path, k: int, candidates: int, make: ShotMaker, on_note) -> Iterator[Shot]:
    """K shots, the best of each part's candidate frames (``_parts``); a part whose candidates
    have no face falls back on its first later frame with one. Streams: one decoded frame at a
    time, and only each part's best shot so far is kept."""
    from thead.video import open_video

    with open_video(video) as reader:
        n = reader.num_frames
    if n is None:
        with open_video(video) as reader:
            n = sum(1 for _ in reader)
    if n == 0:
        raise NoFaceError(f"{video} has no frames")
    parts = _parts(n, k, candidates)
    ends = [p[0] for p in parts[1:]] + [n]
    j, best = 0, None
    with open_video(video) as reader:
        for frame in reader:
            while j < len(parts) and frame.index >= ends[j]:
                if best is not None:
                    yield best
                else:
                    on_note(f"no face in frames {parts[j][0]}-{ends[j] - 1} of {video.name}; one shot fewer")
                j, best = j + 1, None
            if j >= len(parts):
                break
            wanted = frame.index in parts[j] or (best is None and frame.index > parts[j][-1])
            if not wanted:
                continue
            shot = make(frame.image, f"frame {frame.index} of {video}", required=False)
            if shot is not None and (best is None or shot_cost(shot) < shot_cost(best)):
                best = shot
    if j < len(parts) and best is not None:
        yield best


def collect_shots(source: str | os.PathLike, options: EnrollOptions, detector: LandmarkDetector,
                  on_note: Callable[[str], None] = lambda s: None) -> list[Shot]:
    """The K shots of ``source`` (a folder of photos, one photo or a video)."""
    source = Path(source)
    kind = source_kind(source)
    make = ShotMaker(detector, options.crop, on_note)
    candidates = options.candidates if options.pick == "best" else 1
    if kind == "photo":
        if options.num_shots > 1:
            on_note(f"one photo gives one shot (K = 1); pass a folder or a video for K = {options.num_shots}")
        shots = [make(load_image(source), str(source), required=True)]
    elif kind == "folder":
        shots = list(_folder_shots(source, options.num_shots, candidates, make, on_note))
    else:
        shots = list(_video_shots(source, options.num_shots, candidates, make, on_note))
    if not shots:
        raise NoFaceError(f"no face found in {source}")
    note_closed_eyes(shots, on_note)
    return shots


CLOSED_EYES = 0.18  # eye aspect ratio below which the lids are (half) shut (about 0.25-0.35 open)


def note_closed_eyes(shots: list[Shot], on_note: Callable[[str], None]) -> None:
    """One note naming the chosen shots whose eyes are shut: the avatar learns its eyes from
    them (``--pick best`` avoids such frames when the source has better ones)."""
    closed = [s.where for s in shots if float(eye_opening(s.landmarks)) < CLOSED_EYES]
    if closed:
        on_note(f"closed eyes in {len(closed)} of {len(shots)} shot(s): {', '.join(closed)}; "
                "the avatar's eyes come from its shots, so prefer photos with open eyes")


def encode_shots(model: LSR, shots: list[Shot], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """E^s, E^l over the K shots in one batch -> (z_style, z_layout) float32 [1, z_dim] on the CPU."""
    rgb = torch.stack([to_tensor(s.crop.image) for s in shots])[None].to(device)
    contour = torch.stack([to_tensor(s.contour) for s in shots])[None].to(device)
    dtype = next(model.style_encoder.parameters()).dtype
    with torch.inference_mode():
        latents = model.encode(rgb.to(dtype), contour.to(dtype))
    return latents.z_style.float().cpu().clone(), latents.z_layout.float().cpu().clone()


def load_encoders(weights: str | os.PathLike | None, device: str | torch.device = "cpu") -> LSR:
    """E^s and E^l only (what enrolment needs)."""
    return LSR.from_pretrained(weights, device=device, networks=ENCODE_NETWORKS)


def _weights_label(weights: str | os.PathLike | None, loaded: bool) -> str:
    """How the weights were named, for the avatar's metadata (a folder as an absolute path)."""
    if weights is not None:
        return str(Path(weights).resolve()) if Path(weights).is_dir() else str(weights)
    if not loaded:
        return ""
    from thead.hub import DEFAULT_REPO_ID, WEIGHTS_ENV

    return os.environ.get(WEIGHTS_ENV) or DEFAULT_REPO_ID


def avatar_from_shots(shots: list[Shot], name: str, model: LSR, *, source: str, landmarks: str, crop_scale: float,
                      weights: str = "") -> Avatar:
    """Encode the shots (both encoders, one batch) and assemble the avatar; the first shot's
    source image is kept (downscaled if huge) for paste-back."""
    if model.style_encoder is None or model.layout_encoder is None:
        raise UsageError("enrolment needs weights with the style and layout encoders")
    model_device = next(model.style_encoder.parameters()).device
    z_style, z_layout = encode_shots(model, shots, model_device)
    first = shots[0]
    photo, photo_to_crop = limit_photo(first.source_image, first.crop.from_frame)
    return Avatar(
        info=AvatarInfo(
            name=check_name(name),
            weights_sha256=getattr(model, "weights_sha256", None) or "",
            weights=weights,
            created=now_utc(),
            source=source,
            num_shots=len(shots),
            landmarks=landmarks,
            crop_scale=crop_scale,
            photo_size=(photo.shape[1], photo.shape[0]),
            z_dim=int(z_style.shape[1]),
        ),
        z_style=z_style,
        z_layout=z_layout,
        shots=np.stack([s.crop.image for s in shots]),
        landmarks=np.stack([s.landmarks for s in shots]).astype(np.float32),
        photo=photo,
        photo_to_crop=photo_to_crop,
    )


def enroll(
    source: str | os.PathLike,
    name: str,
    options: EnrollOptions = EnrollOptions(),
    *,
    model: LSR | None = None,
    weights: str | os.PathLike | None = None,
    store: AvatarStore | None = None,
    save: bool = True,
    detector: LandmarkDetector | None = None,
    progress: Progress | None = None,
) -> Avatar:
    """Enroll ``source`` as avatar ``name`` and (with ``save``) store it.

    ``model``: an LSR with the encoders (else loaded from ``weights``: a folder, a Hub repo id,
    or None for ``$THEAD_WEIGHTS``/the default repo). ``progress`` receives one-line notes for
    the user (several faces, skipped photos, fewer shots). Raises ``NoFaceError`` when no shot
    has a face, ``AvatarError`` when the name is taken (without ``options.overwrite``).
    """
    # 1. Check inputs before any heavy work.
    on_note = (progress or SILENT).note
    check_name(name)
    store = store if store is not None else AvatarStore()
    if save and store.exists(name) and not options.overwrite:
        raise AvatarError(f"an avatar named '{name}' already exists (choose another --name or use --overwrite)")
    if save:
        store.check_writable()  # THEAD_HOME a file or read-only: said now, not after the work
    source_kind(Path(source))
    device = resolve_device(options.device)

    loaded = model is None
    if model is None:  # weights problems surface before any face work
        model = load_encoders(weights, device)

    # 2. Shots: crops, landmarks, contours.
    with notes_from_warnings(on_note):
        detector = detector if detector is not None else make_detector(options.landmarks, device=str(device))
        shots = collect_shots(source, options, detector, on_note)
    check_one_person(shots, refuse=options.one_person, on_note=on_note)

    # 3. Both encoders, batched over the K shots, and the avatar.
    avatar = avatar_from_shots(
        shots, name, model, source=str(Path(source).resolve()), landmarks=detector.name,
        crop_scale=float(options.crop.scale), weights=_weights_label(weights, loaded),
    )
    if save:
        replaced = store.overwrite_note(name) if options.overwrite else None
        store.save(avatar, overwrite=options.overwrite)
        if replaced:
            on_note(replaced)
    return avatar


def avatar_sheet(avatar: Avatar) -> np.ndarray:
    """One picture of what an avatar holds: a column per shot with its crop, its contour drawing
    and the two overlaid, and a first column with the paste-back photo, the first shot's crop
    window outlined. uint8 [3·S, (K+1)·S, 3] with S the crop side (224)."""
    from PIL import Image, ImageDraw

    size = avatar.shots.shape[1]
    renderer = ContourRenderer(size)
    photo = Image.fromarray(avatar.photo)
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [size - 0.5, size - 0.5], [-0.5, size - 0.5]])
    outline = [tuple(p) for p in corners @ avatar.crop_to_photo[:2, :2].T + avatar.crop_to_photo[:2, 2]]
    ImageDraw.Draw(photo).polygon(outline, outline=(255, 64, 64), width=max(2, round(max(photo.size) / 200)))
    photo.thumbnail((size, 3 * size))
    columns = [np.zeros((3 * size, size, 3), np.uint8)]
    columns[0][: photo.height, : photo.width] = np.asarray(photo)
    for shot, landmarks in zip(avatar.shots, avatar.landmarks):
        contour = renderer.draw(landmarks)
        drawn = contour.max(axis=2, keepdims=True) > 0
        overlay = np.where(drawn, contour, (shot * 0.6).astype(np.uint8))
        columns.append(np.concatenate([shot, contour, overlay], axis=0))
    return np.concatenate(columns, axis=1)
