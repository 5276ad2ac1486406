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

import contextlib
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from thead.avatar import Avatar, AvatarStore, PersonalWeights
from thead.enroll import notes_from_warnings, resolve_device
from thead.errors import AvatarError, OutputError, UsageError, VideoError, WeightsError
from thead.faces import ContourRenderer, CropOptions, to_tensor
from thead.faces.landmarks import DetectorKind
from thead.model import LSR, RENDER_NETWORKS, AvatarState
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
from thead.runtime import tune_cpu_allocator
from thead.validate import check_input_file, recorded_weights, refuse_same_file

DType = Literal["fp32", "bf16", "fp16"]
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
VIDEO_OUTPUT_SUFFIXES = (".mp4", ".mov", ".mkv")
IMAGE_OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class AnimateOptions:
    """How to animate (each field is a ``thead animate`` option).

    motion: "relative" (the avatar keeps its face shape; for any driver) or "absolute" (the
        driver's landmarks as they are; self-reenactment). See ``thead.motion``.
    paste_back: composite the rendered crop into the avatar's photo at the photo's resolution.
    compare: put the driver's crop (a motion template: its contour drawing) left of the result.
    smooth, smooth_strength: One-Euro smoothing of the driver's landmarks (0 = off, 1 = default;
        zero-lag forward-backward for files).
    reference: relative motion's neutral driver frame: "auto" (the most neutral: mouth closed,
        eyes open, frontal), "first", or a frame number. See ``thead.motion``.
    start_s, duration_s: the part of a video driver to use (its audio follows).
    audio: a sound file for the output (a motion template's or a photo driver's video has none
        of its own; it replaces a video driver's). A photo driver with audio gives a video of
        the audio's length.
    device: None = CUDA when present, else CPU. dtype: "fp32", "bf16" (CPU or CUDA; about 2x
        faster on CPUs with AVX512-BF16), "fp16" (CUDA only).
    batch: frames per G^l+G^s call (None: 2 on CPU, ``LSR.cpu_chunk``: pairs of frames
        run at the machine's peak, larger batches only add page faults; 8 on CUDA).
    landmarks: the driver's landmark backend. crop_scale, face_index: the driver's crop.
    max_frames: render at most this many frames (None: all).
    feather: paste-back's soft edge, as a fraction of the crop side.
    queue_frames: frames buffered between stages (bounds memory).
    finetuned: use the avatar's fine-tuned weights when it has some for these base weights.
    compile: run the render step through ``torch.compile`` (``LSR.for_inference_``): a few
        percent faster per frame once compiled; the first run of a batch size and dtype compiles
        for minutes (cached on disk); falls back to eager rendering with one warning.
    """

    motion: MotionKind = "relative"
    paste_back: bool = False
    compare: bool = False
    smooth: bool = True
    smooth_strength: float = 1.0
    device: str | None = None
    dtype: DType = "fp32"
    batch: int | None = None
    landmarks: DetectorKind = "auto"
    crop_scale: float = 1.0
    face_index: int = 0
    max_frames: int | None = None
    reference: str | int = "auto"
    start_s: float = 0.0
    duration_s: float | None = None
    audio: Path | None = None
    feather: float = 0.08
    queue_frames: int = 8
    finetuned: bool = True
    compile: bool = False

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise UsageError(f"unknown dtype {self.dtype!r} (choose fp32, bf16 or fp16)")
        if self.batch is not None and self.batch < 1:
            raise UsageError(f"--batch must be 1 or more, got {self.batch}")
        if not 0.0 <= self.feather <= 0.5:
            raise UsageError(f"feather must be between 0 and 0.5, got {self.feather}")
        if self.queue_frames < 1:
            raise UsageError("queue_frames must be 1 or more")
        self.driver_options()  # validates the driver-side fields

    def driver_options(self) -> DriverOptions:
        return DriverOptions(
            landmarks=self.landmarks,
            crop=CropOptions(scale=self.crop_scale, face_index=self.face_index),
            smooth=self.smooth,
            smooth_strength=self.smooth_strength,
            reference=self.reference,
            start_s=self.start_s,
            duration_s=self.duration_s,
            max_frames=self.max_frames,
        )


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


# ------------------------------------------------------------------------ compositing


def _affine_data(out_to_in: np.ndarray, x0: int = 0, y0: int = 0) -> tuple[float, ...]:
    """PIL ``AFFINE`` data for a map from output pixel centres (offset by x0, y0) to input
    pixel centres; PIL works in corner coordinates (centre + 0.5)."""
    a, t = out_to_in[:2, :2], out_to_in[:2, 2]
    c = a @ np.array([x0 - 0.5, y0 - 0.5]) + t + 0.5
    return (a[0, 0], a[0, 1], c[0], a[1, 0], a[1, 1], c[1])


class PasteBack:
    """Composite 224 crops into the avatar's photo with a feathered square mask.

    The rendered crop is warped into the photo by the crop's inverse affine (bilinear) and
    blended with a mask that is 1 inside the crop and falls smoothly to 0 over ``feather`` of
    the crop side at its edges, so the rendered background melts into the photo. Only the
    photo region under the crop is touched.
    """

    def __init__(self, photo: np.ndarray, photo_to_crop: np.ndarray, crop_size: int = 224, feather: float = 0.08):
        self.photo = np.ascontiguousarray(photo)
        self.photo_to_crop = photo_to_crop
        h, w = photo.shape[:2]
        corners = np.array([[-0.5, -0.5], [crop_size - 0.5, -0.5], [-0.5, crop_size - 0.5], [crop_size - 0.5, crop_size - 0.5]])
        to_photo = np.linalg.inv(photo_to_crop)
        pts = corners @ to_photo[:2, :2].T + to_photo[:2, 2]
        x0, y0 = max(int(np.floor(pts[:, 0].min())), 0), max(int(np.floor(pts[:, 1].min())), 0)
        x1, y1 = min(int(np.ceil(pts[:, 0].max())) + 1, w), min(int(np.ceil(pts[:, 1].max())) + 1, h)
        if x1 <= x0 or y1 <= y0:
            raise AvatarError("the avatar's crop lies outside its photo; paste-back is not possible")
        self.region = (x0, y0, x1, y1)
        self._data = _affine_data(photo_to_crop, x0, y0)
        # The mask, evaluated at each region pixel's position in the crop.
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        u = photo_to_crop[0, 0] * xs + photo_to_crop[0, 1] * ys + photo_to_crop[0, 2]
        v = photo_to_crop[1, 0] * xs + photo_to_crop[1, 1] * ys + photo_to_crop[1, 2]
        edge = np.minimum.reduce([u + 0.5, v + 0.5, crop_size - 0.5 - u, crop_size - 0.5 - v])
        ramp = np.clip(edge / max(feather * crop_size, 1e-6), 0.0, 1.0)
        self.mask = (ramp * ramp * (3 - 2 * ramp)).astype(np.float32)[..., None]  # smoothstep
        self._base = self.photo[y0:y1, x0:x1].astype(np.float32)

    @property
    def size(self) -> tuple[int, int]:
        return self.photo.shape[1], self.photo.shape[0]

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.region
        warped = Image.fromarray(crop).transform((x1 - x0, y1 - y0), Image.Transform.AFFINE, self._data, Image.Resampling.BILINEAR)
        blended = self._base + self.mask * (np.asarray(warped, np.float32) - self._base)
        out = self.photo.copy()
        out[y0:y1, x0:x1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
        return out


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left`` scaled to ``right``'s height (keeping its aspect), then both side by side."""
    h = right.shape[0]
    if left.shape[0] != h:
        w = max(1, round(left.shape[1] * h / left.shape[0]))
        left = np.asarray(Image.fromarray(left).resize((w, h), Image.Resampling.BILINEAR))
    return np.concatenate([left, right], axis=1)


def even_size(image: np.ndarray) -> np.ndarray:
    """H.264 in yuv420p needs even sides: repeat the last row/column where one is odd."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float [N, 3, H, W] (any range) -> uint8 [N, H, W, 3], ``round(127.5 + 127.5·x)`` clipped
    (ref §1.1); the conversion runs on the images' device."""
    x = torch.round(127.5 + 127.5 * images.float().clamp(-1, 1)).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


# ------------------------------------------------------------------------ threads


_DONE = object()


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


class _Background:
    """Iterate ``items`` in a daemon thread, handing them over through a bounded queue.

    Exceptions in the thread are re-raised in the consumer; ``close()`` stops the thread
    (used when the consumer stops early, e.g. on Ctrl-C or a render error).
    """

    def __init__(self, items: Iterable, maxsize: int, name: str):
        self._items = items
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        it = iter(self._items)
        try:
            for item in it:
                if not self._put(item):
                    break
            else:
                self._put(_DONE)
        except BaseException as e:  # handed to the consumer, which decides
            self._put(_Raised(e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join(timeout=5)


class _Sink:
    """Call ``consume(item)`` in a daemon thread for items ``put`` through a bounded queue;
    ``finish()`` waits for the rest and re-raises the thread's error, ``abort()`` drops it."""

    def __init__(self, consume: Callable, maxsize: int, name: str):
        self._consume = consume
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._error is not None:
                continue  # drain after a failure
            try:
                self._consume(item)
            except BaseException as e:
                self._error = e

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item) -> None:
        self._check()
        self._queue.put(item)

    def finish(self) -> None:
        self._queue.put(_DONE)
        self._thread.join()
        self._check()

    def abort(self) -> None:
        """Stop without consuming the rest (the caller is failing); waits for the item in hand."""
        if self._thread.is_alive():
            self._error = self._error or RuntimeError("aborted")
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()
            self._queue.put(_DONE)  # the caller is the only producer, so there is room now
            self._thread.join()


# ------------------------------------------------------------------------ the animator


def check_output(output: Path, driver_kind: str) -> None:
    """Fail before any work when ``output`` cannot be written: wrong suffix for the driver, a
    folder, a missing or unwritable parent folder (probed by creating a file there, which also
    catches read-only mounts and root in /sys)."""
    is_image = driver_kind == "photo"
    allowed = IMAGE_OUTPUT_SUFFIXES if is_image else VIDEO_OUTPUT_SUFFIXES
    if output.suffix.lower() not in allowed:
        what = "a photo driver gives an image" if is_image else f"a {driver_kind} driver gives a video"
        raise UsageError(f"{what}: name the output {' or '.join(allowed)}, got {output.name}")
    if output.is_dir():
        raise UsageError(f"output {output} is a folder; give a file name")
    parent = output.parent
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{output.stem}.probe.", dir=parent)
    except OSError as e:
        raise OutputError(f"output folder {parent} is not writable ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)



def check_compatible(model: LSR, avatar: Avatar) -> None:
    """Refuse an avatar whose latents came from other weights (they would mean nothing)."""
    mine, theirs = getattr(model, "weights_sha256", None) or "", avatar.info.weights_sha256
    if mine and mine != theirs:  # an avatar without a hash is refused like one of other weights
        made_with = f"{avatar.weights} (sha256 {theirs[:12]})" if avatar.weights else f"sha256 {theirs[:12]}"
        if not theirs:
            made_with = "weights it does not record (no sha256 in the avatar)"
        raise AvatarError(
            f"avatar '{avatar.name}' was enrolled with other weights, {made_with}, these are sha256 {mine[:12]}; "
            f"pass those with --weights, or enroll it again with these (thead enroll SOURCE --name {avatar.name} --overwrite)"
        )
    z_dim = model.config.z_dim
    if avatar.z_style.shape[-1] != z_dim:
        raise AvatarError(f"avatar '{avatar.name}' has {avatar.z_style.shape[-1]}-d latents, these weights use {z_dim}")


def apply_personal(model: LSR, personal: PersonalWeights) -> None:
    """Put an avatar's fine-tuned G^l and G^s tensors into ``model`` (strict for those two)."""
    own = {k: v for k, v in model.state_dict().items() if k.split(".", 1)[0] in RENDER_NETWORKS}
    state = {k: v for k, v in personal.state.items() if k in own}
    missing = [k for k in own if k not in state]
    if missing:
        raise WeightsError(f"the fine-tuned weights lack {len(missing)} tensors, first: {', '.join(missing[:3])}")
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise WeightsError(f"the fine-tuned weights do not fit these networks ({bad[0]} has shape {tuple(state[bad[0]].shape)})")
    model.load_state_dict(state, strict=False)


class Animator:
    """Render one avatar under any number of drivers.

    ``Animator(model, avatar, options)`` copies G^l and G^s from ``model`` (left untouched),
    applies ``personal`` fine-tuned weights when given and made from the same base weights,
    prepares them for inference on the chosen device and precomputes the avatar's state once.
    ``Animator.load(name, options, weights=...)`` does all of it from the avatar store without
    the copy. Then ``animator(driver, "out.mp4")`` writes a video (or an image for a photo
    driver) and ``animator.frames(driver)`` yields ``AnimatedFrame``s.
    """

    def __init__(self, model: LSR, avatar: Avatar, options: AnimateOptions = AnimateOptions(), *,
                 personal: PersonalWeights | None = None):
        # 1. Check inputs.
        self.options, self.avatar = options, avatar
        self.device = resolve_device(options.device)
        if options.dtype == "fp16" and self.device.type != "cuda":
            raise UsageError("fp16 needs a CUDA GPU; on a CPU use --dtype bf16")
        if model.layout_generator is None or model.image_generator is None:
            raise UsageError("animation needs weights with the layout and image generators")
        check_compatible(model, avatar)
        base_sha = getattr(model, "weights_sha256", None) or ""
        use_personal = options.finetuned and personal is not None and personal.base_weights_sha256 == base_sha
        self.personal_skipped = personal is not None and options.finetuned and not use_personal

        # 2. A private inference copy of G^l and G^s (with the personal weights).
        if model.inference_only:
            if use_personal:
                raise UsageError("personal weights cannot be applied to a model already prepared for inference")
            render = model
        else:
            render = LSR(model.config, networks=RENDER_NETWORKS)
            render.load_state_dict({k: v for k, v in model.state_dict().items() if k.split(".", 1)[0] in RENDER_NETWORKS})
            if use_personal:
                apply_personal(render, personal)
            render.for_inference_(channels_last=self.device.type == "cpu", compile=options.compile)
        self.model = render.to(self.device)
        self.model.weights_sha256 = base_sha
        self.finetuned = bool(use_personal)

        # 3. The avatar's state, once.
        if self.device.type == "cpu":
            tune_cpu_allocator()
        self.batch = options.batch or (8 if self.device.type == "cuda" else self.model.cpu_chunk)
        with torch.inference_mode(), self._autocast():
            latents = avatar.latents
            self.state: AvatarState = self.model.prepare(
                type(latents)(latents.z_style.to(self.device), latents.z_layout.to(self.device))
            )

    @classmethod
    def load(cls, name: str, options: AnimateOptions = AnimateOptions(), *, weights: str | os.PathLike | None = None,
             store: AvatarStore | None = None) -> Animator:
        """Avatar ``name`` from the store, G^l and G^s from ``weights`` (folder, Hub repo id, or
        None for the default), and the avatar's fine-tuned weights when they fit."""
        store = store if store is not None else AvatarStore()
        avatar = store.load(name)
        model = LSR.from_pretrained(weights if weights is not None else recorded_weights(avatar), networks=RENDER_NETWORKS)
        check_compatible(model, avatar)
        personal = store.load_finetuned(name) if options.finetuned else None
        use_personal = personal is not None and personal.base_weights_sha256 == model.weights_sha256
        if use_personal:
            apply_personal(model, personal)
        sha = model.weights_sha256
        device = resolve_device(options.device)
        model.for_inference_(channels_last=device.type == "cpu", compile=options.compile)
        model.weights_sha256 = sha
        animator = cls(model, avatar, options)
        animator.finetuned = use_personal
        animator.personal_skipped = personal is not None and not use_personal
        return animator

    def _autocast(self):
        if self.options.dtype == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.options.dtype])

    # -- stages --------------------------------------------------------------------------
    def open(self, driver: str | os.PathLike | MotionTemplate | Driver, *, on_note: Callable[[str], None] = lambda s: None) -> Driver:
        """A driver object from a path (video, photo, ``.npz``) or a template."""
        if isinstance(driver, Driver):
            return driver
        if isinstance(driver, MotionTemplate):
            return MotionDriver(driver, max_frames=self.options.max_frames, start_s=self.options.start_s,
                                duration_s=self.options.duration_s)
        with notes_from_warnings(on_note):
            return open_driver(driver, self.options.driver_options(), on_note=on_note)

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
        x = torch.stack(contours).to(self.device, non_blocking=True)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._autocast():
            return to_uint8(self.model.render(x, self.state).image)

    def frames(self, driver: str | os.PathLike | MotionTemplate | Driver, *, on_note: Callable[[str], None] = lambda s: None) -> Iterator[AnimatedFrame]:
        """Yield the output frames in order (uint8 RGB), streaming."""
        driver = self.open(driver, on_note=on_note)
        if driver.crop_size != self.model.config.resolution:
            raise UsageError(f"the driver's landmarks are for {driver.crop_size} px crops, the networks take {self.model.config.resolution}")
        paste = None
        if self.options.paste_back:
            paste = PasteBack(self.avatar.photo, self.avatar.photo_to_crop, driver.crop_size, self.options.feather)
        inputs = _Background(self._inputs(driver), maxsize=max(self.options.queue_frames, self.batch), name="thead-input")
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
        progress: Callable[[int, int | None], None] | None = None,
        on_note: Callable[[str], None] = lambda s: None,
    ) -> AnimateResult:
        """Animate to ``output``: a video (``.mp4``/``.mov``/``.mkv``) at the driver's exact fps
        with its audio, or an image for a photo driver. Written atomically: on any error or
        Ctrl-C nothing appears at ``output``. ``progress(done, total)`` after each frame."""
        t0 = time.perf_counter()
        output = Path(output)
        if self.options.audio is not None and not Path(self.options.audio).is_file():
            raise VideoError(f"--audio {self.options.audio} does not exist")
        drv = self.open(driver, on_note=on_note)
        is_image = isinstance(drv, PhotoDriver)
        if is_image and self.options.audio is not None:
            drv, is_image = self._held_photo(drv), False
        check_output(output, "photo" if is_image else drv.kind)
        if is_image:
            return self._write_image(drv, output, t0, on_note)
        return self._write_video(drv, output, t0, progress, on_note)

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

    def _write_video(self, driver: Driver, output: Path, t0: float, progress, on_note) -> AnimateResult:
        from thead.video import VideoWriter

        frames = self.frames(driver, on_note=on_note)
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
                sink = _Sink(lambda im: writer.write(even_size(im)), maxsize=self.options.queue_frames, name="thead-output")
                try:
                    sink.put(first.image)
                    count = 1
                    if progress is not None:
                        progress(count, driver.num_frames)
                    for frame in frames:
                        sink.put(frame.image)
                        count += 1
                        if progress is not None:
                            progress(count, driver.num_frames)
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
    progress: Callable[[int, int | None], None] | None = None,
    on_note: Callable[[str], None] = lambda s: None,
) -> AnimateResult:
    """``thead animate`` as one call: load the avatar and weights, animate, write ``output``."""
    # Cheap checks first: no weights are loaded for a typo in a path.
    if not isinstance(driver, MotionTemplate):
        if not Path(driver).exists():
            raise VideoError(f"driver {driver} does not exist")
        check_input_file(driver, "driver")
        kind = driver_kind(Path(driver))
        check_output(Path(output), "motion" if kind == "photo" and options.audio is not None else kind)
    refuse_same_file(output, [driver, options.audio])
    animator = Animator.load(name, options, weights=weights, store=store)
    if animator.personal_skipped:
        on_note(f"'{name}' has fine-tuned weights made from other base weights; rendering with the base weights")
    return animator(driver, output, progress=progress, on_note=on_note)
