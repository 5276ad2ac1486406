"""End-to-end ``animate`` throughput against render-only throughput, full-size networks.

A 10 s 224x224 25 fps driver (the sample clip id00017/00039 looped to 250 frames, with its
audio) drives an avatar enrolled from the sample's frames, with random-initialised full-size
weights (``LSRConfig()``: the speed does not depend on the values). For each dtype:

- render-only: ``model.render`` on the driver's precomputed contours, in the animator's batches
  (pairs on the CPU), same model, after warm-up (the ceiling for end to end);
- end to end: ``Animator(driver, out.mp4)`` (decode, crop, dlib landmarks, smoothing, motion
  transfer, contour drawing, G^l + G^s, encoding with audio), first ``--frames`` frames,
  wall time including the driver's pass 1 (stable crop).

"Steady" excludes pass 1 and the first frame's latency (fixed costs that a long driver
amortises); "overall" includes them. Rounds alternate the two measurements so that load from
other processes affects both alike.

``--compile`` renders with ``LSR.for_inference_(compile=True)`` (both measurements).

Stage CPU (printed first; ``--stages-only`` prints only it, without a model): the CPU time per
frame of the stages around the render, on the three sample clips, each stage alone in its own
thread as in ``animate`` (``time.process_time``: every thread of the process, FFmpeg's and
x264's included). CPU time rather than wall time, so the figure holds on a loaded machine:
every millisecond of it is taken from the two rendering threads.

- input startup: pass 1 and the reference pass, per frame of the clip (before the first frame);
- input: pass 2, motion transfer, contour drawing and ``to_tensor``, per frame, as animate runs
  it (``compare``: with ``--compare``, which needs the driver's crops; ``long``: a driver longer
  than ``reference_frames``, whose pass 2 measures landmarks again), and split into its parts
  (decode, crop, face detection, landmark fit, smoothing + transfer, contour, to_tensor);
- output: H.264 encoding with the clip's audio (the driver's own crops stand in for rendered
  frames: the same size and kind of picture).

Usage: python benchmarks/animate_bench.py [--frames 250] [--rounds 1] [--dtypes fp32,bf16] [--threads 2] [--compile]
                                          [--stage-repeats 3] [--stages-only]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from thead.animate import AnimateOptions, Animator
from thead.avatar import AvatarStore
from thead.config import LSRConfig
from thead.enroll import EnrollOptions, enroll
from thead.animate import even_size
from thead.faces import ContourRenderer, LandmarkTracker, crop_image, draw_contour, make_detector, to_tensor
from thead.faces.landmarks import DlibDetector
from thead.faces.smooth import LookaheadSmoother, SmoothOptions
from thead.model import ENCODE_NETWORKS, LSR, RENDER_NETWORKS
from thead.motion import DriverOptions, MotionTransfer, driver_targets, open_driver
from thead.runtime import tune_cpu_allocator
from thead.video import VideoWriter, open_video

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "lsr-sample"
CLIP = "test_videos/id00017/OLguY5ofUrY/00039.mp4"
STAGE_CLIPS = ("test_videos/id00017/OLguY5ofUrY/00039.mp4", "test_videos/id00061/mMOd25Ag7XY/00239.mp4",
               "test_videos/id00081/vvLu_7TpP8c/00202.mp4")
SHOTS = "fsth_eval_subset/train/id00017/OLguY5ofUrY/combined"


def make_driver(path: Path, num_frames: int) -> Path:
    """The sample clip looped (forwards, then backwards, so there is no jump) to num_frames."""
    with open_video(SAMPLE / CLIP) as reader:
        fps = reader.fps
        frames = [f.image for f in reader]
    order = frames + frames[::-1]
    with VideoWriter(path, fps, (224, 224), audio_from=SAMPLE / CLIP) as w:
        for i in range(num_frames):
            w.write(order[i % len(order)])
    return path


def render_only(animator: Animator, contours: list[torch.Tensor]) -> float:
    """Seconds per frame of G^l + G^s alone, in the animator's batches (pairs on the CPU), on
    the same contours and the same model."""
    t = time.perf_counter()
    for i in range(0, len(contours), animator.batch):
        x = torch.cat(contours[i : i + animator.batch]).contiguous(memory_format=torch.channels_last)
        animator.renderer.render(x).image.float()
    return (time.perf_counter() - t) / len(contours)


class _Stamps:
    """A ``thead.progress.Progress`` that records when each frame was written."""

    def __init__(self, stamps: list[float]):
        self.stamps = stamps

    def update(self, done, total=None, *, stage="", info=""):
        self.stamps.append(time.perf_counter())

    def note(self, text):
        pass


def end_to_end(animator: Animator, driver: Path, output: Path) -> tuple[float, float, object]:
    """(seconds per frame in the steady state, i.e. from the first frame out to the last;
    seconds per frame overall, including pass 1 and filling the pipeline; the result)."""
    stamps: list[float] = []
    t = time.perf_counter()
    result = animator(driver, output, progress=_Stamps(stamps))
    total = time.perf_counter() - t
    steady = (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)
    return steady, total / result.num_frames, result


# ------------------------------------------------------------------------ stage CPU


def in_thread(fn, *args, **kwargs):
    """fn(*args, **kwargs) in a new thread (as animate's input and output stages run), its result."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as e:  # re-raised in the caller
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


class _TimedDlib(DlibDetector):
    """dlib, adding the CPU time of detection and of the landmark fit into ``cpu``."""

    def __init__(self, cpu: dict[str, float]):
        super().__init__()
        self.cpu = cpu

    def landmarks_in_box(self, *args, **kwargs):
        t = time.process_time()
        face = super().landmarks_in_box(*args, **kwargs)
        spent = time.process_time() - t
        self.cpu["landmark fit"] += spent
        self.cpu["face detection"] -= spent  # counted in the detection calls around it
        return face

    def detect_fast(self, image):
        t = time.process_time()
        faces = super().detect_fast(image)
        self.cpu["face detection"] += time.process_time() - t
        return faces

    def detect(self, image):
        t = time.process_time()
        faces = super().detect(image)
        self.cpu["face detection"] += time.process_time() - t
        return faces


def input_stage_cpu(clip: Path, avatar_landmarks: np.ndarray, detector, *, compare: bool = False, long: bool = False
                    ) -> tuple[float, float, int]:
    """(CPU ms per frame before the first frame, CPU ms per frame after, frames) of animate's
    input stage (``Animator._inputs``: driver frames -> target landmarks -> contour -> tensor).
    The driver is opened first, as the animator opens it in the calling thread."""
    options = DriverOptions(landmarks="dlib", reference_frames=40 if long else DriverOptions.reference_frames)
    driver = open_driver(clip, options, detector=detector)
    t = time.process_time()
    renderer = ContourRenderer(driver.crop_size)
    items = driver_targets(driver, avatar_landmarks, "relative", images=compare)
    n = 0
    for frame, target in items:
        if n == 0:
            first = time.process_time()
        contour = renderer.draw(target)
        if compare:
            frame.image.copy()
        to_tensor(contour)
        n += 1
    end = time.process_time()
    return 1000 * (first - t) / n, 1000 * (end - first) / max(n - 1, 1), n


def input_parts_cpu(clip: Path, avatar_landmarks: np.ndarray) -> dict[str, float]:
    """CPU ms per frame of each part of pass 2 when it measures landmarks (a long driver), the
    parts run one after the other on each frame as the driver runs them."""
    cpu = dict.fromkeys(("decode", "crop", "face detection", "landmark fit", "smoothing + transfer", "contour", "to_tensor"), 0.0)
    detector = _TimedDlib(cpu)
    driver = open_driver(clip, DriverOptions(landmarks="dlib"), detector=detector)
    box = driver.scan()
    for k in cpu:
        cpu[k] = 0.0
    tracker = LandmarkTracker(detector)
    smoother = LookaheadSmoother(SmoothOptions(1.0, float(driver.fps)))
    transfer = MotionTransfer(avatar_landmarks)
    renderer = ContourRenderer(driver.crop_size)
    n = 0

    def timed(key: str, fn, *args):
        t = time.process_time()
        out = fn(*args)
        cpu[key] += time.process_time() - t
        return out

    with open_video(clip) as reader:
        frames = iter(reader)
        while (frame := timed("decode", next, frames, None)) is not None:
            crop = timed("crop", crop_image, frame.image, box, driver.crop_size, driver.options.crop.pad)
            face = tracker(crop)
            held = face.landmarks if face is not None else avatar_landmarks
            targets = timed("smoothing + transfer", lambda: [transfer(lm) for lm, _ in smoother.push(held)])
            for target in targets:
                contour = timed("contour", renderer.draw, target)
                timed("to_tensor", to_tensor, contour)
            n += 1
    return {k: 1000 * v / n for k, v in cpu.items()}


def output_stage_cpu(clip: Path, work: Path) -> float:
    """CPU ms per frame of animate's output stage without paste-back: H.264 with the clip's audio."""
    with open_video(clip) as reader:
        fps, frames = reader.fps, [f.image for f in reader]
    t = time.process_time()
    with VideoWriter(work / "stage-out.mp4", fps, (frames[0].shape[1], frames[0].shape[0]), audio_from=clip) as writer:
        for image in frames:
            writer.write(even_size(image))
    return 1000 * (time.process_time() - t) / len(frames)


def stage_report(repeats: int, work: Path) -> None:
    """Print the stage CPU table (medians over ``repeats``, each clip in turn)."""
    torch.ones(256, 256) @ torch.ones(256, 256)  # the main thread's OpenMP team exists, as while rendering
    ContourRenderer()  # matplotlib imported, as after the animator's first drawing
    detector = make_detector("dlib")
    rows: dict[str, dict[str, list[float]]] = {}
    for _ in range(repeats):
        for clip in STAGE_CLIPS:
            path = SAMPLE / clip
            name = clip.split("/")[1]
            avatar = open_driver(path, DriverOptions(landmarks="dlib"), detector=detector).reference_landmarks() + 2.0  # any face shape
            row = rows.setdefault(name, {})
            startup, steady, n = in_thread(input_stage_cpu, path, avatar, detector)
            row.setdefault("frames", []).append(n)
            row.setdefault("input startup", []).append(startup)
            row.setdefault("input", []).append(steady)
            row.setdefault("input (compare)", []).append(in_thread(input_stage_cpu, path, avatar, detector, compare=True)[1])
            row.setdefault("input (long)", []).append(in_thread(input_stage_cpu, path, avatar, detector, long=True)[1])
            for k, v in in_thread(input_parts_cpu, path, avatar).items():
                row.setdefault(f"  {k}", []).append(v)
            row.setdefault("output (encode)", []).append(in_thread(output_stage_cpu, path, work))
    names = list(rows)
    print(f"stage CPU, ms per frame (process CPU time, median of {repeats}; parts: pass 2 measuring landmarks)")
    print(f"{'':24}" + "".join(f"{n:>14}" for n in names))
    for key in rows[names[0]]:
        print(f"{key:24}" + "".join(f"{statistics.median(rows[n][key]):14.2f}" for n in names), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=250, help="frames per measurement (250 = the whole 10 s driver)")
    ap.add_argument("--rounds", type=int, default=1, help="alternate render-only / end-to-end this many times")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="render through torch.compile (for_inference_(compile=True))")
    ap.add_argument("--stage-repeats", type=int, default=3, help="repeats of the stage CPU measurement (0: skip it)")
    ap.add_argument("--stages-only", action="store_true", help="only the stage CPU table (no model, no rendering)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tune_cpu_allocator()

    work = Path(tempfile.mkdtemp(prefix="thead-bench-"))
    if args.stage_repeats > 0 or args.stages_only:
        stage_report(max(args.stage_repeats, 1), work)
    if args.stages_only:
        return
    driver = make_driver(work / "driver10s.mp4", 250)
    model = LSR(LSRConfig(), networks=ENCODE_NETWORKS + RENDER_NETWORKS).eval()
    store = AvatarStore(work / "avatars")
    avatar = enroll(SAMPLE / SHOTS, "bench", EnrollOptions(num_shots=4), model=model, store=store,
                    detector=make_detector("dlib"))
    print(f"torch {torch.__version__}, {args.threads} threads; full-size LSR (random weights); driver {driver.name}: "
          f"250 frames 224x224 25 fps with audio; {args.rounds} round(s) of {args.frames} frames; "
          f"{'compiled' if args.compile else 'eager'} render path", flush=True)
    render = model
    if args.compile:  # an inference copy of G^l and G^s, compiled; the Animator uses it as is
        render = LSR(model.config, networks=RENDER_NETWORKS)
        render.load_state_dict({k: v for k, v in model.state_dict().items() if k.split(".", 1)[0] in RENDER_NETWORKS})
        render.for_inference_(compile=True)
    for dtype in args.dtypes.split(","):
        animator = Animator(render, avatar, AnimateOptions(device="cpu", dtype=dtype).with_driver(landmarks="dlib", max_frames=args.frames))
        t = time.perf_counter()
        frames = list(animator.open(driver))
        driver_ms = (time.perf_counter() - t) * 1000 / len(frames)  # pass 1 + decode, crop, landmarks, smoothing
        contours = [to_tensor(draw_contour(f.landmarks))[None].contiguous(memory_format=torch.channels_last) for f in frames]
        render_only(animator, contours[:2])  # warm-up (oneDNN kernels, allocator; compiles)
        render_only(animator, contours[:1])  # a last odd frame renders alone
        ratios = []
        for r in range(args.rounds):
            ro = render_only(animator, contours)
            steady, overall, result = end_to_end(animator, driver, work / f"out-{dtype}.mp4")
            ratios.append(ro / steady)
            print(f"{dtype} round {r + 1}: render-only {1000 * ro:.0f} ms/frame ({1 / ro:.3f} fps); end-to-end "
                  f"{1000 * steady:.0f} ms/frame steady ({1 / steady:.3f} fps), {1000 * overall:.0f} ms/frame overall; "
                  f"end-to-end = {ro / steady:.1%} of render-only ({ro / overall:.1%} overall)", flush=True)
        print(f"{dtype}: median end-to-end / render-only {statistics.median(ratios):.1%}; driver stage alone "
              f"{driver_ms:.0f} ms/frame; {result.num_frames} frames written, audio {result.audio}", flush=True)
        del animator
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
