"""Real drivers made hard: a clip that opens mid-word (neutral reference), a sideways copy of a
clip (rolled faces, turned crops), a faceless clip (fails early), a part of a clip (--start,
--duration), and a template retargeted onto an avatar."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from thead.errors import NoFaceError, UsageError, VideoError
from thead.faces import load_image
from thead.faces.landmarks import DlibDetector
from thead.faces.pose import inner_lip_gaps, mouth_opening, roll_degrees
from thead.motion import DriverOptions, MotionTemplate, MotionTransfer, driver_targets, extract_motion, open_driver, parse_reference

CLIP_61 = "test_videos/id00061/mMOd25Ag7XY/00239.mp4"
CLIP_17 = "test_videos/id00017/OLguY5ofUrY/00039.mp4"
AVATAR_SHOTS = "fsth_eval_subset/train/id00017/OLguY5ofUrY/combined"
WIDEST_61 = 23  # the frame of CLIP_61 with the widest mouth (0.185 face heights, dlib)


def write_clip(src: Path, dst: Path, *, first: int = 0, count: int | None = None, turn: int = 0, blank: bool = False) -> Path:
    """Frames [first, first + count) of a real clip re-encoded with PyAV, each turned ``turn``
    quarter turns counter-clockwise (np.rot90), or flat grey (``blank``); no rotation tag."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        rate = inp.streams.video[0].average_rate
        stream = None
        for i, frame in enumerate(inp.decode(video=0)):
            if i < first:
                continue
            if count is not None and i >= first + count:
                break
            image = np.full_like(frame.to_ndarray(format="rgb24"), 128) if blank else frame.to_ndarray(format="rgb24")
            image = np.ascontiguousarray(np.rot90(image, turn))
            if stream is None:
                stream = out.add_stream("libx264", rate=rate)
                stream.height, stream.width = image.shape[:2]
                stream.pix_fmt = "yuv420p"
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    return dst


@pytest.fixture(scope="module")
def mid_word(sample_dir, tmp_path_factory):
    """CLIP_61 cut to open at its widest mouth opening."""
    return write_clip(sample_dir / CLIP_61, tmp_path_factory.mktemp("mid") / "mid.mp4", first=WIDEST_61)


@pytest.fixture(scope="module")
def avatars(sample_dir, detector):
    """Another person's landmarks (8 real id00017 frames) standing for avatars."""
    frames = sorted((sample_dir / AVATAR_SHOTS).glob("*_rgb.png"))[:8]
    return [detector.detect(load_image(p))[0].landmarks for p in frames]


def crossed_fraction(avatar, driver, lips_apart: bool) -> float:
    """Fraction of frames whose retargeted inner lips cross (by more than 0.5% of the eye
    distance, i.e. beyond float rounding)."""
    targets = np.stack([t for _, t in driver_targets_with(driver, avatar, lips_apart)])
    return float((inner_lip_gaps(targets).min(1) < -0.005).mean())


def driver_targets_with(driver, avatar, lips_apart):
    transfer = MotionTransfer(avatar, "relative", lips_apart=lips_apart)
    transfer.set_reference(driver.reference_landmarks())
    for frame in driver:
        yield frame, transfer(frame.landmarks)


@pytest.mark.slow
def test_auto_reference_keeps_lips_apart_on_a_mid_word_clip(mid_word, avatars, detector):
    notes = []
    first = open_driver(mid_word, DriverOptions(reference="first"), detector=detector, on_note=notes.append)
    assert mouth_opening(first.reference_landmarks()) > 0.3  # it opens mid-word...
    assert any("open mouth" in n and "--reference auto" in n for n in notes)  # ...and says so
    auto = open_driver(mid_word, DriverOptions(reference="auto"), detector=detector)
    ref = auto.reference_landmarks()
    assert auto.reference_index > 0 and mouth_opening(ref) < 0.05
    for avatar in avatars[:3]:
        # measured: 97-99% of frames cross with the first frame as neutral, 0% with auto
        assert crossed_fraction(avatar, first, lips_apart=False) > 0.9
        assert crossed_fraction(avatar, auto, lips_apart=False) <= 0.02
        assert crossed_fraction(avatar, first, lips_apart=True) == 0.0
    # the reference frame itself is the avatar's own face
    transfer = MotionTransfer(avatars[0], "relative")
    transfer.set_reference(ref)
    np.testing.assert_allclose(transfer(ref), avatars[0], atol=1e-3)


@pytest.mark.slow
def test_reference_by_number_and_templates(mid_word, detector, tmp_path):
    numbered = open_driver(mid_word, DriverOptions(reference=5), detector=detector)
    numbered.reference_landmarks()
    assert numbered.reference_index == 5
    beyond = open_driver(mid_word, DriverOptions(reference=10_000), detector=detector)
    with pytest.raises(UsageError, match="no such frame"):
        beyond.reference_landmarks()
    template, _ = extract_motion(mid_word, tmp_path / "m.npz", DriverOptions(), detector=detector)
    from_template = open_driver(tmp_path / "m.npz", DriverOptions(reference="auto"))
    ref = from_template.reference_landmarks()
    # the template keeps the frame chosen at extraction (from the raw landmarks of the whole clip)
    assert template.reference is not None and np.array_equal(ref, template.reference)
    assert from_template.reference_index == template.reference_index
    assert template.face_found[template.reference_index]
    assert parse_reference("AUTO") == "auto" and parse_reference("12") == 12
    for bad in ("-1", "middle", -2):
        with pytest.raises(UsageError):
            parse_reference(bad)


@pytest.mark.slow
def test_sideways_clip_is_tracked_in_every_frame(sample_dir, tmp_path, detector):
    upright = open_driver(write_clip(sample_dir / CLIP_17, tmp_path / "up.mp4", count=40), DriverOptions(), detector=detector)
    up = np.stack([f.landmarks for f in upright])
    for turn in (1, -1):
        notes = []
        sideways = open_driver(write_clip(sample_dir / CLIP_17, tmp_path / f"side{turn}.mp4", count=40, turn=turn),
                               DriverOptions(), detector=detector, on_note=notes.append)
        frames = list(sideways)
        assert len(frames) == 40 and all(f.face_found for f in frames) and sideways.missing_faces == 0
        assert any("rolled" in n for n in notes)
        assert sideways.box.angle_deg == -90 * turn  # turned back (clockwise positive); the head's own roll kept
        side = np.stack([f.landmarks for f in frames])
        # the turned crop is the upright clip's crop: same landmarks (measured 0.2 px)
        assert np.abs(roll_degrees(side) - roll_degrees(up)).max() < 3
        err = np.linalg.norm(side - up, axis=-1).mean()
        assert err < 1.0, err
        # and the mouth moves the same way
        assert np.corrcoef(mouth_opening(side), mouth_opening(up))[0, 1] > 0.9


def test_faceless_driver_fails_within_seconds(sample_dir, tmp_path, detector):
    grey = write_clip(sample_dir / CLIP_17, tmp_path / "grey.mp4", blank=True)  # 164 frames, 6.6 s
    driver = open_driver(grey, DriverOptions(faceless_s=2.0), detector=detector)
    with pytest.raises(NoFaceError, match="first 2 s"):
        next(iter(driver))


def test_start_and_duration_pick_a_part(sample_dir, detector):
    whole = np.stack([f.landmarks for f in open_driver(sample_dir / CLIP_61, DriverOptions(smooth=False, reference="first"), detector=detector)])
    part = open_driver(sample_dir / CLIP_61, DriverOptions(smooth=False, start_s=1.0, duration_s=0.8), detector=detector)
    assert part.num_frames == 20 and part.audio_start_s == 1.0
    frames = list(part)
    assert [f.index for f in frames] == list(range(20))
    landmarks = np.stack([f.landmarks for f in frames])
    # the crop window is placed on the part alone, so compare shapes, not positions
    shape = lambda t: t - t.mean(1, keepdims=True)  # noqa: E731
    assert np.abs(shape(landmarks) - shape(whole[25:45])).mean() < 1.5
    with pytest.raises(UsageError, match="past the end"):
        open_driver(sample_dir / CLIP_61, DriverOptions(start_s=60.0), detector=detector)
    for bad in ({"start_s": -1.0}, {"duration_s": 0.0}, {"lookahead": -1}):
        with pytest.raises(UsageError):
            DriverOptions(**bad)


@pytest.mark.slow
def test_template_onto_an_avatar_is_what_animate_draws(mid_word, avatars, detector, tmp_path):
    avatar = avatars[0]
    template, _ = extract_motion(mid_word, tmp_path / "onto.npz", DriverOptions(), detector=detector, onto=("p17", avatar))
    assert template.onto == "p17"
    expected = [t for _, t in driver_targets(open_driver(mid_word, DriverOptions(), detector=detector), avatar, "relative")]
    np.testing.assert_array_equal(template.landmarks, np.stack(expected))
    loaded = MotionTemplate.load(tmp_path / "onto.npz")
    assert loaded.onto == "p17"
    fed = [t for _, t in driver_targets(open_driver(tmp_path / "onto.npz"), avatar, "relative")]
    np.testing.assert_array_equal(np.stack(fed), template.landmarks)  # fed as they are


@pytest.mark.slow
def test_start_and_duration_cut_templates(mid_word, detector, tmp_path):
    template, _ = extract_motion(mid_word, tmp_path / "m.npz", DriverOptions(), detector=detector)
    part = open_driver(tmp_path / "m.npz", DriverOptions(start_s=0.4, duration_s=0.2))
    frames = list(part)
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(np.stack([f.landmarks for f in frames]), template.landmarks[10:15])
    # the reference chosen at extraction still holds, numbered within the part
    np.testing.assert_array_equal(part.reference_landmarks(), template.reference)
    assert part.reference_index == template.reference_index - 10
    with pytest.raises(UsageError, match="past the end"):
        open_driver(tmp_path / "m.npz", DriverOptions(start_s=60.0))


class _CountingDlib(DlibDetector):
    """dlib, counting its face detections (every frame whose landmarks are measured runs one)."""

    detections = 0

    def detect_fast(self, image):
        self.detections += 1
        return super().detect_fast(image)

    def detect(self, image):
        self.detections += 1
        return super().detect(image)


def _pass_2(driver, **kwargs) -> list[tuple]:
    return [(f.index, f.landmarks, f.face_found, f.image) for f in driver.frames(**kwargs)]


def _assert_same_frames(got: list[tuple], want: list[tuple], *, images: bool) -> None:
    assert [g[0] for g in got] == [w[0] for w in want]
    np.testing.assert_array_equal(np.stack([g[1] for g in got]), np.stack([w[1] for w in want]))
    assert [g[2] for g in got] == [w[2] for w in want]
    if images:
        np.testing.assert_array_equal(np.stack([g[3] for g in got]), np.stack([w[3] for w in want]))
    else:
        assert all(g[3] is None for g in got)


@pytest.mark.slow
@pytest.mark.parametrize("clip", [CLIP_61, CLIP_17])
def test_passes_share_their_landmarks_exactly(sample_dir, clip):
    """Pass 2 takes the landmarks the "auto" reference pass measured on every frame (and the
    reference pass those of a pass 2 that ran first) without detecting again: the same values
    as measuring them, on real clips; a driver longer than ``reference_frames`` measures."""
    detector = _CountingDlib()
    first = open_driver(sample_dir / clip, DriverOptions(), detector=detector)
    measured = _pass_2(first)  # pass 2 before any reference pass: measures every frame
    assert detector.detections >= len(measured) > 100

    detector.detections = 0
    reference = first.reference_landmarks()  # from pass 2's landmarks
    assert detector.detections == 0

    second = open_driver(sample_dir / clip, DriverOptions(), detector=detector)
    np.testing.assert_array_equal(second.reference_landmarks(), reference)  # measures every frame
    assert second.reference_index == first.reference_index
    detector.detections = 0
    _assert_same_frames(_pass_2(second, images=False), measured, images=False)
    _assert_same_frames(_pass_2(second), measured, images=True)
    assert detector.detections == 0

    long = open_driver(sample_dir / clip, DriverOptions(reference_frames=40), detector=detector)
    long.reference_landmarks()  # every 4th frame only
    detector.detections = 0
    _assert_same_frames(_pass_2(long, images=False), measured, images=True)
    assert detector.detections >= len(measured)


def test_decoding_ahead_stops_with_its_pass_and_raises_its_errors(sample_dir, detector, tmp_path):
    """The helper thread that decodes and crops ahead ends when a pass stops early, and a
    decoding error in it reaches the caller as the usual one-line VideoError."""
    import threading

    def helpers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "thead-decode"]

    driver = open_driver(sample_dir / CLIP_61, DriverOptions(reference_frames=40), detector=detector)
    frames = driver.frames()
    assert [next(frames).index for _ in range(3)] == [0, 1, 2]
    assert helpers()
    frames.close()
    assert not helpers()

    data = bytearray((sample_dir / CLIP_61).read_bytes())
    data[len(data) // 2 : len(data) // 2 + 20_000] = bytes(20_000)  # a damaged middle
    (tmp_path / "damaged.mp4").write_bytes(bytes(data))
    damaged = open_driver(tmp_path / "damaged.mp4", DriverOptions(reference="first"), detector=detector)
    with pytest.raises(VideoError, match="truncated or corrupt"):
        list(damaged.frames())
    assert not helpers()
