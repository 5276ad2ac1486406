"""Enrolment: photos or a video of a person -> an ``Avatar`` (both encoders, once).

    source -> K shots (floor(linspace(0, N, K)), ref §1.8) -> face crop (VoxCeleb2 framing)
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
from thead.model import ENCODE_NETWORKS, LSR

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
    """

    num_shots: int = 8
    landmarks: DetectorKind = "auto"
    crop: CropOptions = field(default_factory=CropOptions)
    device: str | None = None
    overwrite: bool = False

    def __post_init__(self):
        if self.num_shots < 1:
            raise UsageError(f"--shots must be 1 or more, got {self.num_shots}")


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
    """The authors' few-shot selection (ref §1.8): floor(linspace(0, n, k, endpoint=False))."""
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


def _folder_shots(folder: Path, k: int, make: ShotMaker, on_note) -> Iterator[Shot]:
    photos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not photos:
        raise UsageError(f"{folder} has no photos ({', '.join(IMAGE_SUFFIXES)})")
    if k > len(photos):
        on_note(f"{folder} has {len(photos)} photo(s); using all of them (K = {len(photos)})")
    for i in shot_indices(len(photos), k):
        try:
            shot = make(load_image(photos[i]), str(photos[i]), required=False)
        except ImageError as e:
            on_note(f"skipping {photos[i].name}: {e}")
            continue
        if shot is None:
            on_note(f"skipping {photos[i].name}: no face found")
            continue
        yield shot


def _video_shots(video: Path, k: int, make: ShotMaker, on_note) -> Iterator[Shot]:
    """K frames by the linspace rule; a frame without a face is replaced by the next frame
    that has one (before the next chosen frame). Streams: one decoded frame at a time."""
    from thead.video import open_video

    with open_video(video) as reader:
        n = reader.num_frames
    if n is None:
        with open_video(video) as reader:
            n = sum(1 for _ in reader)
    if n == 0:
        raise NoFaceError(f"{video} has no frames")
    targets = shot_indices(n, k)
    bounds = targets[1:] + [n]
    j = 0
    with open_video(video) as reader:
        for frame in reader:
            while j < len(targets) and frame.index >= bounds[j]:
                on_note(f"no face in frames {targets[j]}-{bounds[j] - 1} of {video.name}; one shot fewer")
                j += 1
            if j >= len(targets):
                break
            if frame.index < targets[j]:
                continue
            shot = make(frame.image, f"frame {frame.index} of {video}", required=False)
            if shot is not None:
                yield shot
                j += 1


def collect_shots(source: str | os.PathLike, options: EnrollOptions, detector: LandmarkDetector,
                  on_note: Callable[[str], None] = lambda s: None) -> list[Shot]:
    """The K shots of ``source`` (a folder of photos, one photo or a video)."""
    source = Path(source)
    kind = source_kind(source)
    make = ShotMaker(detector, options.crop, on_note)
    if kind == "photo":
        if options.num_shots > 1:
            on_note(f"one photo gives one shot (K = 1); pass a folder or a video for K = {options.num_shots}")
        shots = [make(load_image(source), str(source), required=True)]
    elif kind == "folder":
        shots = list(_folder_shots(source, options.num_shots, make, on_note))
    else:
        shots = list(_video_shots(source, options.num_shots, make, on_note))
    if not shots:
        raise NoFaceError(f"no face found in {source}")
    return shots


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


def resolve_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda asked, but no CUDA GPU is available")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UsageError(f"unknown device {device!r} (cpu, cuda, cuda:N)") from None


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
    on_note: Callable[[str], None] = lambda s: None,
) -> Avatar:
    """Enroll ``source`` as avatar ``name`` and (with ``save``) store it.

    ``model``: an LSR with the encoders (else loaded from ``weights``: a folder, a Hub repo id,
    or None for ``$THEAD_WEIGHTS``/the default repo). ``on_note`` receives one-line remarks for
    the user (several faces, skipped photos, fewer shots). Raises ``NoFaceError`` when no shot
    has a face, ``AvatarError`` when the name is taken (without ``options.overwrite``).
    """
    # 1. Check inputs before any heavy work.
    check_name(name)
    store = store if store is not None else AvatarStore()
    if save and store.exists(name) and not options.overwrite:
        raise AvatarError(f"an avatar named '{name}' already exists (choose another --name or use --overwrite)")
    source_kind(Path(source))
    device = resolve_device(options.device)

    loaded = model is None
    if model is None:  # weights problems surface before any face work
        model = load_encoders(weights, device)

    # 2. Shots: crops, landmarks, contours.
    with notes_from_warnings(on_note):
        detector = detector if detector is not None else make_detector(options.landmarks, device=str(device))
        shots = collect_shots(source, options, detector, on_note)

    # 3. Both encoders, batched over the K shots, and the avatar.
    avatar = avatar_from_shots(
        shots, name, model, source=str(Path(source).resolve()), landmarks=detector.name,
        crop_scale=float(options.crop.scale), weights=_weights_label(weights, loaded),
    )
    if save:
        store.save(avatar, overwrite=options.overwrite)
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
