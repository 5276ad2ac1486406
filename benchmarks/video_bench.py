"""Milliseconds per frame of ``thead.video``: decode (``open_video``, rgb24, upright) and encode
(``VideoWriter``, libx264 yuv420p, crf 18, with and without the audio copy).

Sizes: 224x224 (the real sample clip) and 512x512 (the clip's frames upscaled, then encoded
once to make a source). Each cell is the best of ``--repeats`` runs: wall ms per frame and CPU
ms per frame (on a shared machine CPU time is the cost; wall time what a user waits; FFmpeg
decodes and x264 encodes with threads, so CPU can exceed wall).

Usage: python benchmarks/video_bench.py [--clip PATH] [--repeats 3] [--presets veryfast medium]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = ROOT.parent / "shared/data/lsr-sample/test_videos/id00017/OLguY5ofUrY/00039.mp4"


def timed(fn, repeats: int) -> tuple[float, float, int]:
    """Best (wall s, CPU s) over ``repeats`` calls of ``fn`` (which returns a frame count)."""
    best = (float("inf"), float("inf"), 0)
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        n = fn()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu, n))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--presets", nargs="+", default=["veryfast", "medium"])
    args = parser.parse_args()

    from PIL import Image

    from thead.video import open_video, write_video

    with open_video(args.clip) as reader:
        fps = reader.fps
        frames224 = [f.image for f in reader]
    frames512 = [np.asarray(Image.fromarray(f).resize((512, 512), Image.BICUBIC)) for f in frames224]

    with tempfile.TemporaryDirectory() as tmp:
        src512 = Path(tmp) / "src512.mp4"
        write_video(frames512, src512, fps)
        sources = {224: args.clip, 512: src512}
        frames = {224: frames224, 512: frames512}
        print(f"{len(frames224)} frames, {fps} fps; best of {args.repeats}; ms per frame (wall / CPU)")
        print(f"{'stage':<34} {'224x224':>16} {'512x512':>16}")

        def row(label: str, make) -> None:
            cells = []
            for size in (224, 512):
                wall, cpu, n = timed(make(size), args.repeats)
                cells.append(f"{1e3 * wall / n:6.2f} / {1e3 * cpu / n:6.2f}")
            print(f"{label:<34} {cells[0]:>16} {cells[1]:>16}")

        def decode(size: int):
            def run() -> int:
                with open_video(sources[size]) as reader:
                    return sum(1 for _ in reader)

            return run

        row("decode (open_video)", decode)
        for preset in args.presets:
            for audio in (False, True):

                def encode(size: int, preset=preset, audio=audio):
                    out = Path(tmp) / f"out{size}.mp4"
                    return lambda: write_video(
                        frames[size], out, fps, audio_from=args.clip if audio else None, preset=preset
                    )

                row(f"encode crf 18 {preset}{' + audio copy' if audio else ''}", encode)


if __name__ == "__main__":
    main()
