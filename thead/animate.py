"""Animation: an avatar driven by a video, a photo or a motion template, streamed end to end.

    input thread:  decode -> driver crop -> landmarks -> smoothing -> motion transfer -> contour
    main thread:   G^l -> softmax -> G^s (batched; the avatar's state prepared once)
    output thread: paste-back / side-by-side -> encode at the driver's exact fps, with its audio

The three stages hand frames over through small bounded queues, so memory does not grow with
the driver's length and the input and output stages (~4 ms of CPU a frame once a video
driver's reference pass has measured its landmarks: ``benchmarks/animate_bench.py``) overlap
rendering (~460 ms a frame in fp32 on a 2-core CPU; torch releases the GIL while it computes).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from thead._pipeline import Background, Sink
from thead.avatar import Avatar, AvatarStore, PersonalWeights
from thead.compose import PasteBack, even_size, side_by_side
from thead.enroll import notes_from_warnings
from thead.errors import UsageError, VideoError
from thead.faces import ContourRenderer, to_tensor
from thead.model import LSR
from thead.progress import SILENT, Progress
from thead.motion import (
    Driver,
    DriverOptions,
    MotionDriver,
    MotionKind,
    MotionTemplate,
    MotionTransfer,
    PhotoDriver,
    driver_kind,
    driver_targets,
    open_driver,
)
from thead.renderer import DTYPES, DType, Renderer
from thead.validate import check_input_file, check_output, refuse_same_file


@dataclass(frozen=True)
class AnimateOptions:
    """How to animate (each field is a ``thead animate`` option).

    driver: how the driver's landmarks are measured (``thead.motion.DriverOptions``: landmark
        backend, crop, smoothing, the relative-motion reference, start/duration, max frames).
    motion: "relative" (the avatar keeps its face shape; for any driver) or "absolute" (the
        driver's landmarks as they are; self-reenactment). See ``thead.motion``.
    paste_back: composite the rendered crop into the avatar's photo at the photo's resolution.
    compare: put the driver's crop (a motion template: its contour drawing) left of the result.
    audio: a sound file for the output (a motion template's or a photo driver's video has none
        of its own; it replaces a video driver's). A photo driver with audio gives a video of
        the audio's length.
    device: None = CUDA when present, else CPU. dtype: "fp32", "bf16" (CPU or CUDA; about 2x
        faster on CPUs with AVX512-BF16), "fp16" (CUDA only).
    batch: frames per G^l+G^s call (None: 2 on CPU, ``LSR.cpu_chunk``: pairs of frames
        run at the machine's peak, larger batches only add page faults; 8 on CUDA).
    feather: paste-back's soft edge, as a fraction of the crop side.
    queue_frames: frames buffered between stages (bounds memory).
    finetuned: use the avatar's fine-tuned weights when it has some for these base weights.
    compile: run the render step through ``torch.compile`` (``LSR.for_inference_``) instead of
        the packed oneDNN path, which is 5-7% faster on the CPU (README, Performance); for GPUs.
        The first run of a batch size and dtype compiles for minutes (cached on disk); falls
        back to eager rendering with one warning.

    ``AnimateOptions(device="cpu").with_driver(max_frames=25, landmarks="dlib")`` changes
    driver fields without spelling out the rest.
    """

    driver: DriverOptions = field(default_factory=DriverOptions)
    motion: MotionKind = "relative"
    paste_back: bool = False
    compare: bool = False
    device: str | None = None
    dtype: DType = "fp32"
    batch: int | None = None
    audio: Path | None = None
    feather: float = 0.08
    queue_frames: int = 8
    finetuned: bool = True
    compile: bool = False

    def __post_init__(self):
        if not isinstance(self.driver, DriverOptions):
            raise UsageError(f"driver must be DriverOptions, got {type(self.driver).__name__}")
        if self.dtype not in DTYPES:
            raise UsageError(f"unknown dtype {self.dtype!r} (choose fp32, bf16 or fp16)")
        if self.batch is not None and self.batch < 1:
            raise UsageError(f"--batch must be 1 or more, got {self.batch}")
        if not 0.0 <= self.feather <= 0.5:
            raise UsageError(f"feather must be between 0 and 0.5, got {self.feather}")
        if self.queue_frames < 1:
            raise UsageError("queue_frames must be 1 or more")

    def with_driver(self, **changes) -> AnimateOptions:
        """A copy with these ``DriverOptions`` fields changed."""
        return replace(self, driver=replace(self.driver, **changes))


@dataclass(frozen=True, eq=False)
class AnimatedFrame:
    """index: driver frame number. image: uint8 [H, W, 3] RGB, the output frame (224 x 224, the
    photo's size with paste-back, twice as wide with compare). landmarks: float32 [68, 2], the
    target landmarks drawn for this frame (crop pixels). face_found: the driver had a face here."""

    index: int
    image: np.ndarray
    landmarks: np.ndarray
    face_found: bool


@dataclass(frozen=True)
class AnimateResult:
    output: Path
    num_frames: int
    missing_faces: int  # driver frames without a face (they reused the last good landmarks)
    fps: Fraction | None  # None for an image
    size: tuple[int, int]  # (width, height)
    audio: bool
    finetuned: bool
    seconds: float


class Animator:
    """Render one avatar under any number of drivers.

    ``Animator(model, avatar, options)`` renders with a private copy of ``model``'s G^l and G^s
    (``model`` is left untouched), with ``personal`` fine-tuned weights when given and made
    from the same base weights. ``Animator.load(name, options, weights=...)`` does it all from
    the avatar store without the copy. Both go through ``thead.renderer.Renderer``. Then
    ``animator(driver, "out.mp4")`` writes a video (or an image for a photo driver) and
    ``animator.frames(driver)`` yields ``AnimatedFrame``s.
    """

    def __init__(self, model: LSR | Renderer, avatar: Avatar, options: AnimateOptions = AnimateOptions(), *,
                 personal: PersonalWeights | None = None):
        """``model``: base weights (copied), or a ``Renderer`` made for this avatar."""
        self.options, self.avatar = options, avatar
        if isinstance(model, Renderer):
            self.renderer = model
        else:
            self.renderer = Renderer.for_avatar(model, avatar, personal=personal, use_personal=options.finetuned,
                                                device=options.device, dtype=options.dtype, compile=options.compile)
        self.batch = options.batch or self.renderer.batch

    @classmethod
    def load(cls, name: str, options: AnimateOptions = AnimateOptions(), *, weights: str | os.PathLike | None = None,
             store: AvatarStore | None = None) -> Animator:
        """Avatar ``name`` from the store, G^l and G^s from ``weights`` (folder, Hub repo id, or
        None for the ones it was enrolled with), and its fine-tuned weights when they fit."""
        store = store if store is not None else AvatarStore()
        avatar = store.load(name)
        renderer = Renderer.load(avatar, weights=weights, store=store, finetuned=options.finetuned, device=options.device,
                                 dtype=options.dtype, compile=options.compile)
        return cls(renderer, avatar, options)

    @property
    def model(self) -> LSR:
        return self.renderer.model

    @property
    def device(self) -> torch.device:
        return self.renderer.device

    @property
    def finetuned(self) -> bool:
        return self.renderer.finetuned

    @property
    def personal_skipped(self) -> bool:
        return self.renderer.personal_skipped

    # -- stages --------------------------------------------------------------------------
    def open(self, driver: str | os.PathLike | MotionTemplate | Driver, *, on_note: Callable[[str], None] = lambda s: None) -> Driver:
        """A driver object from a path (video, photo, ``.npz``) or a template."""
        if isinstance(driver, Driver):
            return driver
        if isinstance(driver, MotionTemplate):
            d = self.options.driver
            return MotionDriver(driver, max_frames=d.max_frames, start_s=d.start_s, duration_s=d.duration_s)
        with notes_from_warnings(on_note):
            return open_driver(driver, self.options.driver, on_note=on_note)

    def _inputs(self, driver: Driver) -> Iterator[tuple]:
        """Input stage (runs in its own thread): driver frames -> target landmarks -> contours."""
        renderer = ContourRenderer(driver.crop_size)
        for frame, target in driver_targets(driver, self.avatar.reference_landmarks, self.options.motion,
                                             images=self.options.compare):
            contour = renderer.draw(target)
            left = None
            if self.options.compare:
                left = frame.image if frame.image is not None else renderer.draw(frame.landmarks)
            yield frame, target, to_tensor(contour), left

    def _render(self, contours: list[torch.Tensor]) -> np.ndarray:
        return self.renderer.frames(torch.stack(contours))

    def frames(self, driver: str | os.PathLike | MotionTemplate | Driver, *, on_note: Callable[[str], None] = lambda s: None) -> Iterator[AnimatedFrame]:
        """Yield the output frames in order (uint8 RGB), streaming."""
        driver = self.open(driver, on_note=on_note)
        if driver.crop_size != self.renderer.resolution:
            raise UsageError(f"the driver's landmarks are for {driver.crop_size} px crops, the networks take {self.renderer.resolution}")
        paste = None
        if self.options.paste_back:
            paste = PasteBack(self.avatar.photo, self.avatar.photo_to_crop, driver.crop_size, self.options.feather)
        inputs = Background(self._inputs(driver), maxsize=max(self.options.queue_frames, self.batch), name="thead-input")
        try:
            batch: list[tuple] = []
            for item in inputs:
                batch.append(item)
                if len(batch) >= self.batch:
                    yield from self._finish(batch, paste)
                    batch = []
            if batch:
                yield from self._finish(batch, paste)
        finally:
            inputs.close()

    def _finish(self, batch: list[tuple], paste: PasteBack | None) -> Iterator[AnimatedFrame]:
        images = self._render([contour for _, _, contour, _ in batch])
        for (frame, target, _, left), image in zip(batch, images):
            out = paste(image) if paste is not None else image
            if left is not None:
                out = side_by_side(left, out)
            yield AnimatedFrame(index=frame.index, image=out, landmarks=target, face_found=frame.face_found)

    # -- to a file -------------------------------------------------------------------------
    def __call__(
        self,
        driver: str | os.PathLike | MotionTemplate | Driver,
        output: str | os.PathLike,
        *,
        progress: Progress | None = None,
    ) -> AnimateResult:
        """Animate to ``output``: a video (``.mp4``/``.mov``/``.mkv``) at the driver's exact fps
        with its audio, or an image for a photo driver. Written atomically: on any error or
        Ctrl-C nothing appears at ``output``. ``progress``: an update after each frame, and notes."""
        progress = progress or SILENT
        t0 = time.perf_counter()
        output = Path(output)
        if self.options.audio is not None and not Path(self.options.audio).is_file():
            raise VideoError(f"--audio {self.options.audio} does not exist")
        drv = self.open(driver, on_note=progress.note)
        is_image = isinstance(drv, PhotoDriver)
        if is_image and self.options.audio is not None:
            drv, is_image = self._held_photo(drv), False
        check_output(output, "photo" if is_image else drv.kind)
        if is_image:
            return self._write_image(drv, output, t0, progress.note)
        return self._write_video(drv, output, t0, progress)

    def _held_photo(self, photo: PhotoDriver) -> MotionDriver:
        """A photo driver with ``--audio``: the photo's expression, held for the audio's length
        at 25 fps (VoxCeleb2's rate), as a template already made for this avatar."""
        import av

        audio = Path(self.options.audio)
        try:
            with av.open(str(audio), metadata_errors="ignore") as container:
                seconds = (container.duration or 0) / 1e6
        except (av.error.FFmpegError, OSError) as e:
            raise VideoError(f"--audio {audio} is not a readable sound file ({e})") from None
        if seconds <= 0:
            raise VideoError(f"--audio {audio} has no duration")
        fps = Fraction(25)
        n = max(1, int(np.ceil(seconds * fps)))
        target = MotionTransfer(self.avatar.reference_landmarks, self.options.motion, align=True)(photo.landmarks)
        template = MotionTemplate(np.repeat(target[None], n, 0), np.ones(n, bool), fps, photo.crop_size, onto=self.avatar.name)
        return MotionDriver(template, photo.path)

    def _write_image(self, driver: Driver, output: Path, t0: float, on_note) -> AnimateResult:
        from thead.video import write_image

        frame = next(iter(self.frames(driver, on_note=on_note)))
        write_image(output, frame.image)
        h, w = frame.image.shape[:2]
        return AnimateResult(output, 1, 0, None, (w, h), False, self.finetuned, time.perf_counter() - t0)

    def _write_video(self, driver: Driver, output: Path, t0: float, progress: Progress) -> AnimateResult:
        from thead.video import VideoWriter

        frames = self.frames(driver, on_note=progress.note)
        first = next(frames, None)  # the output size is known only once the first frame exists
        if first is None:
            raise UsageError(f"the driver {driver.path} has no frames")
        image = even_size(first.image)
        size = (image.shape[1], image.shape[0])
        # The writer trims the audio to the frames written (--max-frames keeps its part) and
        # starts it where the driver starts (--start).
        audio_from = driver.path if driver.has_audio and driver.kind == "video" else None
        audio_start = driver.audio_start_s if audio_from is not None else 0.0
        if self.options.audio is not None:
            audio_from, audio_start = Path(self.options.audio), 0.0
        count = 0
        try:
            with VideoWriter(output, driver.fps, size, audio_from=audio_from, audio_start_s=audio_start) as writer:
                sink = Sink(lambda im: writer.write(even_size(im)), maxsize=self.options.queue_frames, name="thead-output")
                try:
                    sink.put(first.image)
                    count = 1
                    progress.update(count, driver.num_frames)
                    for frame in frames:
                        sink.put(frame.image)
                        count += 1
                        progress.update(count, driver.num_frames)
                    sink.finish()
                finally:
                    sink.abort()
        finally:
            frames.close()
        return AnimateResult(
            output=output,
            num_frames=count,
            missing_faces=driver.missing_faces,
            fps=driver.fps,
            size=size,
            audio=audio_from is not None,
            finetuned=self.finetuned,
            seconds=time.perf_counter() - t0,
        )


def animate(
    name: str,
    driver: str | os.PathLike | MotionTemplate,
    output: str | os.PathLike,
    options: AnimateOptions = AnimateOptions(),
    *,
    weights: str | os.PathLike | None = None,
    store: AvatarStore | None = None,
    progress: Progress | None = None,
) -> AnimateResult:
    """``thead animate`` as one call: load the avatar and weights, animate, write ``output``."""
    progress = progress or SILENT
    # Cheap checks first: no weights are loaded for a typo in a path.
    if not isinstance(driver, MotionTemplate):
        if not Path(driver).exists():
            raise VideoError(f"driver {driver} does not exist")
        check_input_file(driver, "driver")
        kind = driver_kind(Path(driver))
        check_output(Path(output), "motion" if kind == "photo" and options.audio is not None else kind)
    refuse_same_file(output, [driver, options.audio])
    with notes_from_warnings(progress.note):  # e.g. no C compiler for the fused kernels: a note
        animator = Animator.load(name, options, weights=weights, store=store)
    if animator.personal_skipped:
        progress.note(f"'{name}' has fine-tuned weights made from other base weights; rendering with the base weights")
    return animator(driver, output, progress=progress)
