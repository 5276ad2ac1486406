"""One-Euro smoothing on real landmark tracks: less jitter, same place; causal, or zero-lag with look-ahead."""

from __future__ import annotations

import numpy as np
import pytest

from thead.errors import UsageError
from thead.faces import LandmarkSmoother, SmoothOptions
from thead.faces.pose import mouth_opening
from thead.faces.smooth import LOOKAHEAD_FRAMES, LookaheadSmoother


def jitter(track: np.ndarray) -> float:
    """Mean |second difference| over frames, points and axes (px/frame²)."""
    return float(np.abs(np.diff(track, n=2, axis=0)).mean())


def smooth(track: np.ndarray, options: SmoothOptions = SmoothOptions()) -> np.ndarray:
    smoother = LandmarkSmoother(options)
    return np.stack([smoother(pts) for pts in track])


@pytest.mark.parametrize("ident", ["id00017/OLguY5ofUrY", "id00061/mMOd25Ag7XY"])
def test_default_smoothing_cuts_jitter_and_stays_close(clip_tracks, ident):
    raw = clip_tracks[ident]
    out = smooth(raw)
    reduction = 1 - jitter(out) / jitter(raw)
    distance = float(np.linalg.norm(out - raw, axis=-1).mean())
    # measured: 72% / 70% less jitter, 1.56 / 1.59 px from the raw track
    assert reduction >= 0.4, reduction
    assert distance <= 2.0, distance


def test_strength_orders_smoothing(clip_tracks):
    raw = clip_tracks["id00017/OLguY5ofUrY"]
    jitters = [jitter(smooth(raw, SmoothOptions(strength=s))) for s in (0.0, 0.5, 1.0, 2.0)]
    assert jitters[0] == pytest.approx(jitter(raw))  # 0 = off
    assert jitters[0] > jitters[1] > jitters[2] > jitters[3]
    np.testing.assert_array_equal(smooth(raw, SmoothOptions(strength=0.0)), raw)


def test_causal_and_resettable(clip_tracks):
    raw = clip_tracks["id00017/OLguY5ofUrY"][:40]
    out = smooth(raw)
    changed = raw.copy()
    changed[30:] += 25.0  # the future changes...
    np.testing.assert_array_equal(smooth(changed)[:30], out[:30])  # ...the past does not
    smoother = LandmarkSmoother()
    smoother(raw[0])
    smoother.reset()
    np.testing.assert_array_equal(smoother(raw[5]), raw[5])  # first frame after reset passes through


def test_scale_invariant(clip_tracks):
    # Speeds are measured in face heights, so a 4x larger frame is smoothed the same way.
    raw = clip_tracks["id00061/mMOd25Ag7XY"][:60]
    np.testing.assert_allclose(smooth(raw * 4), smooth(raw) * 4, rtol=1e-5, atol=1e-3)


def test_follows_a_step_quickly():
    # A face that jumps 40 px (a fast head turn) is followed within a few frames, not dragged.
    rng = np.random.default_rng(0)
    base = rng.uniform(50, 170, size=(68, 2))
    track = np.stack([base + (40.0 if t >= 10 else 0.0) for t in range(20)])
    out = smooth(track)
    assert np.abs(out[14] - track[14]).max() < 2.0


@pytest.mark.parametrize("kwargs", [{"strength": -1}, {"fps": 0}, {"strength": float("inf")}])
def test_bad_options(kwargs):
    with pytest.raises(UsageError):
        SmoothOptions(**kwargs)


# ---------------------------------------------------------------------- zero-lag (files)


def lag_frames(raw: np.ndarray, smoothed: np.ndarray, max_lag: int = 6) -> float:
    """How many frames ``smoothed`` trails ``raw`` (1-D signals): the peak of their
    cross-correlation, refined to a fraction of a frame by a parabola through its neighbours."""
    a, b = raw - raw.mean(), smoothed - smoothed.mean()
    lags = np.arange(-max_lag, max_lag + 1)
    cc = np.array([(a[max(0, -k) : len(a) - max(0, k)] * b[max(0, k) : len(b) - max(0, -k)]).mean() for k in lags])
    i = int(np.argmax(cc))
    if 0 < i < len(cc) - 1:
        denom = cc[i - 1] - 2 * cc[i] + cc[i + 1]
        return float(lags[i] + (0.5 * (cc[i - 1] - cc[i + 1]) / denom if denom else 0.0))
    return float(lags[i])


def smooth_ahead(track: np.ndarray, options: SmoothOptions = SmoothOptions(), lookahead: int = LOOKAHEAD_FRAMES) -> np.ndarray:
    smoother = LookaheadSmoother(options, lookahead)
    out = []
    for i, pts in enumerate(track):
        out += smoother.push(pts, i)
    out += smoother.flush()
    assert [i for _, i in out] == list(range(len(track)))  # every frame, in order, once
    return np.stack([pts for pts, _ in out])


@pytest.mark.parametrize("ident", ["id00017/OLguY5ofUrY", "id00061/mMOd25Ag7XY"])
def test_lookahead_smoothing_has_no_lag(clip_tracks, ident):
    raw = clip_tracks[ident]
    causal, ahead = smooth(raw), smooth_ahead(raw)
    # lag of the mouth opening (what a viewer sees trail the audio), by cross-correlation
    lag_causal = lag_frames(mouth_opening(raw), mouth_opening(causal))
    lag_ahead = lag_frames(mouth_opening(raw), mouth_opening(ahead))
    # measured (25 fps): causal 0.84 / 1.13 frames behind; look-ahead -0.02 / -0.03
    assert lag_causal > 0.5, lag_causal
    assert abs(lag_ahead) < 0.15, lag_ahead
    assert round(lag_ahead) == 0
    # and it smooths at least as well as the causal filter, closer to the raw track
    assert jitter(ahead) <= jitter(causal) * 1.05
    assert np.linalg.norm(ahead - raw, axis=-1).mean() < np.linalg.norm(causal - raw, axis=-1).mean()


def test_lookahead_holds_a_bounded_window(clip_tracks):
    raw = clip_tracks["id00017/OLguY5ofUrY"][:30]
    smoother = LookaheadSmoother(lookahead=5)
    handed = [len(smoother.push(pts)) for pts in raw]
    assert handed == [0] * 5 + [1] * 25  # one frame out per frame in, 5 behind
    assert len(smoother._window) == 5 and len(smoother.flush()) == 5
    # strength 0 passes the track through untouched
    np.testing.assert_array_equal(smooth_ahead(raw, SmoothOptions(strength=0.0)), raw)
    # a step is centred on its frame: half way at the step, no pre-echo beyond the window
    step = np.stack([np.zeros((68, 2)) + (40.0 if t >= 15 else 0.0) + 100 for t in range(30)])
    out = smooth_ahead(step)
    assert abs(out[14, 0, 0] - 100) < 20 and abs(out[15, 0, 0] - 140) < 20
    assert np.abs(out[:15 - LOOKAHEAD_FRAMES - 1] - 100).max() < 1e-6
    with pytest.raises(UsageError):
        LookaheadSmoother(lookahead=0)
