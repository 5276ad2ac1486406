"""Streaming video I/O with PyAV: frames in, frames out, memory constant in the clip's length.

Reading: ``open_video(path)`` validates the file at once (exists, is a video, has a video
stream, is not truncated, has at least one frame) and then yields ``Frame``s one at a time,
upright (the container's display matrix is applied, as players and the ffmpeg CLI do), with
real presentation times (variable frame rate clips keep their own timing in ``time_s``).

Writing: ``VideoWriter`` encodes H.264 yuv420p (BT.709, limited range, tagged) to a temporary
name in the target's folder and renames it when the ``with`` block ends without error; any
exception, Ctrl-C included, removes the temporary. The audio of ``audio_from`` is remuxed
packet by packet (re-encoded to AAC only when its codec cannot go into the container) and
trimmed to the video's duration, like ``ffmpeg -shortest``.

Every failure a user can cause is one line: ``VideoError`` for inputs, ``OutputError`` for
outputs (folder missing or read-only, disk full).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from thead._atomic import atomic_file
from thead.errors import OutputError, UsageError, VideoError
from thead.validate import MIN_IMAGE_SIDE

__all__ = [
    "Frame",
    "VideoReader",
    "VideoWriter",
    "open_video",
    "read_video",
    "write_video",
    "write_image",
    "orient",
    "display_transform",
]

#: Audio codecs the MP4/MOV muxers accept as they are; anything else is re-encoded to AAC.
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"})
_MP4_FAMILY = frozenset({".mp4", ".m4v", ".mov"})
_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame.

    ``index`` counts from 0 in presentation order; ``time_s`` is its presentation
    time in seconds from the start of the file (from the stream's pts, so real for variable
    frame rate clips); ``image`` is HxWx3 uint8 RGB, already upright.
    """

    index: int
    time_s: float
    image: np.ndarray


def _reason(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return text[:1].lower() + text[1:]


# --------------------------------------------------------------------------- orientation

# FFmpeg's display matrix (AV_PKT_DATA_DISPLAYMATRIX, 9 int32, a b u / c d v / x y w with a..d
# in 16.16 fixed point) restricted to its 2x2 part's signs -> (counter-clockwise quarter
# turns, transpose first). Each entry was checked against the ffmpeg CLI's own autorotation
# (tests/test_video.py re-checks all eight).
_ORIENTATIONS: dict[tuple[int, int, int, int], tuple[int, bool]] = {
    (1, 0, 0, 1): (0, False),  # identity
    (1, 0, 0, -1): (1, True),  # vertical flip
    (-1, 0, 0, 1): (3, True),  # horizontal flip
    (-1, 0, 0, -1): (2, False),  # 180 degrees
    (0, -1, 1, 0): (1, False),  # 90 degrees counter-clockwise
    (0, 1, -1, 0): (3, False),  # 90 degrees clockwise
    (0, 1, 1, 0): (0, True),  # transpose
    (0, -1, -1, 0): (2, True),  # anti-transpose
}


def display_transform(matrix: Iterable[int] | None = None, *, rotate_tag: str | None = None) -> tuple[int, bool]:
    """(counter-clockwise quarter turns, transpose first) that make stored frames upright.

    ``matrix``: the 9 int32 of FFmpeg's display matrix (None when absent). ``rotate_tag``: the
    legacy ``rotate`` stream tag (degrees clockwise), used only when there is no matrix.
    Rotations that are not multiples of 90 degrees snap to the nearest quarter turn.
    """
    if matrix is not None:
        m = [int(v) for v in matrix]
        if len(m) != 9:
            raise ValueError(f"a display matrix has 9 entries, got {len(m)}")
        a, b, c, d = m[0], m[1], m[3], m[4]
        if (a, b, c, d) != (0, 0, 0, 0):
            # Snap to the dominant axis: a rotation by theta has |cos| or |sin| >= 1/sqrt(2).
            if abs(a) + abs(d) >= abs(b) + abs(c):
                key = (int(np.sign(a)) or 1, 0, 0, int(np.sign(d)) or 1)
            else:
                key = (0, int(np.sign(b)) or 1, int(np.sign(c)) or 1, 0)
            return _ORIENTATIONS[key]
    if rotate_tag:
        try:
            clockwise = float(rotate_tag)
        except ValueError:
            return (0, False)
        return (-round(clockwise / 90) % 4, False)
    return (0, False)


def orient(image: np.ndarray, transform: tuple[int, bool]) -> np.ndarray:
    """Apply ``display_transform``'s (quarter turns, transpose) to an HxWxC image."""
    turns, transpose = transform
    if transpose:
        image = image.transpose(1, 0, 2)
    if turns % 4:
        image = np.rot90(image, turns)
    return np.ascontiguousarray(image) if (turns % 4 or transpose) else image


def _frame_matrix(frame) -> list[int] | None:
    for side in frame.side_data:
        if side.type.name == "DISPLAYMATRIX":
            return np.frombuffer(bytes(side), dtype="<i4").tolist()
    return None


# --------------------------------------------------------------------------------- reading


def _frame_rate(stream, duration_s: float | None, path: Path) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    if stream.frames and duration_s:
        return Fraction(stream.frames) / Fraction(duration_s).limit_denominator(1_000_000)
    raise VideoError(f"{path} has no frame rate")


class VideoReader:
    """A video file opened for streaming: iterate it once for ``Frame``s.

    Attributes: ``path``; ``fps`` (``Fraction``, the stream's average rate, e.g. exactly
    30000/1001; for variable frame rate clips use ``Frame.time_s``); ``num_frames`` (the count
    the container declares, None when it does not say); ``size`` (width, height) of the upright
    frames; ``mirrored`` and ``rotation``: stored frames are mirrored left-right (when
    ``mirrored``) and then turned ``rotation`` degrees counter-clockwise (0, 90, 180 or -90) to
    come out upright, from the display matrix or the legacy ``rotate`` tag; ``has_audio``;
    ``duration_s`` (None when unknown).

    Decoding uses FFmpeg's threads. Holds one decoded frame at a time.
    """

    def __init__(self, path: str | os.PathLike):
        import av

        self.path = Path(path)
        if not self.path.exists():
            raise VideoError(f"{self.path} does not exist")
        if self.path.is_dir():
            raise VideoError(f"{self.path} is a folder, not a video")
        try:
            self._container = av.open(str(self.path), metadata_errors="ignore")
        except (av.error.FFmpegError, OSError) as e:
            raise VideoError(f"{self.path} is not a readable video ({_reason(e)})") from None
        try:
            self._setup()
        except BaseException:
            self._container.close()
            raise

    def _setup(self) -> None:
        container = self._container
        if not container.streams.video:
            raise VideoError(f"{self.path} has no video frames (no video stream)")
        stream = self._stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        self.has_audio = bool(container.streams.audio)
        if stream.duration is not None and stream.time_base is not None:
            self.duration_s: float | None = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            self.duration_s = container.duration / 1e6
        else:
            self.duration_s = None
        self.fps = _frame_rate(stream, self.duration_s, self.path)
        self.num_frames = self._check_index()
        # The container's start time (microseconds; the earliest stream) is time 0, so
        # time_s stays in step with the audio even when the video starts later.
        self._start_s = (container.start_time or 0) / 1e6
        self._decoded = 0
        self._frames = self._decode()
        try:
            self._first = next(self._frames)
        except StopIteration:
            raise VideoError(f"{self.path} has zero frames") from None
        self._transform = display_transform(_frame_matrix(self._first), rotate_tag=stream.metadata.get("rotate"))
        turns, transpose = self._transform
        # transpose == left-right mirror, then a quarter turn counter-clockwise
        quarter_turns = (turns + transpose) % 4
        self.mirrored = transpose
        self.rotation = (0, 90, 180, -90)[quarter_turns]
        w, h = self._first.width, self._first.height
        self.size = (h, w) if quarter_turns % 2 else (w, h)
        if min(w, h) < MIN_IMAGE_SIDE:
            raise VideoError(f"{self.path} has {w}x{h} px frames, too small to hold a face (at least {MIN_IMAGE_SIDE} px a side)")
        self._iterated = False

    def _check_index(self) -> int | None:
        """The declared frame count; raises for a file cut short.

        A file cut short (a copy or download interrupted) still opens when its index comes
        first (mp4 "faststart"); its index then points past the end of the file. In mp4/mov
        sample tables, frames the demuxer drops (edit lists) are marked discard.
        """
        entries = self._stream.index_entries
        if not len(entries):
            return int(self._stream.frames) or None
        size = self.path.stat().st_size
        shown = missing = 0
        for e in entries:
            shown += not e.is_discard
            missing += e.pos + e.size > size
        if missing:
            have = len(entries) - missing
            raise VideoError(f"{self.path} is truncated: only {have} of {len(entries)} frames are in the file")
        return shown

    def _decode(self) -> Iterator:
        import av

        try:
            for packet in self._container.demux(self._stream):
                for frame in packet.decode():
                    yield frame
        except av.error.FFmpegError as e:
            raise VideoError(
                f"{self.path} is truncated or corrupt: decoding failed after {self._decoded} frames ({_reason(e)})"
            ) from None

    def _to_frame(self, frame) -> Frame:
        kwargs = {"src_color_range": frame.color_range} if frame.color_range else {}
        image = orient(frame.to_ndarray(format="rgb24", **kwargs), self._transform)
        if frame.pts is not None and frame.time_base is not None:
            time_s = float(frame.pts * frame.time_base) - self._start_s
        else:
            time_s = float(self._decoded / self.fps)
        out = Frame(index=self._decoded, time_s=time_s, image=image)
        self._decoded += 1
        return out

    def __iter__(self) -> Iterator[Frame]:
        if self._iterated:
            raise RuntimeError("a VideoReader is iterated once; open the video again to re-read it")
        self._iterated = True
        first, self._first = self._first, None
        yield self._to_frame(first)
        for frame in self._frames:
            yield self._to_frame(frame)

    def close(self) -> None:
        self._frames.close()
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        n = self.num_frames if self.num_frames is not None else "?"
        return f"VideoReader({str(self.path)!r}, {self.size[0]}x{self.size[1]}, fps={self.fps}, frames={n})"


def open_video(path: str | os.PathLike) -> VideoReader:
    """Open ``path`` for streaming (use as a context manager); raises ``VideoError``."""
    return VideoReader(path)


def read_video(path: str | os.PathLike) -> Iterator[Frame]:
    """All frames of ``path``, one at a time (the file is closed when the iterator ends)."""
    with open_video(path) as reader:
        yield from reader


# --------------------------------------------------------------------------------- writing


class VideoWriter:
    """H.264 writer: ``with VideoWriter(path, fps, (w, h), audio_from=src) as w: w.write(rgb)``.

    ``fps``: a ``Fraction`` (or int), kept exactly (30000/1001 stays 30000/1001). ``size``:
    (width, height), both even (yuv420p). ``audio_from``: a media file whose first audio stream
    is copied, trimmed to the video's length (None, or a file without audio: silent output).
    ``crf``/``preset``: libx264 quality (lower crf = better; 18 is visually lossless) and
    speed. Frames are ``uint8`` HxWx3 RGB. Nothing appears at ``path`` unless the ``with``
    block ends without an exception.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: Fraction | int,
        size: tuple[int, int],
        audio_from: str | os.PathLike | None = None,
        *,
        audio_start_s: float = 0.0,
        crf: int = 18,
        preset: str = "veryfast",
    ):
        self.path = Path(path)
        self.fps = Fraction(fps)
        if self.fps <= 0:
            raise UsageError(f"frame rate must be positive, got {self.fps}")
        width, height = (int(v) for v in size)
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise VideoError(f"H.264 (yuv420p) needs a positive even width and height, got {width}x{height}")
        self.size = (width, height)
        self.audio_from = Path(audio_from) if audio_from is not None else None
        if self.audio_from is not None and not self.audio_from.is_file():
            raise VideoError(f"{self.audio_from} (audio source) does not exist")
        self.audio_start_s = float(audio_start_s)  # the source audio from here on (a cut driver)
        self.crf, self.preset = crf, preset
        self.frames_written = 0
        self._stack: contextlib.ExitStack | None = None
        self._container = self._source = None
        self._audio_out = self._audio_in = None
        self._audio_packets: Iterator | None = None
        self._pending = None  # the next audio packet or frame, held until the video reaches it
        self._transcode = False

    # -- setup -------------------------------------------------------------------------
    def __enter__(self) -> VideoWriter:
        import av

        self._stack = contextlib.ExitStack()
        try:
            tmp = self._stack.enter_context(atomic_file(self.path))
            options = {"movflags": "+faststart"} if self.path.suffix.lower() in _MP4_FAMILY else {}
            try:
                self._container = av.open(str(tmp), "w", options=options)
            except (av.error.FFmpegError, ValueError) as e:
                raise OutputError(f"cannot write a video to {self.path} ({_reason(e)})") from None
            self._add_video_stream()
            if self.audio_from is not None:
                self._add_audio_stream()
        except BaseException as e:
            self._abort(e)
            raise
        return self

    def _add_video_stream(self) -> None:
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width, stream.height = self.size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = 1 / self.fps
        # Tag what write() converts to, so players decode the colours that were meant.
        cc = stream.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1  # BT.709, limited
        stream.options = {"crf": str(self.crf), "preset": self.preset}
        self._video = stream

    def _add_audio_stream(self) -> None:
        import av

        try:
            self._source = av.open(str(self.audio_from), metadata_errors="ignore")
        except (av.error.FFmpegError, OSError) as e:
            raise VideoError(f"{self.audio_from} (audio source) is not readable ({_reason(e)})") from None
        if not self._source.streams.audio:
            return  # a silent driver gives a silent result
        audio_in = self._audio_in = self._source.streams.audio[0]
        copyable = self.path.suffix.lower() not in _MP4_FAMILY or audio_in.codec_context.name in MP4_AUDIO_CODECS
        if copyable:
            self._audio_out = self._container.add_stream_from_template(audio_in)
        else:
            self._transcode = True
            cc = audio_in.codec_context
            # Unordered layouts ("2 channels", from WAV) are not valid for AAC: take the usual
            # layout for the channel count.
            layout = _DEFAULT_LAYOUTS.get(cc.layout.nb_channels, "stereo")
            self._audio_out = self._container.add_stream("aac", rate=cc.sample_rate or 48000, layout=layout)
        self._audio_offset_s = (self._source.start_time or 0) / 1e6 + self.audio_start_s
        self._audio_packets = self._audio_items()

    def _audio_items(self) -> Iterator:
        """Source packets (copy) or decoded frames (transcode), in presentation order."""
        import av

        try:
            for packet in self._source.demux(self._audio_in):
                if self._transcode:
                    yield from packet.decode()
                elif packet.dts is not None:
                    yield packet
        except av.error.FFmpegError as e:
            raise VideoError(f"{self.audio_from}: its audio cannot be read ({_reason(e)})") from None

    # -- writing -----------------------------------------------------------------------
    def write(self, image: np.ndarray) -> None:
        """Append one frame: uint8 HxWx3 RGB of the writer's size."""
        import av
        from av.video.reformatter import ColorRange, Colorspace

        if self._container is None:
            raise RuntimeError("use VideoWriter as a context manager: with VideoWriter(...) as w: w.write(frame)")
        width, height = self.size
        if image.shape != (height, width, 3) or image.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 {height}x{width}x3, got {image.dtype} {image.shape}")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame = frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG)
        frame.pts = self.frames_written
        self._emit(self._video.encode(frame))
        self.frames_written += 1
        self._mux_audio_until(float(self.frames_written / self.fps))

    def _mux(self, packets) -> None:
        """Write encoded packets (the one place output bytes hit the disk)."""
        for packet in packets:
            self._container.mux(packet)

    def _emit(self, packets) -> None:
        try:
            self._mux(packets)
        except OSError as e:
            raise _output_error(e, self.path) from e

    def _mux_audio_until(self, end_s: float) -> None:
        """Interleave: mux source audio that starts before ``end_s`` seconds."""
        if self._audio_packets is None:
            return
        while True:
            if self._pending is None:
                self._pending = next(self._audio_packets, None)
                if self._pending is None:
                    self._audio_packets = None
                    return
            item = self._pending
            start_s = float(item.pts * item.time_base) - self._audio_offset_s if item.pts is not None else 0.0
            if start_s >= end_s:
                return
            self._pending = None
            if start_s < 0 and self.audio_start_s:  # before the cut
                continue
            if self._transcode:
                item.pts = None  # the encoder numbers its own output samples
                self._emit(self._audio_out.encode(item))
            else:
                if self.audio_start_s:
                    shift = round(self.audio_start_s / item.time_base)
                    item.pts -= shift
                    if item.dts is not None:
                        item.dts -= shift
                item.stream = self._audio_out
                self._emit([item])

    # -- finishing -----------------------------------------------------------------------
    def _finish(self) -> None:
        if self.frames_written == 0:
            raise VideoError(f"no frames were given for {self.path}")
        self._emit(self._video.encode(None))
        # -shortest: audio that starts after the last frame ends is dropped.
        self._mux_audio_until(float(self.frames_written / self.fps))
        if self._transcode:
            self._emit(self._audio_out.encode(None))
        try:
            self._close_containers()  # writes the index (and moves it to the front)
        except OSError as e:
            raise _output_error(e, self.path) from e

    def _close_containers(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None
        if self._container is not None:
            container, self._container = self._container, None
            container.close()

    def _abort(self, error: BaseException) -> None:
        """Close everything without raising and let the atomic file remove the temporary."""
        with contextlib.suppress(Exception):
            if self._audio_packets is not None:
                self._audio_packets.close()
        with contextlib.suppress(Exception):
            self._close_containers()
        self._container = None
        if self._stack is not None:
            stack, self._stack = self._stack, None
            with contextlib.suppress(BaseException):
                stack.__exit__(type(error), error, error.__traceback__)

    def __exit__(self, exc_type, exc, tb) -> bool:
        import av

        if exc_type is not None:
            self._abort(exc)
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise _output_error(exc, self.path) from exc
            return False
        try:
            self._finish()
        except BaseException as e:
            self._abort(e)
            if isinstance(e, av.error.FFmpegError) and not isinstance(e, OSError):
                raise OutputError(f"cannot finish {self.path} ({_reason(e)})") from e
            raise
        stack, self._stack = self._stack, None
        stack.__exit__(None, None, None)  # rename the temporary onto the target
        return False


def _output_error(e: OSError, path: Path) -> OutputError:
    if e.errno == errno.ENOSPC:
        return OutputError(f"disk full while writing {path}; nothing was written")
    return OutputError(f"cannot write {path} ({_reason(e)})")


def write_video(
    frames: Iterable[np.ndarray | Frame],
    path: str | os.PathLike,
    fps: Fraction | int,
    *,
    audio_from: str | os.PathLike | None = None,
    crf: int = 18,
    preset: str = "veryfast",
) -> int:
    """Encode an iterable of frames (arrays or ``Frame``s) to ``path``; returns the count.

    The size comes from the first frame. Consumes the iterable lazily (constant memory).
    """
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise VideoError(f"no frames were given for {path}")
    image = first.image if isinstance(first, Frame) else first
    height, width = image.shape[:2]
    with VideoWriter(path, fps, (width, height), audio_from, crf=crf, preset=preset) as writer:
        writer.write(image)
        for item in it:
            writer.write(item.image if isinstance(item, Frame) else item)
    return writer.frames_written


_IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write uint8 HxWx3 RGB (or HxW gray) to ``path`` (.png or .jpg), atomically."""
    from PIL import Image

    path = Path(path)
    fmt = _IMAGE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"cannot write an image as {path.name}: use .png or .jpg")
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"images must be uint8 HxW or HxWx3, got {image.dtype} {image.shape}")
    options = {"quality": 95} if fmt == "JPEG" else {}
    with atomic_file(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format=fmt, **options)
    return path
