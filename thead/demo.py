"""``thead demo``: a result with one command, no photos or videos of your own.

It enrolls scikit-image's bundled astronaut portrait (``skimage.data.astronaut()``, Eileen
Collins, NASA, public domain) and animates it with a synthetic motion built from the portrait's
own landmarks: a nod, a turn, blinks and speech-like mouth movement (``synthetic_motion``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from thead.animate import AnimateOptions, AnimateResult, Animator, DType
from thead.avatar import AvatarStore
from thead.enroll import ShotMaker, _weights_label, avatar_from_shots, notes_from_warnings
from thead.errors import WeightsError
from thead.faces import CropOptions, make_detector
from thead.model import ENCODE_NETWORKS, LSR, RENDER_NETWORKS
from thead.motion import MotionTemplate
from thead.progress import SILENT, Progress
from thead.renderer import Renderer
from thead.runtime import resolve_device

DEMO_SOURCE = "skimage.data.astronaut() (NASA, public domain)"


@dataclass(frozen=True)
class DemoOptions:
    """output: the video written. seconds, fps: length and rate of the synthetic motion.
    paste_back: composite into the whole 512x512 portrait. name: the avatar saved to the store
    (only when the name is free or already the demo's), so it can be animated again later."""

    output: Path = Path("demo.mp4")
    seconds: float = 4.0
    fps: int = 25
    paste_back: bool = False
    device: str | None = None
    dtype: DType = "fp32"
    name: str = "astronaut"
    save_avatar: bool = True


# ------------------------------------------------------------------------ synthetic motion

# Depth of each landmark in face widths (towards the camera), a rough average face: the jaw at
# the back, the nose protruding. Used only to turn 2D landmarks into a plausible head rotation.
_NOSE_DEPTH = {27: 0.08, 28: 0.12, 29: 0.17, 30: 0.22, 31: 0.10, 32: 0.13, 33: 0.15, 34: 0.13, 35: 0.10}
_JAW_DROP = {5: 0.1, 6: 0.3, 7: 0.45, 8: 0.55, 9: 0.45, 10: 0.3, 11: 0.1}  # chin follows the mouth


def _depth(landmarks: np.ndarray) -> np.ndarray:
    c = landmarks.mean(axis=0)
    width = float(np.ptp(landmarks[:, 0]))
    u = (landmarks[:, 0] - c[0]) / width
    z = 0.35 * np.sqrt(np.clip(1 - (2 * u) ** 2, 0, None))  # a cylinder-like face
    for i, d in _NOSE_DEPTH.items():
        z[i] += d
    return z * width


def _rotate(points: np.ndarray, depth: np.ndarray, centre: np.ndarray, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotate 2D points with per-point depth about ``centre`` (radians) and project them
    orthographically."""
    p = np.column_stack([points - centre, depth - depth.mean()])
    cy, sy, cp, sp, cr, sr = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(roll), math.sin(roll)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    q = p @ (r_roll @ r_pitch @ r_yaw).T
    return q[:, :2] + centre


def _bump(t: np.ndarray, start: float, end: float) -> np.ndarray:
    """0 outside [start, end], rising and falling smoothly (a raised cosine) inside."""
    x = np.clip((t - start) / (end - start), 0, 1)
    return 0.5 - 0.5 * np.cos(2 * math.pi * x)


def synthetic_motion(landmarks: np.ndarray, seconds: float = 4.0, fps: int = 25, seed: int = 0) -> MotionTemplate:
    """A motion template moving ``landmarks`` (float [68, 2], crop pixels; frame 0 = as given):
    a nod (first quarter), a turn left and right (second and third quarters), blinks every
    ~1.3 s and speech-like mouth opening (~4 syllables/s) in the second half."""
    base = np.asarray(landmarks, np.float64)
    n = max(1, round(seconds * fps))
    t = np.arange(n) / fps
    rng = np.random.default_rng(seed)
    centre = base.mean(axis=0)
    depth = _depth(base)
    height = float(np.ptp(base[:, 1]))
    # Head pose (radians): nod, then turn; a slight roll with the turn.
    pitch = math.radians(9) * np.sin(2 * math.pi * t / (seconds / 4)) * (t < seconds / 4)
    yaw = math.radians(18) * np.sin(2 * math.pi * (t - seconds / 4) / (seconds / 2)) * ((t >= seconds / 4) & (t < 3 * seconds / 4))
    roll = 0.25 * yaw
    # Blinks: eyelids closed at the bump's peak, ~0.2 s each.
    blink = np.zeros(n)
    for start in np.arange(0.6, seconds, 1.3):
        blink = np.maximum(blink, _bump(t, start, start + 0.22))
    # Speech: syllable-rate opening with random strength, in the second half.
    syllables = np.abs(np.sin(2 * math.pi * 2.0 * t)) * np.interp(t, np.arange(0, seconds + 1, 0.25), rng.uniform(0.3, 1.0, len(np.arange(0, seconds + 1, 0.25))))
    mouth = 0.12 * height * syllables * np.clip((t - seconds / 2) / 0.2, 0, 1)
    frames = np.empty((n, 68, 2), np.float32)
    for i in range(n):
        p = base.copy()
        for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
            gap = p[lower] - p[upper]
            p[upper] += 0.85 * blink[i] * gap
            p[lower] -= 0.1 * blink[i] * gap
        o = mouth[i]
        p[[65, 66, 67], 1] += o
        p[[55, 56, 57, 58, 59], 1] += 0.9 * o
        p[[61, 62, 63], 1] -= 0.15 * o
        p[[49, 50, 51, 52, 53], 1] -= 0.1 * o
        for j, w in _JAW_DROP.items():
            p[j, 1] += w * o
        frames[i] = _rotate(p, depth, centre, float(yaw[i]), float(pitch[i]), float(roll[i]))
    # the reference is the avatar's own face, so relative motion starts from it exactly
    return MotionTemplate(landmarks=frames, face_found=np.ones(n, bool), fps=Fraction(fps), reference=frames[0], reference_index=0)


# ------------------------------------------------------------------------ the demo


def astronaut() -> np.ndarray:
    """The bundled portrait, uint8 [512, 512, 3] RGB."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def _load_weights(weights: str | os.PathLike | None, device) -> LSR:
    try:
        return LSR.from_pretrained(weights, device=device, networks=ENCODE_NETWORKS + RENDER_NETWORKS)
    except WeightsError as e:
        if "--weights" in str(e):
            raise
        raise type(e)(f"{e} (the demo needs LSR weights: pass --weights FOLDER_OR_REPO or set THEAD_WEIGHTS)") from None


def demo(
    options: DemoOptions = DemoOptions(),
    *,
    weights: str | os.PathLike | None = None,
    store: AvatarStore | None = None,
    progress: Progress | None = None,
) -> AnimateResult:
    """Enroll the astronaut, animate it with ``synthetic_motion``, write ``options.output``."""
    progress = progress or SILENT
    # 1. Weights first: without them there is nothing to show.
    device = resolve_device(options.device)
    model = _load_weights(weights, device)

    # 2. Enroll the portrait (K = 1).
    with notes_from_warnings(progress.note):
        detector = make_detector("auto")
        shot = ShotMaker(detector, CropOptions(), progress.note)(astronaut(), "the astronaut portrait", required=True)
    avatar = avatar_from_shots([shot], options.name, model, source=DEMO_SOURCE, landmarks=detector.name, crop_scale=1.0,
                               weights=_weights_label(weights, loaded=True))
    store = store if store is not None else AvatarStore()
    if options.save_avatar:
        if not store.exists(options.name) or store.info(options.name).source == DEMO_SOURCE:
            store.save(avatar, overwrite=True)
        else:
            progress.note(f"an avatar named '{options.name}' exists already; the demo's avatar was not saved")

    # 3. Animate: the encoders are done, so the model becomes the renderer (no copy).
    with notes_from_warnings(progress.note):  # e.g. no C compiler for the fused kernels: a note
        renderer = Renderer.for_avatar(model, avatar, device=device, dtype=options.dtype, copy=False)
    animator = Animator(renderer, avatar, AnimateOptions(paste_back=options.paste_back, device=options.device, dtype=options.dtype))
    motion = synthetic_motion(avatar.reference_landmarks, options.seconds, options.fps)
    return animator(motion, options.output, progress=progress)
