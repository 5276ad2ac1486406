"""Dataset preparation: raw clips or frame folders -> the authors' processed layout (ref §1.5).

For every clip (``<root>/<person>/<video>/<clip>.mp4``) or frame folder (the FSTH layout
``<root>/{train,test}/<person>/<video>/combined/*.png``) this writes, per kept frame ``NNNNN``:
``NNNNN_rgb.png`` (224x224 frame), ``NNNNN_contour.png`` (the authors' landmark drawing, ref
§1.3) and, when the face parser's weights are present, ``NNNNN_segmap_merged.png`` (ref §1.4).

- Frames kept: videos, ``i mod (floor(n/k) + 1) == 0`` named by their index in the clip
  (ref §1.3); images, every image, named by its position in the sorted folder.
- The largest face of each frame is used. Frames that are not 224x224 are first cropped like
  VoxCeleb2 with one window per clip (``faces.stable_crop_box``); 224x224 frames are taken as
  they are (already VoxCeleb2 crops).
- A frame without a face is reported in the manifest and skipped. paper≠code: the authors'
  script padded such gaps with repeats of earlier frames.
- Resumable: each clip folder is written under a temporary name with its ``.done.json`` record
  last, then renamed; a clip whose folder has that record is skipped on the next run.
- ``manifest.json`` at the output root lists every prepared clip and every failure.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import warnings
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from thead._atomic import atomic_dir, atomic_file
from thead._schema import decode, optional
from thead.errors import DatasetError, NoFaceError, TheadError, UsageError, VideoError
from thead.faces.contour import ContourRenderer
from thead.faces.crop import CROP_SIZE, CropOptions, crop_image, stable_crop_box
from thead.faces.images import IMAGE_SUFFIXES, load_image
from thead.faces.landmarks import DetectorKind, Face, LandmarkDetector, auto_fallback_note, make_detector
from thead.progress import SILENT, Progress
from thead.video import open_video

if TYPE_CHECKING:
    from thead.faces.parsing import FaceParser

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
DONE_MARKER = ".done.json"
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class PrepOptions:
    """mode: ``videos`` (clips, ``k`` frames sampled each) or ``images`` (frame folders, all).
    k: frames per clip, as the authors' ``--k`` (ref §1.3).
    workers: processes working on clips in parallel (1 = in this process).
    landmarks: landmark backend (``auto`` = FAN if installed with weights cached, else dlib).
    segmaps: write ``_segmap_merged.png`` when the face parser's weights are present.
    device: torch device for FAN and the parser.
    crop: framing for frames that are not already 224x224 VoxCeleb2 crops.
    """

    mode: Literal["videos", "images"] = "videos"
    k: int = 10
    workers: int = 1
    landmarks: DetectorKind = "auto"
    segmaps: bool = True
    device: str = "cpu"
    crop: CropOptions = field(default_factory=CropOptions)

    def __post_init__(self):
        if self.mode not in ("videos", "images"):
            raise UsageError(f"unknown prep mode {self.mode!r} (choose videos or images)")
        if self.k < 1:
            raise UsageError(f"--k must be at least 1, got {self.k}")
        if self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")


@dataclass(frozen=True)
class ClipJob:
    """One unit of work: a video file or a folder of frames, and where its outputs go."""

    source: Path
    out_rel: str  # output folder relative to the output root, e.g. "id00017/OLguY5ofUrY/00039"


@dataclass(frozen=True)
class ClipResult:
    """A prepared clip: frame indices written, frames skipped for want of a face."""

    clip: str
    source: str
    num_source_frames: int
    frames: tuple[int, ...]
    no_face: tuple[int, ...]
    several_faces: tuple[int, ...]  # frames where the largest of several faces was used
    segmaps: bool
    cropped: bool
    resumed: bool = optional(False)  # not in the ``.done.json`` record (read strictly by ``_finished``)


@dataclass(frozen=True)
class ClipFailure:
    clip: str
    source: str
    error: str


@dataclass(frozen=True)
class PrepReport:
    out_dir: Path
    manifest: Path
    clips: tuple[ClipResult, ...]
    failures: tuple[ClipFailure, ...]
    notes: tuple[str, ...]

    @property
    def num_frames(self) -> int:
        return sum(len(c.frames) for c in self.clips)

    @property
    def num_resumed(self) -> int:
        return sum(c.resumed for c in self.clips)


# ------------------------------------------------------------------------------- discovery


def find_jobs(src: Path, mode: str) -> list[ClipJob]:
    """Clips under ``src``: video files (videos mode) or folders holding images (images mode),
    sorted, each with its output folder relative to the output root."""
    src = Path(src)
    if not src.is_dir():
        raise DatasetError(f"{src} is not a folder")
    if mode == "videos":
        files = sorted(p for p in src.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        return [ClipJob(p, p.relative_to(src).with_suffix("").as_posix()) for p in files]
    folders = sorted({p.parent for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()})
    return [ClipJob(d, d.relative_to(src).as_posix() or ".") for d in folders]


def sampled_indices(num_frames: int, k: int) -> list[int]:
    """The authors' sampling (ref §1.3): frames ``i`` with ``i mod (floor(n/k) + 1) == 0``."""
    step = num_frames // k + 1
    return list(range(0, num_frames, step))


# ---------------------------------------------------------------------------------- reading


def _video_frames(path: Path, k: int) -> tuple[int, list[tuple[int, np.ndarray]]]:
    """The clip's frame count and its (index, uint8 HxWx3 RGB) frames that the sampling keeps;
    streams, holding only the kept frames."""
    with open_video(path) as reader:
        n = reader.num_frames
    if n is None:  # the container does not say: count (clips are short)
        with open_video(path) as reader:
            n = sum(1 for _ in reader)
    wanted = set(sampled_indices(n, k))
    with open_video(path) as reader:
        frames = [(f.index, f.image) for f in reader if f.index in wanted]
    if len(frames) < len(wanted):  # the container promised more frames than decode
        raise VideoError(f"{path} is truncated: fewer frames decode than the {n} it declares")
    return n, frames


def _clip_frames(job: ClipJob, options: PrepOptions) -> tuple[int, list[tuple[int, np.ndarray]]]:
    """The frames of one clip that the authors' sampling keeps, and the clip's frame count."""
    if options.mode == "videos":
        return _video_frames(job.source, options.k)
    files = sorted(p for p in job.source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return len(files), [(i, load_image(p)) for i, p in enumerate(files)]


# ------------------------------------------------------------------------------- one clip


@dataclass
class _Tools:
    detector: LandmarkDetector
    renderer: ContourRenderer
    parser: FaceParser | None


def tool_notes(options: PrepOptions) -> list[str]:
    """What the user should hear once: the landmark fallback, a missing parser."""
    from thead.faces import parsing

    notes = []
    if options.landmarks == "auto" and (note := auto_fallback_note()):
        notes.append(note)
    if options.segmaps and not parsing.parser_available():
        notes.append(
            f"face parser weights not found (set {parsing.WEIGHTS_ENV} to the file, or fetch them once with "
            "python -c 'import thead.faces.parsing as p; p.download_parser_weights()'); "
            "writing no segmaps (--no-segmaps says this is intended)"
        )
    return notes


def _make_tools(options: PrepOptions) -> _Tools:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the auto note is reported once, by tool_notes
        detector = make_detector(options.landmarks, options.device)
    parser = None
    if options.segmaps:  # imports torch; without segmaps a worker never needs it
        from thead.faces import parsing

        if parsing.parser_available():
            parser = parsing.load_face_parser(device=options.device)
    return _Tools(detector, ContourRenderer(CROP_SIZE), parser)


def _save_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG")


def _prepare_clip(job: ClipJob, out_dir: Path, options: PrepOptions, tools: _Tools) -> ClipResult:
    """Prepare one clip into ``out_dir / job.out_rel`` (atomically, done marker last)."""
    target = out_dir / job.out_rel
    n, frames = _clip_frames(job, options)
    faces: list[Face | None] = []
    several = []
    for index, image in frames:
        found = tools.detector.detect(image)
        faces.append(found[0] if found else None)
        if len(found) > 1:
            several.append(index)
    cropped = any(image.shape[:2] != (CROP_SIZE, CROP_SIZE) for _, image in frames)
    if cropped:
        # One window for the whole clip (no jitter), then landmarks again on the 224 crops,
        # as the authors detected on the 224 frames.
        box = stable_crop_box(faces, options.crop)
        frames = [(i, crop_image(im, box, CROP_SIZE, options.crop.pad)) for i, im in frames]
        faces = [(tools.detector.detect(im) or [None])[0] for _, im in frames]
    kept = [(i, im, f) for (i, im), f in zip(frames, faces) if f is not None]
    if not kept:
        raise NoFaceError(f"no face in any of the {len(frames)} sampled frames")
    result = ClipResult(
        clip=job.out_rel,
        source=str(job.source),
        num_source_frames=n,
        frames=tuple(i for i, _, _ in kept),
        no_face=tuple(i for (i, _), f in zip(frames, faces) if f is None),
        several_faces=tuple(several),
        segmaps=tools.parser is not None,
        cropped=cropped,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(target, overwrite=True) as tmp:
        for index, image, face in kept:
            _save_png(tmp / f"{index:05d}_rgb.png", image)
            _save_png(tmp / f"{index:05d}_contour.png", tools.renderer.draw(face.landmarks))
            if tools.parser is not None:
                _save_png(tmp / f"{index:05d}_segmap_merged.png", tools.parser.segmap(image))
        (tmp / DONE_MARKER).write_text(json.dumps(_result_dict(result), indent=1, sort_keys=True))
    return result


def _result_dict(result: ClipResult) -> dict:
    d = asdict(result)
    d.pop("resumed")
    return d


def _finished(out_dir: Path, job: ClipJob) -> ClipResult | None:
    marker = out_dir / job.out_rel / DONE_MARKER
    if not marker.is_file():
        return None
    try:
        record = decode(ClipResult, json.loads(marker.read_text()), error=DatasetError, source=str(marker))
    except (OSError, ValueError, RecursionError, DatasetError):
        return None  # a damaged record (unreadable, a key missing or unknown, a wrong type): redo the clip
    return replace(record, resumed=True)


# ------------------------------------------------------------------------------- workers

_worker_tools: _Tools | None = None


def _init_worker(options: PrepOptions) -> None:
    global _worker_tools
    if options.segmaps:
        import torch

        torch.set_num_threads(1)  # one clip per core; the processes are the parallelism
    _worker_tools = _make_tools(options)


def _run_job(job: ClipJob, out_dir: Path, options: PrepOptions) -> ClipResult | ClipFailure:
    assert _worker_tools is not None
    return _guarded(job, out_dir, options, _worker_tools)


def _guarded(job: ClipJob, out_dir: Path, options: PrepOptions, tools: _Tools) -> ClipResult | ClipFailure:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small-face warnings are per frame noise here
            return _prepare_clip(job, out_dir, options, tools)
    except TheadError as e:
        return ClipFailure(job.out_rel, str(job.source), str(e))


# ---------------------------------------------------------------------------------- prepare

def prepare(
    src: str | Path, out: str | Path, options: PrepOptions = PrepOptions(), progress: Progress | None = None
) -> PrepReport:
    """Prepare every clip under ``src`` into ``out`` (see the module docstring).

    ``progress``: once the clips are found, the notes on missing tools (``tool_notes``) and an
    update at 0, then an update after each clip with the failures so far as its ``info``
    (the report lists them). Clips already finished in
    ``out`` are skipped (listed with ``resumed=True``). Raises ``DatasetError`` when ``src``
    holds no clips; per-clip problems (unreadable video, no face) become ``failures``.
    """
    src, out = Path(src), Path(out)
    jobs = find_jobs(src, options.mode)
    if not jobs:
        kinds = "video files" if options.mode == "videos" else "image folders"
        raise DatasetError(f"no {kinds} found under {src} (--mode {options.mode})")
    out.mkdir(parents=True, exist_ok=True)
    progress = progress or SILENT
    notes = tool_notes(options)
    for note in notes:
        progress.note(note)
    progress.update(0, len(jobs))

    results: list[ClipResult | ClipFailure] = []

    def advance() -> None:
        failed = sum(isinstance(r, ClipFailure) for r in results)
        progress.update(len(results), len(jobs), info=f"{failed} failed" if failed else "")

    todo = []
    for job in jobs:
        done = _finished(out, job)
        if done is None:
            todo.append(job)
        else:
            results.append(done)
            advance()

    notes = notes if todo else []
    if todo and options.workers == 1:
        tools = _make_tools(options)
        for job in todo:
            results.append(_guarded(job, out, options, tools))
            advance()
    elif todo:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
        with cf.ProcessPoolExecutor(min(options.workers, len(todo)), ctx, _init_worker, (options,)) as pool:
            futures = [pool.submit(_run_job, job, out, options) for job in todo]
            for future in cf.as_completed(futures):
                results.append(future.result())
                advance()

    order = {job.out_rel: i for i, job in enumerate(jobs)}
    results.sort(key=lambda r: order[r.clip])
    clips = tuple(r for r in results if isinstance(r, ClipResult))
    failures = tuple(r for r in results if isinstance(r, ClipFailure))
    manifest = out / MANIFEST
    _write_manifest(manifest, src, options, clips, failures, notes)
    return PrepReport(out, manifest, clips, failures, tuple(notes))


def _write_manifest(path, src, options, clips, failures, notes) -> None:
    body = {
        "format_version": MANIFEST_VERSION,
        "source": str(src),
        "options": {
            "mode": options.mode,
            "k": options.k,
            "landmarks": options.landmarks,
            "segmaps": options.segmaps,
            "crop": asdict(options.crop),
        },
        "notes": list(notes),
        "num_clips": len(clips),
        "num_frames": sum(len(c.frames) for c in clips),
        "clips": [_result_dict(c) for c in clips],
        "failures": [asdict(f) for f in failures],
    }
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(body, indent=1, sort_keys=True, default=_json_default))


def _json_default(o):
    if isinstance(o, (Path, Fraction)):
        return str(o)
    raise TypeError(type(o).__name__)
