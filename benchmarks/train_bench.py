"""Training speed: one full meta-learning step (stage B) and subject fine-tuning (stage C).

    python benchmarks/train_bench.py [--steps 4] [--warmup 2] [--threads 2] [--batch-size 4] [--device cpu]

1. Meta-learning step at the authors' batch (4 per process, K=4, default 224 px model) with the
   full objective: GAN + R1 + R2 + VGG19 + L1 + VGG-Face + latent L2, Adam on G and D — the
   real ``Trainer.step`` on real sample frames. VGG19 and VGG-Face have random weights (their
   files cannot be downloaded here): same architecture, same FLOPs. Reference: the authors'
   TensorFlow step takes 16.8 s on this 2-core CPU (3014 GFLOPs, perf-anchors §1).
2. Fine-tuning: ``thead.train.finetune`` on id00017's 32 train frames for a few steps; the wall
   time for K = 1, 4, 8 is the measured per-step time times the release's schedule (24, 60, 100
   steps) plus the one-off setup, labelled as extrapolated.
Times are medians over the measured steps after the warm-up steps (on the CPU the heap grows to
the step's peak during the first two; after that a step page-faults no more).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "lsr-sample" / "fsth_eval_subset_processed"
STEP_GFLOPS = 3014.0  # full objective, batch 4, K=4 (perf-anchors, graph walk of the ops that run)
TF_STEP_S = 16.812


def full_loss_networks():
    from thead.nn.backbones.vgg import VGG19Features, VGGFace
    from thead.train.losses import LossNetworks

    return LossNetworks(VGG19Features(), VGGFace())


def bench_meta_step(args) -> None:
    from thead.config import LSRConfig
    from thead.model import LSR
    from thead.train.checkpoint import TrainState
    from thead.train.config import meta_learning
    from thead.train.data import ClipDataset, DatasetIndex, collate
    from thead.train.trainer import Distributed, Trainer

    cfg = meta_learning(batch_size=args.batch_size, num_workers=0, warmup_steps=0)
    dist = Distributed(device=torch.device(args.device))
    with tempfile.TemporaryDirectory() as tmp:
        index, _ = DatasetIndex.load_or_build(SAMPLE, Path(tmp) / "index.npz")
        torch.manual_seed(0)
        model = LSR(LSRConfig())
        trainer = Trainer(cfg, model, full_loss_networks(), index, Path(tmp), dist=dist, state=TrainState(0, 0, 0, 1, cfg.to_dict()))
        ds = ClipDataset(index, num_shots=cfg.num_shots, seed=0)
        times = []
        for i in range(args.warmup + args.steps):
            batch = collate([ds[(j % len(index), i * 8 + j)] for j in range(cfg.batch_size)]).to(dist.device, channels_last=True)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            trainer.step(batch)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
            print(f"  meta step {i}: {times[-1]:.2f} s{' (warm-up)' if i < args.warmup else ''}", flush=True)
    times = times[args.warmup :]
    med = statistics.median(times)
    print(f"meta-learning step, batch {cfg.batch_size}, K={cfg.num_shots}, {args.device}, {torch.get_num_threads()} threads: "
          f"median {med:.2f} s/step (min {min(times):.2f}, max {max(times):.2f}; {args.steps} steps), "
          f"{cfg.batch_size / med:.3f} images/s (the authors' {STEP_GFLOPS * cfg.batch_size / 4:.0f} GFLOPs of work at {STEP_GFLOPS * cfg.batch_size / 4 / med:.0f} GFLOP/s; thead skips some); "
          f"authors' TF: {TF_STEP_S} s (x{TF_STEP_S / med * 4 / cfg.batch_size:.2f})")


def bench_finetune(args) -> None:
    from thead.config import LSRConfig
    from thead.model import LSR
    from thead.train.data import read_rgb
    from thead.train.finetune import FinetuneOptions, finetune, finetune_steps

    folder = SAMPLE / "train" / "id00017" / "OLguY5ofUrY" / "combined"
    rgb = torch.stack([read_rgb(folder / f"{i:05d}_rgb.png", 224) for i in range(32)])
    contour = torch.stack([read_rgb(folder / f"{i:05d}_contour.png", 224) for i in range(32)])
    torch.manual_seed(0)
    model = LSR(LSRConfig())
    with torch.no_grad():
        latents = model.encode(rgb[None, :1], contour[None, :1])
    nets = full_loss_networks()
    per_step: list[float] = []
    t0 = time.perf_counter()
    finetune(model, latents, rgb, contour, FinetuneOptions(steps=args.warmup + args.steps, device=args.device), lambda p: per_step.append(p.seconds), loss_networks=nets)
    total = time.perf_counter() - t0
    setup = total - sum(per_step)
    step = statistics.median(per_step[args.warmup :])
    print(f"fine-tuning step (batch 1, default model, {args.device}): median {step:.2f} s/step over {args.steps} steps (+{setup:.1f} s setup)")
    for k in (1, 4, 8):
        n = finetune_steps(k)
        print(f"  thead finetune K={k}: {n} steps -> ~{setup + n * step:.0f} s (extrapolated from the measured steps)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=4, help="measured steps")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured steps first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", choices=["meta", "finetune"], default=None)
    args = p.parse_args()
    if not SAMPLE.exists():
        sys.exit(f"sample data not found at {SAMPLE}")
    torch.set_num_threads(args.threads)
    from thead.runtime import tune_cpu_allocator

    tune_cpu_allocator()
    if args.only in (None, "meta"):
        bench_meta_step(args)
    if args.only in (None, "finetune"):
        bench_finetune(args)


if __name__ == "__main__":
    main()
