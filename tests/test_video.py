"""thead.video on the real sample clips (224x224 H.264 25 fps + AAC 16 kHz) and on small clips
made here to carry what the samples lack (rotation metadata, 30000/1001, variable frame rate,
WAV audio, truncation, corruption, zero frames)."""

from __future__ import annotations

import errno
import itertools
import random
import subprocess
import weakref
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from thead.errors import OutputError, UsageError, VideoError
from thead.video import (
    Frame,
    VideoWriter,
    display_transform,
    open_video,
    orient,
    read_video,
    write_image,
    write_video,
)

CLIPS = ("id00017/OLguY5ofUrY/00039.mp4", "id00061/mMOd25Ag7XY/00239.mp4", "id00081/vvLu_7TpP8c/00202.mp4")


@pytest.fixture(scope="module")
def clips(sample_dir) -> list[Path]:
    paths = [sample_dir / "test_videos" / c for c in CLIPS]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"sample clips missing: {missing[0]}")
    return paths


@pytest.fixture(scope="module")
def clip(clips) -> Path:
    return clips[0]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def _streams(path: Path) -> dict[str, str]:
    with av.open(str(path)) as c:
        return {s.type: s.codec_context.name for s in c.streams}


def _audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.dts is not None]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _pattern(h: int, w: int, seed: int = 0) -> np.ndarray:
    """8x8 blocks of random colours: every orientation of it is distinguishable."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 2, (h // 8, w // 8, 3)).astype(np.uint8) * 255
    return np.kron(blocks, np.ones((8, 8, 1), np.uint8))


# ------------------------------------------------------------------------------- reading


def test_sample_clips_metadata_matches_decoding(clips):
    for path in clips:
        with open_video(path) as reader:
            assert reader.fps == Fraction(25) and isinstance(reader.fps, Fraction)
            assert reader.size == (224, 224)
            assert reader.has_audio
            assert reader.rotation == 0 and not reader.mirrored
            frames = list(reader)
        assert len(frames) == reader.num_frames  # the container's count is right
        assert reader.num_frames in (164, 126, 199)
        assert [f.index for f in frames] == list(range(len(frames)))
        assert all(f.image.shape == (224, 224, 3) and f.image.dtype == np.uint8 for f in frames)
        # time_s comes from pts: 25 fps -> 0.04 s apart, from 0.
        times = np.array([f.time_s for f in frames])
        np.testing.assert_allclose(times, np.arange(len(frames)) / 25, atol=1e-6)
        assert reader.duration_s == pytest.approx(len(frames) / 25, abs=0.05)


def test_decoding_is_streaming(clip):
    """The reader keeps no frame once the caller lets it go: memory does not grow with the
    clip (a reader that buffered the clip would keep all 164 alive)."""
    alive = []
    for frame in read_video(clip):
        alive.append(weakref.ref(frame.image))
        del frame  # frames hold no reference cycles: freed at once
        assert sum(r() is not None for r in alive) <= 1
    assert len(alive) == 164


def test_reader_is_single_pass(clip):
    with open_video(clip) as reader:
        assert sum(1 for _ in reader) == 164
        with pytest.raises(RuntimeError, match="once"):
            next(iter(reader))


def test_frame_rate_is_exact_ntsc(tmp_path):
    path = tmp_path / "ntsc.mp4"
    image = _pattern(32, 48)
    with VideoWriter(path, Fraction(30000, 1001), (48, 32)) as writer:
        for _ in range(12):
            writer.write(image)
    with open_video(path) as reader:
        assert reader.fps == Fraction(30000, 1001)  # not 29.97, not 29
        times = [f.time_s for f in reader]
    np.testing.assert_allclose(times, np.arange(12) * 1001 / 30000, atol=1e-6)


def test_variable_frame_rate_keeps_real_timestamps(tmp_path):
    path = tmp_path / "vfr.mp4"
    pts_ms = [0, 33, 66, 150, 200, 400, 433, 700]
    image = _pattern(32, 48)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 48, 32, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for t in pts_ms:
            f = av.VideoFrame.from_ndarray(image, format="rgb24")
            f.pts, f.time_base = t, Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with open_video(path) as reader:
        frames = list(reader)
        assert reader.num_frames == len(pts_ms)
    assert [f.index for f in frames] == list(range(len(pts_ms)))
    np.testing.assert_allclose([f.time_s for f in frames], np.array(pts_ms) / 1000, atol=1e-3)


def _ffmpeg_upright(path: Path) -> np.ndarray:
    """The ffmpeg CLI's first frame, autorotated as players show it (the reference)."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-frames:v", "1"]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    return np.frombuffer(subprocess.run(cmd, capture_output=True, check=True).stdout, np.uint8)


@pytest.mark.parametrize("degrees", [0, 90, 180, -90])
def test_display_matrix_applied_like_ffmpeg(tmp_path, degrees):
    """Clips carrying every rotation x mirror come out as the ffmpeg CLI shows them."""
    image = _pattern(32, 48, seed=3)
    for hflip, vflip in itertools.product((False, True), repeat=2):
        path = tmp_path / f"rot{degrees}{hflip:d}{vflip:d}.mp4"
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=25)
            s.width, s.height, s.pix_fmt = 48, 32, "yuv444p"
            s.options = {"crf": "0"}
            s.set_display_rotation(degrees, hflip=hflip, vflip=vflip)
            for p in s.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                c.mux(p)
            for p in s.encode():
                c.mux(p)
        with open_video(path) as reader:
            ours = next(iter(reader)).image
            size = reader.size
        assert ours.shape[:2] == (size[1], size[0])
        assert size == ((32, 48) if degrees in (90, -90) else (48, 32))
        reference = _ffmpeg_upright(path)
        assert reference.size == ours.size
        reference = reference.reshape(ours.shape)
        assert np.abs(ours.astype(int) - reference).mean() < 3, (degrees, hflip, vflip)
        # ...and the unrotated frame would not have matched (the check can fail).
        if (degrees, hflip, vflip) not in ((0, False, False), (180, True, True)):
            raw = np.asarray(image)
            assert raw.shape != reference.shape or np.abs(raw.astype(int) - reference).mean() > 30


def test_display_transform_rules():
    assert display_transform(None) == (0, False)
    # the legacy tag counts clockwise; a phone's portrait clip says rotate=90
    assert display_transform(None, rotate_tag="90") == (3, False)
    assert display_transform(None, rotate_tag="270") == (1, False)
    one = 1 << 16
    assert display_transform([0, -one, 0, one, 0, 0, 0, 0, 1 << 30]) == (1, False)
    image = _pattern(16, 24)
    assert orient(image, (1, False)).shape == (24, 16, 3)
    np.testing.assert_array_equal(orient(image, (1, False)), np.rot90(image))
    np.testing.assert_array_equal(orient(image, (3, True)), image[:, ::-1])


# -------------------------------------------------------------------------- bad inputs


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and text
    return text


def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match="does not exist") as e:
        open_video(tmp_path / "nope.mp4")
    _one_line(e)


def test_random_bytes_are_not_a_video(tmp_path):
    path = tmp_path / "random.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="not a readable video") as e:
        open_video(path)
    assert str(path) in _one_line(e)


def test_folder_is_not_a_video(tmp_path):
    with pytest.raises(VideoError, match="folder"):
        open_video(tmp_path)


@pytest.fixture(scope="module")
def faststart_copy(clip, tmp_path_factory) -> Path:
    """The clip with its index first (as web-optimised mp4s are), so a cut copy still opens."""
    out = tmp_path_factory.mktemp("faststart") / "fs.mp4"
    with av.open(str(clip)) as src, av.open(str(out), "w", options={"movflags": "+faststart"}) as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            dst.mux(packet)
    return out


def test_truncated_copy(faststart_copy, clip, tmp_path):
    data = faststart_copy.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.9)])
    with pytest.raises(VideoError, match=r"truncated: only \d+ of 164 frames") as e:
        open_video(cut)
    _one_line(e)
    # The original's index is at its end: any cut of it loses the index and cannot be opened.
    cut.write_bytes(clip.read_bytes()[:100_000])
    with pytest.raises(VideoError, match="not a readable video"):
        open_video(cut)


def test_corrupt_middle_reports_frames_decoded(faststart_copy, tmp_path):
    data = bytearray(faststart_copy.read_bytes())
    rng = random.Random(0)
    middle = len(data) // 2
    for k in range(middle, middle + 3000):
        data[k] = rng.randrange(256)
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(data))
    got = 0
    with pytest.raises(VideoError, match=r"decoding failed after (\d+) frames") as e:
        with open_video(bad) as reader:
            for _ in reader:
                got += 1
    assert 0 < got < 164
    assert f"after {got} frames" in _one_line(e)


def test_zero_frame_mp4(tmp_path):
    path = tmp_path / "empty.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 48, 32, "yuv420p"
        c.start_encoding()
    assert path.stat().st_size > 0
    with pytest.raises(VideoError, match="no video frames") as e:
        open_video(path)
    _one_line(e)


def test_audio_only_file(clip, tmp_path):
    path = tmp_path / "audio.m4a"
    with av.open(str(clip)) as src, av.open(str(path), "w") as dst:
        a = dst.add_stream_from_template(src.streams.audio[0])
        for packet in src.demux(src.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = a
                dst.mux(packet)
    with pytest.raises(VideoError, match="no video stream"):
        open_video(path)


# ------------------------------------------------------------------------------- writing


def test_round_trip_keeps_frames_fps_audio_quality(clip, tmp_path):
    out = tmp_path / "out.mp4"
    with open_video(clip) as reader:
        originals = []
        with VideoWriter(out, reader.fps, reader.size, audio_from=clip) as writer:
            for frame in reader:
                originals.append(frame.image)
                writer.write(frame.image)
    assert _leftovers(tmp_path) == ["out.mp4"]
    with open_video(out) as reader:
        assert reader.fps == Fraction(25) and reader.size == (224, 224) and reader.has_audio
        decoded = [f.image for f in reader]
    assert len(decoded) == len(originals) == 164
    psnr = _psnr(np.stack(originals), np.stack(decoded))
    assert psnr >= 35, psnr
    assert _streams(out) == {"video": "h264", "audio": "aac"}
    # Audio is remuxed, not re-encoded: the very same AAC packets.
    assert _audio_packets(out) == _audio_packets(clip)


def test_audio_trimmed_to_video(clip, tmp_path):
    out = tmp_path / "short.mp4"
    with open_video(clip) as reader:
        write_video(itertools.islice(reader, 50), out, reader.fps, audio_from=clip)
    with av.open(str(out)) as c:
        audio = c.streams.audio[0]
        packets = [p for p in c.demux(audio) if p.dts is not None]
        end = max(float((p.pts + p.duration) * p.time_base) for p in packets)
        first = min(float(p.pts * p.time_base) for p in packets)
    # 50 frames = 2.00 s; AAC packets are 1024 samples = 64 ms at 16 kHz.
    assert 2.0 - 0.064 <= end - max(first, 0) <= 2.0 + 0.064 + 1e-6
    with open_video(out) as reader:
        assert sum(1 for _ in reader) == 50


def test_silent_source_gives_silent_output(tmp_path):
    silent = tmp_path / "silent.mp4"
    write_video([_pattern(32, 48)] * 5, silent, 25)
    out = tmp_path / "out.mp4"
    write_video([_pattern(32, 48)] * 5, out, 25, audio_from=silent)
    assert _streams(out) == {"video": "h264"}


def test_wav_audio_is_transcoded_to_aac(tmp_path):
    wav = tmp_path / "tone.wav"
    rate = 16000
    with av.open(str(wav), "w") as c:
        s = c.add_stream("pcm_s16le", rate=rate, layout="mono")
        t = np.arange(rate * 3) / rate
        samples = (np.sin(2 * np.pi * 440 * t) * 10000).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    out = tmp_path / "out.mp4"
    write_video([_pattern(32, 48)] * 25, out, 25, audio_from=wav)  # 1 s of video, 3 s of audio
    assert _streams(out) == {"video": "h264", "audio": "aac"}
    with av.open(str(out)) as c:
        decoded = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
    seconds = decoded.shape[1] / rate
    assert 0.9 < seconds < 1.3  # trimmed to the video (plus AAC's framing)
    assert np.abs(decoded).max() > 0.2  # the tone, not silence


def test_exception_leaves_nothing(tmp_path):
    out = tmp_path / "out.mp4"
    for error in (RuntimeError("render failed"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with VideoWriter(out, 25, (48, 32)) as writer:
                for _ in range(5):
                    writer.write(_pattern(32, 48))
                raise error
        assert _leftovers(tmp_path) == []


def test_disk_full_is_an_output_error_and_leaves_nothing(clip, tmp_path, monkeypatch):
    out = tmp_path / "out.mp4"
    out_before = None
    calls = {"n": 0}
    real_mux = VideoWriter._mux

    def mux(self, packets):
        calls["n"] += 1
        if calls["n"] > 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_mux(self, packets)

    monkeypatch.setattr(VideoWriter, "_mux", mux)
    with pytest.raises(OutputError, match="disk full") as e:
        with open_video(clip) as reader, VideoWriter(out, reader.fps, reader.size, audio_from=clip) as writer:
            for frame in reader:
                writer.write(frame.image)
    _one_line(e)
    assert calls["n"] > 10
    assert not out.exists() and out_before is None
    assert _leftovers(tmp_path) == []


def test_existing_output_is_replaced_only_on_success(tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    with pytest.raises(RuntimeError):
        with VideoWriter(out, 25, (48, 32)) as writer:
            writer.write(_pattern(32, 48))
            raise RuntimeError("stop")
    assert out.read_bytes() == b"previous result"
    write_video([_pattern(32, 48)] * 3, out, 25)
    with open_video(out) as reader:
        assert reader.num_frames == 3


def test_writer_rejects_bad_arguments(tmp_path, clip):
    with pytest.raises(VideoError, match="even"):
        VideoWriter(tmp_path / "odd.mp4", 25, (225, 224))
    with pytest.raises(UsageError, match="frame rate"):
        VideoWriter(tmp_path / "x.mp4", 0, (224, 224))
    with pytest.raises(VideoError, match="does not exist"):
        VideoWriter(tmp_path / "x.mp4", 25, (224, 224), audio_from=tmp_path / "missing.mp4")
    with pytest.raises(OutputError, match="does not exist"):
        with VideoWriter(tmp_path / "no" / "such" / "x.mp4", 25, (224, 224)):
            pass
    with pytest.raises(VideoError, match="no frames"):
        with VideoWriter(tmp_path / "x.mp4", 25, (48, 32)):
            pass
    with pytest.raises(ValueError, match="uint8 32x48x3"):
        with VideoWriter(tmp_path / "x.mp4", 25, (48, 32)) as writer:
            writer.write(np.zeros((48, 32, 3), np.uint8))
    assert _leftovers(tmp_path) == []


def test_write_video_accepts_frames(tmp_path, clip):
    out = tmp_path / "copy.mp4"
    with open_video(clip) as reader:
        n = write_video(itertools.islice(reader, 10), out, reader.fps)
    assert n == 10
    frames = list(read_video(out))
    assert len(frames) == 10 and isinstance(frames[0], Frame)


# -------------------------------------------------------------------------------- images


def test_write_image(tmp_path):
    image = _pattern(32, 48)
    png = write_image(tmp_path / "a.png", image)
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(png)), image)
    jpg = write_image(tmp_path / "a.jpg", image)
    assert Image.open(jpg).format == "JPEG"
    with pytest.raises(UsageError, match=r"\.png or \.jpg"):
        write_image(tmp_path / "a.gif", image)
    with pytest.raises(OutputError, match="does not exist"):
        write_image(tmp_path / "missing" / "a.png", image)
    assert _leftovers(tmp_path) == ["a.jpg", "a.png"]
