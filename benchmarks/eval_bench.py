"""CPU cost of ``thead eval``: each metric's ms/frame, and the protocol on the 3 sample people.

Metrics run on real 224x224 sample frames (the networks with random weights where the published
ones cannot be downloaded here: same architecture, same cost). The protocol runs the reduced
parity model (converted from ``shared/parity``) on every test frame of the sample's 3 people for
K = 1, 4, 8, 32 with ``--id-model dlib``, then again to time a rerun from the frame cache.
Median of ``--reps`` after one warm-up; wall and process CPU seconds.

Usage: python benchmarks/eval_bench.py [--threads 2] [--frames 8] [--max-frames N] [--skip-protocol]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "lsr-sample" / "fsth_eval_subset"
PARITY = REPO.parent / "shared" / "parity" / "ckpt_reduced"


def median_ms(fn, frames: int, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000 / frames)
    return statistics.median(times)


def metric_costs(frames: int, reps: int) -> list[tuple[str, float]]:
    from thead.eval.fid import FeatureStats, InceptionFeatures, frechet_distance
    from thead.eval.idsim import DlibEmbedder, VGGFaceEmbedder
    from thead.eval.lpips import LPIPS, lpips_uint8
    from thead.eval.metrics import images_to_tensor, psnr, ssim
    from thead.eval.nmke import LandmarkError
    from thead.faces.images import load_image
    from thead.faces.landmarks import make_detector
    from thead.nn.backbones.inception import FIDInceptionV3

    paths = sorted((SAMPLE / "test").glob("*/*/combined/*_rgb.png"))[:frames]
    reals = [load_image(p) for p in paths]
    rng = np.random.default_rng(0)
    fakes = [np.clip(im + rng.normal(0, 10, im.shape), 0, 255).astype(np.uint8) for im in reals]
    real_t, fake_t = images_to_tensor(reals), images_to_tensor(fakes)
    detector = make_detector("dlib")
    faces = [detector.detect(im)[0] for im in reals]
    lms, boxes = [f.landmarks for f in faces], [f.box for f in faces]
    n = len(reals)

    rows = [
        ("PSNR", median_ms(lambda: psnr(real_t, fake_t), n, reps)),
        ("SSIM", median_ms(lambda: ssim(real_t, fake_t), n, reps)),
    ]
    lpips = LPIPS()
    rows.append(("LPIPS (AlexNet)", median_ms(lambda: lpips_uint8(lpips, real_t, fake_t), n, reps)))
    dlib_emb = DlibEmbedder()
    rows.append(("ID-SIM dlib (2 faces)", median_ms(lambda: (dlib_emb.embed(reals, lms), dlib_emb.embed(fakes, lms)), n, reps)))
    try:
        from thead.nn.backbones.vgg import VGGFace

        vgg = VGGFaceEmbedder(VGGFace())
        rows.append(("ID-SIM VGG-Face (2 frames)", median_ms(lambda: (vgg.embed(reals, lms), vgg.embed(fakes, lms)), n, max(1, reps // 2))))
        del vgg
    except ImportError:
        pass
    nmke = LandmarkError(detector)
    rows.append(("NMKE dlib (face found)", median_ms(lambda: nmke(fakes, lms, boxes), n, reps)))
    blank = [np.zeros_like(im) for im in reals[:2]]
    rows.append(("NMKE dlib (no face: CNN, box)", median_ms(lambda: nmke(blank, lms[:2], boxes[:2]), 2, 1)))
    inception = InceptionFeatures(FIDInceptionV3())
    rows.append(("FID Inception-v3 features (2 frames)", median_ms(lambda: (inception(reals), inception(fakes)), n, reps)))
    a = rng.normal(size=(256, 2048))
    stats = FeatureStats(2048)
    stats.add(a)
    mu, cov = stats.mean_cov()
    t = time.perf_counter()
    frechet_distance(mu, cov, mu + 0.1, cov)
    rows.append(("Fréchet distance 2048-d (once per run)", (time.perf_counter() - t) * 1000))
    return rows


def protocol_cost(max_frames: int | None) -> tuple[float, float, float, float, str]:
    from thead.convert import convert_checkpoint
    from thead.eval import EvalOptions, evaluate
    from thead.eval.report import render_text

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "lsr-reduced"
        convert_checkpoint(PARITY, weights)
        options = EvalOptions(id_model="dlib", detector="dlib", allow_download=False, max_frames=max_frames, output_dir=Path(tmp) / "out")
        times = []
        for _ in range(2):  # first run renders, the second reads the frame cache
            w, c = time.perf_counter(), time.process_time()
            result = evaluate(SAMPLE, weights, options)
            times += [time.perf_counter() - w, time.process_time() - c]
        return (*times, render_text(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=8, help="frames per metric timing batch")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-frames", type=int, default=None, help="test frames per person in the protocol run")
    ap.add_argument("--skip-protocol", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; frames from {SAMPLE}")
    print(f"{'metric':42s} ms/frame")
    for name, ms in metric_costs(args.frames, args.reps):
        print(f"{name:42s} {ms:9.1f}")
    if not args.skip_protocol:
        wall, cpu, wall2, cpu2, table = protocol_cost(args.max_frames)
        n = "all" if args.max_frames is None else args.max_frames
        print(f"\nprotocol, 3 people x K=1,4,8,32 x {n} test frames, reduced parity weights, dlib ID-SIM/landmarks:")
        print(f"  first run {wall:.1f} s wall, {cpu:.1f} s CPU; rerun from the frame cache {wall2:.1f} s wall, {cpu2:.1f} s CPU")
        print(table)


if __name__ == "__main__":
    main()
