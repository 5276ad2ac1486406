"""Temporal smoothing of landmark tracks: the One-Euro filter, causal or zero-lag.

Casiez, Roussel & Vogel, "1€ Filter" (CHI 2012): an exponential smoother whose cut-off rises
with speed, so a still face is held steady (low cut-off removes detector jitter) and a moving
one is followed with little lag (high cut-off). Per point, with sampling period ``Te``::

    a(fc)  = 1 / (1 + 1 / (2π fc Te))
    v̂_t    = a(d_cutoff) · (x_t − x̂_{t−1}) / Te + (1 − a(d_cutoff)) · v̂_{t−1}
    fc_t   = min_cutoff + beta · |v̂_t|
    x̂_t    = a(fc_t) · x_t + (1 − a(fc_t)) · x̂_{t−1}

thead measures speed in face heights per second (the landmarks' extent), so one setting works
for a 224 crop and a 4K frame alike.

``LandmarkSmoother`` is causal: each output depends only on past frames, so it suits a live
source, but it lags a moving mouth by about 2 frames at 25 fps. ``LookaheadSmoother`` is for
files: it averages that forward pass with a backward One-Euro pass run over the next
``lookahead`` frames (a forward-backward filter over a streamed window). The backward pass
leads by what the forward one lags, so the average has no lag; it holds ``lookahead`` frames,
so memory stays constant.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from thead.errors import UsageError

# strength 1 (the default), tuned on the sample clips (dlib landmarks, 25 fps): frame-to-frame
# jitter (mean |second difference|) falls by about half while the smoothed track stays within
# ~1 px of the raw one on average (tests/faces/test_smooth.py measures both).
MIN_CUTOFF_HZ = 1.5
BETA = 2.0
D_CUTOFF_HZ = 1.0


@dataclass(frozen=True)
class SmoothOptions:
    """strength: 0 = off, 1 = default; higher smooths more (lower cut-off, less speed-up).
    ``min_cutoff = MIN_CUTOFF_HZ / strength`` and ``beta = BETA / strength``.
    fps: frame rate of the track (25 for VoxCeleb2)."""

    strength: float = 1.0
    fps: float = 25.0

    def __post_init__(self):
        if not (self.strength >= 0 and math.isfinite(self.strength)):
            raise UsageError(f"smoothing strength must be 0 or more, got {self.strength}")
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise UsageError(f"fps must be positive, got {self.fps}")


def _alpha(cutoff_hz: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt)


class LandmarkSmoother:
    """One-Euro filter over a stream of float [68, 2] landmark arrays (any number of points).

    ``smoother(landmarks, dt=None) -> float32 [N, 2]``; ``dt`` overrides the frame period in
    seconds (variable frame rate). ``reset()`` forgets the history (e.g. at a shot cut or after
    frames without a face).
    """

    def __init__(self, options: SmoothOptions = SmoothOptions()):
        self.options = options
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._v: np.ndarray | None = None

    def __call__(self, landmarks: np.ndarray, dt: float | None = None) -> np.ndarray:
        x = np.asarray(landmarks, np.float64)
        if self.options.strength == 0:
            return x.astype(np.float32)
        if self._x is None or self._x.shape != x.shape:
            self._x, self._v = x.copy(), np.zeros_like(x)
            return x.astype(np.float32)
        dt = 1.0 / self.options.fps if dt is None else dt
        face_h = max(float(np.ptp(x[:, 1])), 1.0)
        velocity = (x - self._x) / dt / face_h  # face heights per second
        a_d = _alpha(D_CUTOFF_HZ, dt)
        self._v = a_d * velocity + (1 - a_d) * self._v
        cutoff = (MIN_CUTOFF_HZ + BETA * np.linalg.norm(self._v, axis=1)) / self.options.strength
        a = _alpha(cutoff, dt)[:, None]
        self._x = a * x + (1 - a) * self._x
        return self._x.astype(np.float32)


T = TypeVar("T")

# 8 frames (0.32 s at 25 fps): the backward pass starts from the raw frame 8 ahead; at the
# default cut-off (alpha ~0.27 at 25 fps) that start weighs 0.73^8 ~ 8% in the output.
LOOKAHEAD_FRAMES = 8


class LookaheadSmoother(Generic[T]):
    """Zero-lag One-Euro for a stream known ``lookahead`` frames ahead (a file).

    ``push(landmarks, item) -> [(smoothed, item), ...]`` hands back frames once ``lookahead``
    later ones have arrived (``item`` travels with its frame); ``flush()`` returns the rest at
    the end. Output t = (forward_t + backward_t) / 2: forward is the causal One-Euro over all
    frames so far, backward a fresh One-Euro run from frame t + lookahead down to t.
    """

    def __init__(self, options: SmoothOptions = SmoothOptions(), lookahead: int = LOOKAHEAD_FRAMES):
        if lookahead < 1:
            raise UsageError(f"look-ahead must be 1 frame or more, got {lookahead}")
        self.options, self.lookahead = options, lookahead
        self._forward = LandmarkSmoother(options)
        self._window: deque[tuple[np.ndarray, np.ndarray, T]] = deque()  # (raw, forward, item)

    def _emit(self) -> tuple[np.ndarray, T]:
        raw, forward, item = self._window[0]
        if self.options.strength == 0:
            self._window.popleft()
            return raw.astype(np.float32), item
        backward = LandmarkSmoother(self.options)
        for later, _, _ in reversed(self._window):
            out = backward(later)
        self._window.popleft()
        return ((forward.astype(np.float64) + out) / 2).astype(np.float32), item

    def push(self, landmarks: np.ndarray, item: T = None) -> list[tuple[np.ndarray, T]]:
        raw = np.asarray(landmarks, np.float64)
        self._window.append((raw, self._forward(raw), item))
        return [self._emit()] if len(self._window) > self.lookahead else []

    def flush(self) -> list[tuple[np.ndarray, T]]:
        out = []
        while self._window:
            out.append(self._emit())
        return out
