"""Per-frame cost of G^l + softmax + G^s at 224 px, and of the encoders per shot.

Median ms/frame after warm-up, FLOPs per frame (analytic count of every conv/dense/blur
multiply-accumulate) and the fraction of this machine's fp32 GEMM ceiling (measured here with a
4096² matmul). Usage: python benchmarks/render_bench.py [--config default|reduced] [--threads 2]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
import torch.nn.functional as F

from thead.config import LSRConfig
from thead.model import ENCODE_NETWORKS, LSR, RENDER_NETWORKS, Latents
from thead.runtime import tune_cpu_allocator


def count_flops(model: LSR, contour: torch.Tensor, latents: Latents) -> tuple[float, float]:
    """(per-frame G^l+G^s GFLOPs, per-shot encoder GFLOPs), 2·MAC of conv/linear layers."""
    flops = {"n": 0}

    def conv_hook(m, inp, out):
        w = m.weight
        flops["n"] += 2 * out.numel() * (w.shape[1] * w.shape[2] * w.shape[3] if w.ndim == 4 else w.shape[1])

    from thead.nn.layers import BlurDown, EqualConv2d, EqualLinear

    def blur_hook(m, inp, out):
        flops["n"] += 2 * out.numel() * 9

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, (EqualConv2d, EqualLinear))]
    hooks += [m.register_forward_hook(blur_hook) for m in model.modules() if isinstance(m, BlurDown)]
    with torch.no_grad():
        state = model.prepare(latents)
        flops["n"] = 0
        model.render(contour, state)
        per_frame = flops["n"] / contour.shape[0]
        flops["n"] = 0
        model.style_encoder(torch.zeros(1, 6, 224, 224))
        model.layout_encoder(torch.zeros(1, 6, 224, 224))
        per_shot = flops["n"]
    for h in hooks:
        h.remove()
    return per_frame / 1e9, per_shot / 1e9


def timeit(fn, warmup: int, reps: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def gemm_ceiling() -> float:
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    t = min(timeit(lambda: a @ b, 1, 3))
    return 2 * 4096**3 / (t / 1000) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=["default", "reduced"], default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tune_cpu_allocator()
    config = LSRConfig() if args.config == "default" else LSRConfig.reduced()
    model = LSR(config, networks=ENCODE_NETWORKS + RENDER_NETWORKS)
    z = config.z_dim
    latents = Latents(torch.randn(1, z), torch.randn(1, z))
    contour1 = torch.rand(1, 3, 224, 224) * 2 - 1
    gflops_frame, gflops_shot = count_flops(model, contour1, latents)
    model.for_inference_()
    ceiling = gemm_ceiling()
    print(f"torch {torch.__version__}, {args.threads} threads, fp32 GEMM ceiling {ceiling:.0f} GFLOP/s")
    print(f"G^l+G^s {gflops_frame:.2f} GFLOPs/frame, E^s+E^l {2 * gflops_shot / 2:.2f} GFLOPs/shot (both)")
    state = model.prepare(latents)
    ref = {}
    for dtype in args.dtypes.split(","):
        for b in [int(x) for x in args.batches.split(",")]:
            contour = (torch.rand(b, 3, 224, 224) * 2 - 1).contiguous(memory_format=torch.channels_last)

            def run():
                with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=dtype == "bf16"):
                    return model.render(contour, state).image.float()

            ms = timeit(run, 2, args.reps)
            med = statistics.median(ms) / b
            line = f"render {dtype} B{b}: {med:.1f} ms/frame (min {min(ms) / b:.1f}), {gflops_frame / med * 1000:.0f} GFLOP/s = {gflops_frame / med * 1000 / ceiling:.2f} x ceiling"
            out = run()
            if dtype == "fp32":
                ref[b] = out
            elif b in ref:
                a, r = out.clamp(-1, 1), ref[b].clamp(-1, 1)
                mse = F.mse_loss(a, r).item()
                line += f", PSNR vs fp32 {10 * torch.log10(torch.tensor(4.0 / mse)).item():.1f} dB"
            print(line, flush=True)
    if "bf16" in args.dtypes:
        # Random weights make G^s chaotic in its layout input (a flipped argmax pixel changes the
        # frame), so the chained PSNR understates bf16; also report each network on its own.
        contour = (torch.rand(1, 3, 224, 224) * 2 - 1).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            logits = model.layout_generator(contour, styles=state.layout_styles)[:, :19]
            layout = logits.softmax(1)
            ref_img = model.image_generator(layout, seed=state.seed)
            with torch.autocast("cpu", torch.bfloat16):
                logits16 = model.layout_generator(contour, styles=state.layout_styles)[:, :19].float()
                img16 = model.image_generator(layout, seed=state.seed).float()
        agree = (logits16.argmax(1) == logits.argmax(1)).float().mean().item()
        mse = F.mse_loss(img16.clamp(-1, 1), ref_img.clamp(-1, 1)).item()
        print(f"bf16 per network: G^l layout argmax agreement {agree * 100:.2f}%, "
              f"G^s alone (same layout) PSNR vs fp32 {10 * torch.log10(torch.tensor(4.0 / mse)).item():.1f} dB")
    for k in (1, 8):
        x = torch.rand(k, 6, 224, 224).contiguous(memory_format=torch.channels_last)
        ms = timeit(lambda: (model.style_encoder(x), model.layout_encoder(x)), 1, 3)
        print(f"encoders fp32 K={k}: {statistics.median(ms):.1f} ms/avatar ({statistics.median(ms) / k:.1f} ms/shot)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
