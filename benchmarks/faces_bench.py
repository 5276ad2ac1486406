"""Frames per second of each input-side stage on a real sample clip (CPU).

Stages: decode (PyAV, rgb24), detect (dlib HOG, upsample 0), landmarks (68-point predictor in
a known box), track (``LandmarkTracker``: detect + landmarks with fall-backs, what animate
runs), crop (``crop_face`` of the 224 frame from a 720x1280 canvas), draw
(``ContourRenderer``), smooth (One-Euro), segmap (BiSeNet 256+512 passes + merge, random
weights: same cost as the real ones), and the whole input side per 224 frame: decode + track +
smooth + draw. "1 proc" runs in this process with one torch thread; "2 procs" runs two
processes on halves of the frames at once (dlib and matplotlib are single-threaded, so
processes are how a second core helps) and reports their combined throughput. Each cell:
frames/s (wall ms per frame) and CPU ms per frame; on a shared machine CPU time is the cost of
the stage itself, wall time includes waiting for the cores.

``--rotation`` instead times a whole video driver (crop scan, neutral reference, landmarks
and smoothing: what ``thead motion extract`` runs) on the clip upright and on copies turned a
quarter turn each way (no rotation tag), A/B interleaved in one process because the machine
is shared, and the time a faceless clip of the same length takes to fail.

Usage: python benchmarks/faces_bench.py [--clip PATH] [--frames 120] [--procs 1 2]
       python benchmarks/faces_bench.py --rotation [--clip PATH] [--frames 120] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = ROOT.parent / "shared/data/lsr-sample/test_videos/id00017/OLguY5ofUrY/00039.mp4"
STAGES = ("decode", "detect", "landmarks", "track", "crop", "draw", "smooth", "segmap", "input side")


def decode(path: Path, limit: int) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == limit:
                break
    return frames


class Clock:
    """Wall and CPU seconds of the timed section (CPU time is what the stage costs when the
    machine is shared; wall time is what a user waits)."""

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self, n: int) -> tuple[int, float, float]:
        return n, time.perf_counter() - self.wall, time.process_time() - self.cpu


def run_stage(stage: str, path: Path, lo: int, hi: int) -> tuple[int, float, float]:
    """Time ``stage`` on frames [lo, hi) of the clip: (frames done, wall s, CPU s)."""
    import torch

    torch.set_num_threads(1)
    from thead.faces import ContourRenderer, CropOptions, DlibDetector, LandmarkSmoother, LandmarkTracker, crop_face

    frames = decode(path, hi)[lo:hi]
    detector = DlibDetector()
    faces = [detector.detect(f)[0] for f in frames]
    renderer = ContourRenderer()
    renderer.draw(faces[0].landmarks)
    clock = Clock()
    n = len(frames)
    if stage == "decode":
        clock.start()
        decode(path, hi)
        return clock.stop(hi)  # decoding cannot start mid-clip
    if stage == "segmap":
        from thead.faces.parsing import BiSeNet, FaceParser

        parser = FaceParser(BiSeNet())
        parser.segmap(frames[0])  # warm-up
        n = min(n, 6)
        clock.start()
        for f in frames[:n]:
            parser.segmap(f)
        return clock.stop(n)
    if stage == "crop":
        canvases = []
        for f in frames:
            c = np.full((1280, 720, 3), 90, np.uint8)
            c[517:741, 301:525] = f
            canvases.append(c)
        moved = [type(face)(face.box + 300, face.landmarks + np.array([301, 517], np.float32), 1.0) for face in faces]
        clock.start()
        for c, face in zip(canvases, moved):
            crop_face(c, face, CropOptions(min_face_px=0))
        return clock.stop(n)
    if stage == "input side":
        import av

        tracker, smoother = LandmarkTracker(detector), LandmarkSmoother()
        clock.start()
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i >= hi:
                    break
                if i >= lo:
                    face = tracker(frame.to_ndarray(format="rgb24"))
                    renderer.draw(smoother(face.landmarks))
        return clock.stop(n)
    clock.start()
    if stage == "detect":
        for f in frames:
            detector._hog.run(f, 0, 0.0)
    elif stage == "landmarks":
        for f, face in zip(frames, faces):
            detector.landmarks_in_box(f, face.box)
    elif stage == "track":
        tracker = LandmarkTracker(detector)
        for f in frames:
            tracker(f)
    elif stage == "draw":
        for face in faces:
            renderer.draw(face.landmarks)
    elif stage == "smooth":
        smoother = LandmarkSmoother()
        for _ in range(20):  # too fast to time once
            for face in faces:
                smoother(face.landmarks)
        n *= 20
    return clock.stop(n)


def _job(args):
    return run_stage(*args)


def measure(stage: str, path: Path, frames: int, procs: int) -> tuple[float, float]:
    """(frames per second, CPU ms per frame) with ``procs`` processes sharing the frames."""
    if procs == 1:
        n, wall, cpu = run_stage(stage, path, 0, frames)
        return n / wall, 1000 * cpu / n
    bounds = np.linspace(0, frames, procs + 1).astype(int)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(procs) as pool:
        results = pool.map(_job, [(stage, path, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])])
    # Each process timed its own loop; they ran side by side, so throughput adds up.
    return sum(n / wall for n, wall, _ in results), 1000 * sum(c for *_, c in results) / sum(n for n, *_ in results)


def turned_copy(src: Path, dst: Path, frames: int, turn: int, blank: bool = False) -> Path:
    """The first ``frames`` of ``src`` turned ``turn`` quarter turns (np.rot90), re-encoded
    without a rotation tag (``blank``: flat grey frames, no face)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = None
        for i, frame in enumerate(inp.decode(video=0)):
            if i >= frames:
                break
            image = frame.to_ndarray(format="rgb24")
            image = np.ascontiguousarray(np.rot90(np.full_like(image, 128) if blank else image, turn))
            if stream is None:
                stream = out.add_stream("libx264", rate=inp.streams.video[0].average_rate)
                stream.height, stream.width = image.shape[:2]
                stream.pix_fmt = "yuv420p"
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    return dst


def rotation(clip: Path, frames: int, repeats: int) -> None:
    """Seconds for the whole video driver on upright and sideways copies, interleaved."""
    import tempfile

    from thead.errors import NoFaceError
    from thead.faces import DlibDetector
    from thead.motion import DriverOptions, extract_motion

    detector = DlibDetector()
    with tempfile.TemporaryDirectory() as tmp:
        copies = {name: turned_copy(clip, Path(tmp) / f"{name}.mp4", frames, turn)
                  for name, turn in (("upright", 0), ("turned +90", 1), ("turned -90", -1))}
        grey = turned_copy(clip, Path(tmp) / "grey.mp4", frames, 0, blank=True)
        times: dict[str, list[float]] = {name: [] for name in copies}
        found: dict[str, int] = {}
        for _ in range(repeats):
            for name, path in copies.items():
                t0 = time.perf_counter()
                template, missing = extract_motion(path, options=DriverOptions(), detector=detector)
                times[name].append(time.perf_counter() - t0)
                found[name] = int(template.face_found.sum())
        t0 = time.perf_counter()
        try:
            extract_motion(grey, options=DriverOptions(), detector=detector)
        except NoFaceError as e:
            faceless = f"{time.perf_counter() - t0:.2f} s ({e})"
    base = float(np.median(times["upright"]))
    print(f"clip {clip.name}, {frames} frames of 224x224, dlib, {repeats} interleaved repeats (median)")
    for name, ts in times.items():
        print(f"{name:<11} {np.median(ts):6.2f} s  {np.median(ts) / base:5.2f}x upright  faces in {found[name]}/{frames} frames")
    print(f"faceless    fails after {faceless}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--rotation", action="store_true", help="time upright vs sideways copies of the clip instead")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.rotation:
        rotation(args.clip, args.frames, args.repeats)
        return
    print(f"clip {args.clip.name}, {args.frames} frames of 224x224, CPU")
    header = f"{'stage':<11}" + "".join(f"{f'{p} proc' + ('s' if p > 1 else '') + ': f/s, CPU ms/f':>30}" for p in args.procs)
    print(header)
    print("-" * len(header))
    for stage in args.stages:
        cells = []
        for procs in args.procs:
            fps, cpu_ms = measure(stage, args.clip, args.frames, procs)
            cells.append(f"{fps:8.1f} ({1000 / fps:6.2f} ms) {cpu_ms:7.2f}")
        print(f"{stage:<11}" + "".join(f"{c:>30}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
