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

Usage: python benchmarks/animate_bench.py [--frames 250] [--rounds 1] [--dtypes fp32,bf16] [--threads 2] [--compile]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from thead.animate import AnimateOptions, Animator
from thead.avatar import AvatarStore
from thead.config import LSRConfig
from thead.enroll import EnrollOptions, enroll
from thead.faces import draw_contour, make_detector, to_tensor
from thead.model import ENCODE_NETWORKS, LSR, RENDER_NETWORKS
from thead.runtime import tune_cpu_allocator
from thead.video import VideoWriter, open_video

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "lsr-sample"
CLIP = "test_videos/id00017/OLguY5ofUrY/00039.mp4"
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=250, help="frames per measurement (250 = the whole 10 s driver)")
    ap.add_argument("--rounds", type=int, default=1, help="alternate render-only / end-to-end this many times")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="render through torch.compile (for_inference_(compile=True))")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tune_cpu_allocator()

    work = Path(tempfile.mkdtemp(prefix="thead-bench-"))
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
