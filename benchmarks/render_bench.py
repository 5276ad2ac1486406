"""Per-frame cost of G^l + softmax + G^s at 224 px against oneDNN's convolution rate.

The ceiling is what oneDNN (which runs every convolution of the model) reaches on two large,
well-shaped convolutions in the same process: a 3x3 conv, 256 -> 256 channels at 112², and a 1x1
conv equal to a 4096² GEMM (4096 -> 4096 channels at 64²), channels-last, fp32 and bf16, each
timed with its plain weight (reordered by every call) and packed once (as the render path runs);
the ceiling of a dtype is the fastest of these. (``a @ b`` goes to MKL, which is slower than oneDNN
on this AMD CPU: it is printed for reference only.) GFLOPs are the authors' work: 2·MAC of every
conv/dense/blur layer of the reference networks, counted once before any inference rewrite.

Rounds interleave everything (ceiling convs, then each dtype x batch x variant), so that load
from other processes hits all alike. In a round each render is called twice in a row and the
second call is timed (the first, right after other models ran, starts with cold caches that a
video rendered frame after frame never has; its time is printed in its own column), as each
ceiling conv is timed warm; each figure is the median over rounds (min in brackets),
and ratios use the ceiling's median from the same rounds ("best x best" also divides the
fastest render by the fastest ceiling conv). Variants: ``reference`` (the training-path modules
in eval mode), ``fast`` (``LSR.for_inference_(dtype=...)``, what ``thead animate`` runs: convolutions packed for
oneDNN in the render dtype, instance norms through the fused kernels of ``thead.kernels``) and ``compiled``
(``for_inference_(compile=True)``; its first call per dtype and batch compiles, in the warm-up).

``--profile`` adds a per-block table (eager, inclusive time of each block of G^l and G^s,
median over rounds, its GFLOPs and GFLOP/s) showing where a frame's time goes.

Usage: python benchmarks/render_bench.py [--config default|reduced] [--threads 2]
       [--batches 1,2] [--dtypes fp32,bf16] [--variants reference,fast,compiled]
       [--rounds 5] [--profile] [--encoders]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import resource
import statistics
import time
from collections import defaultdict

import torch
import torch.nn.functional as F

from thead.config import LSRConfig
from thead.model import ENCODE_NETWORKS, LSR, RENDER_NETWORKS, Latents
from thead.nn import onednn
from thead.nn.layers import BlurDown, EqualConv2d, EqualLinear
from thead.runtime import tune_cpu_allocator

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# -- FLOPs (the authors' work) ----------------------------------------------------------------

def count_flops(model: LSR, contour: torch.Tensor, latents: Latents) -> dict[str, float]:
    """GFLOPs per module name (2·MAC of conv/linear/blur layers) for one render of ``contour``,
    plus ``"frame"`` (per frame) and ``"shot"`` (both encoders, per shot)."""
    flops: dict[str, float] = defaultdict(float)
    names = {m: n for n, m in model.named_modules()}

    def conv_hook(m, inp, out):
        w = m.weight
        flops[names[m]] += 2 * out.numel() * (w.shape[1] * w.shape[2] * w.shape[3] if w.ndim == 4 else w.shape[1]) / 1e9

    def blur_hook(m, inp, out):
        flops[names[m]] += 2 * out.numel() * 9 / 1e9

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, (EqualConv2d, EqualLinear))]
    hooks += [m.register_forward_hook(blur_hook) for m in model.modules() if isinstance(m, BlurDown)]
    with torch.no_grad():
        state = model.prepare(latents)
        flops.clear()
        model.render(contour, state)
        per_module = {k: v / contour.shape[0] for k, v in flops.items()}
        flops.clear()
        if model.style_encoder is not None:
            x = torch.zeros(1, 6, 224, 224)
            model.style_encoder(x)
            model.layout_encoder(x)
        shot = sum(flops.values())
    for h in hooks:
        h.remove()
    per_module["frame"] = sum(per_module.values())
    per_module["shot"] = shot
    return per_module


def block_flops(per_module: dict[str, float], block: str) -> float:
    return sum(v for k, v in per_module.items() if k == block or k.startswith(block + "."))


# -- the ceiling ------------------------------------------------------------------------------

CEILING_CONVS = {
    # name: (batch, in, out, kernel, size)
    "conv3x3 256->256 @112²": (1, 256, 256, 3, 112),
    "conv1x1 = GEMM 4096²": (1, 4096, 4096, 1, 64),
}


def make_ceiling_convs(dtype: torch.dtype) -> dict[str, tuple]:
    out = {}
    for name, (n, ci, co, k, s) in CEILING_CONVS.items():
        x = torch.randn(n, ci, s, s).to(dtype).contiguous(memory_format=torch.channels_last)
        w = (torch.randn(co, ci, k, k) / (ci * k * k) ** 0.5).to(dtype).contiguous(memory_format=torch.channels_last)
        packed = onednn.pack(w, dtype, k // 2, x.shape) if onednn.available() else None
        out[name] = (x, w, packed, k // 2, 2 * n * co * s * s * ci * k * k / 1e9)
    return out


def conv_rate(x, w, packed, pad, gflops) -> float:
    """GFLOP/s of one oneDNN convolution (best of 2 calls each with the plain weight, reordered
    by every call, and the packed one, as the render path runs it: the faster of the two)."""
    best = float("inf")
    with torch.inference_mode():
        for _ in range(2):
            t = clock()
            F.conv2d(x, w, padding=pad)
            best = min(best, clock() - t)
            if packed is not None:
                t = clock()
                onednn.conv(x, packed, None, pad, x.dtype)
                best = min(best, clock() - t)
    return gflops / best


def mkl_gemm_rate() -> float:
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    a @ b
    t = clock()
    a @ b
    return 2 * 4096**3 / (clock() - t) / 1e9


# -- timing -----------------------------------------------------------------------------------

def render_call(model: LSR, state, contour: torch.Tensor, dtype: str):
    def run():
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=dtype == "bf16"):
            return model.render(contour, state).image.float()

    return run


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCK["wall"]


def timed(fn) -> float:
    t = clock()
    fn()
    return (clock() - t) * 1000


class BlockTimer:
    """Inclusive wall time of named blocks (forward pre/post hooks), per call."""

    def __init__(self, model: LSR, blocks: list[str]):
        self.times: dict[str, list[float]] = defaultdict(list)
        self._start: dict[str, float] = {}
        mods = dict(model.named_modules())
        self.hooks = []
        for b in blocks:
            m = mods[b]
            self.hooks.append(m.register_forward_pre_hook(lambda m, i, b=b: self._start.__setitem__(b, clock())))
            self.hooks.append(m.register_forward_hook(lambda m, i, o, b=b: self._acc.__setitem__(b, self._acc.get(b, 0.0) + (clock() - self._start[b]) * 1000)))
        self._acc: dict[str, float] = {}

    def call(self, fn) -> float:
        self._acc = {}
        total = timed(fn)
        for b, ms in self._acc.items():
            self.times[b].append(ms)
        self.times["frame"].append(total)
        return total

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()


def profile_blocks(model: LSR) -> list[str]:
    names = [n for n, _ in model.named_modules()]
    pick = []
    for n in names:
        parts = n.split(".")
        if n in ("layout_generator.output_conv", "image_generator.to_rgb", "image_generator.fc"):
            pick.append(n)
        elif len(parts) == 3 and parts[1] in ("encoder_blocks", "decoder_blocks", "blocks"):
            pick.append(n)
    return pick


def bf16_accuracy(model: LSR, model16: LSR, latents: Latents, name: str) -> None:
    """bf16 against fp32 on one frame, chained and per network. Random weights make G^s chaotic
    in its layout input (a flipped argmax pixel changes the frame), so the chained PSNR
    understates bf16; each network on its own is the meaningful figure."""
    contour = (torch.rand(1, 3, 224, 224) * 2 - 1).contiguous(memory_format=torch.channels_last)
    c = model.config.layout_generator.num_classes

    def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
        mse = F.mse_loss(a.float().clamp(-1, 1), b.float().clamp(-1, 1)).item()
        return 10 * torch.log10(torch.tensor(4.0 / mse)).item()

    with torch.inference_mode():
        state, state16 = model.prepare(latents), model16.prepare(latents)
        ref = model.render(contour, state)
        with torch.autocast("cpu", torch.bfloat16):
            chained = model16.render(contour, state16).image
            logits16 = model16.layout_generator(contour, styles=state16.layout_styles)[:, :c]
            img16 = model16.image_generator(ref.layout, seed=state16.seed)
        img32 = model.image_generator(ref.layout, seed=state.seed)
    agree = (logits16.float().argmax(1) == ref.layout_logits.argmax(1)).float().mean().item()
    print(f"bf16 vs fp32 ({name}): chained frame PSNR {psnr(chained, ref.image):.1f} dB; G^l layout argmax "
          f"agreement {agree * 100:.2f}%; G^s alone (same layout) PSNR {psnr(img16, img32):.1f} dB")


# -- main -------------------------------------------------------------------------------------

def build_variant(base: LSR, name: str, dtype: str = "fp32") -> LSR:
    m = copy.deepcopy(base)
    if name == "reference":  # eval only: no folding, no fusion, NCHW as loaded
        return m.eval().requires_grad_(False)
    if name == "fast":  # convolutions packed for oneDNN in the render dtype, as Renderer does
        return m.for_inference_(dtype=DTYPES[dtype])
    if name == "compiled":
        return m.for_inference_(compile=True)
    raise SystemExit(f"error: unknown variant {name!r} (reference, fast, compiled)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=["default", "reduced"], default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,2")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--variants", default="fast")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="per-block table of the 'fast' variant")
    ap.add_argument("--encoders", action="store_true", help="also time both encoders at K = 1 and 8")
    ap.add_argument("--clock", choices=list(CLOCK), default="wall",
                    help="cpu: process CPU time instead of wall time; with --threads 1 it stays meaningful "
                         "when other processes load the machine (a rate per core, not the machine's)")
    args = ap.parse_args()
    global clock
    clock = CLOCK[args.clock]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tune_cpu_allocator()
    config = LSRConfig() if args.config == "default" else LSRConfig.reduced()
    dtypes = args.dtypes.split(",")
    batches = [int(x) for x in args.batches.split(",")]
    variants = args.variants.split(",")

    base = LSR(config, networks=ENCODE_NETWORKS + RENDER_NETWORKS if args.encoders else RENDER_NETWORKS)
    z = config.z_dim
    latents = Latents(torch.randn(1, z), torch.randn(1, z))
    contour1 = torch.rand(1, 3, 224, 224) * 2 - 1
    flops = count_flops(base, contour1, latents)
    gf = flops["frame"]
    # the fast variant is built per dtype (its packed weights are in the render dtype)
    wanted = set(variants) | ({"fast"} if args.profile else set())
    models, shared = {}, {}
    for v in wanted:
        for d in dtypes:
            if v == "fast":
                models[v, d] = build_variant(base, v, d)
            else:
                models[v, d] = shared.setdefault(v, build_variant(base, v))
    states = {k: m.prepare(latents) for k, m in models.items()}
    contours = {b: (torch.rand(b, 3, 224, 224) * 2 - 1).contiguous(memory_format=torch.channels_last) for b in batches}
    convs = {d: make_ceiling_convs(DTYPES[d]) for d in dtypes}

    print(f"{datetime.date.today()} {platform.machine()} {platform.processor() or ''} torch {torch.__version__}, "
          f"{args.threads} threads, {args.config} config: G^l+G^s {gf:.2f} GFLOPs/frame; "
          f"{args.rounds} interleaved rounds, {args.clock} clock", flush=True)
    # warm-up: every variant once per batch and dtype (compiles the compiled variant)
    calls = {}
    for d in dtypes:
        for b in batches:
            for v in variants:
                calls[d, b, v] = render_call(models[v, d], states[v, d], contours[b], d)
                t = timed(calls[d, b, v])
                print(f"  warm-up {v} {d} B{b}: {t:.0f} ms", flush=True)
                calls[d, b, v]()
    ceil = defaultdict(list)
    ms = defaultdict(list)
    first = defaultdict(list)
    prof = {}
    if args.profile:
        for d in dtypes:
            prof[d] = BlockTimer(models["fast", d], profile_blocks(models["fast", d]))
        prof_call = {d: render_call(models["fast", d], states["fast", d], contours[1], d) for d in dtypes}
    mkl = []
    for r in range(args.rounds):
        mkl.append(mkl_gemm_rate())
        for d in dtypes:
            for name, c in convs[d].items():
                ceil[d, name].append(conv_rate(*c))
            for b in batches:
                for v in variants:
                    # the first call after another model or batch size ran starts with cold caches,
                    # which a video's frame-after-frame rendering never sees: kept as its own column,
                    # the frame rate is the second, consecutive call
                    first[d, b, v].append(timed(calls[d, b, v]) / b)
                    ms[d, b, v].append(timed(calls[d, b, v]) / b)
            if args.profile:
                prof_call[d]()
                prof[d].call(prof_call[d])
        print(f"  round {r + 1}/{args.rounds} done", flush=True)

    ceiling = {d: max(statistics.median(ceil[d, n]) for n in CEILING_CONVS) for d in dtypes}
    print()
    print(f"oneDNN conv rate (median of rounds), GFLOP/s; MKL `a @ b` 4096² fp32 for reference: {statistics.median(mkl):.0f}")
    print("| conv | " + " | ".join(dtypes) + " |")
    print("| --- |" + " --- |" * len(dtypes))
    for n in CEILING_CONVS:
        print(f"| {n} | " + " | ".join(f"{statistics.median(ceil[d, n]):.0f}" for d in dtypes) + " |")
    print("| **ceiling** | " + " | ".join(f"**{ceiling[d]:.0f}**" for d in dtypes) + " |")
    print()
    print(f"render G^l + softmax + G^s, 224², {gf:.2f} GFLOPs/frame, {args.threads} threads")
    print("| variant | dtype | batch | ms/frame median (min) | GFLOP/s | x ceiling | best x best | first call: ms (x ceiling) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for d in dtypes:
        best_ceiling = max(max(ceil[d, n]) for n in CEILING_CONVS)
        for b in batches:
            for v in variants:
                med = statistics.median(ms[d, b, v])
                rate, best = gf / med * 1000, gf / min(ms[d, b, v]) * 1000
                cold = statistics.median(first[d, b, v])
                print(f"| {v} | {d} | {b} | {med:.1f} ({min(ms[d, b, v]):.1f}) | {rate:.0f} | **{rate / ceiling[d]:.2f}** "
                      f"| {best / best_ceiling:.2f} | {cold:.1f} ({gf / cold * 1000 / ceiling[d]:.2f}) |")
    print("(ms/frame: the second of two consecutive calls in each round, as a video renders frame after frame; "
          "first call: the call right after the other models and batch sizes ran, caches cold; "
          "x ceiling: median render rate / median ceiling; best x best: fastest render / fastest ceiling conv, "
          "the steadier estimate when other processes load the machine)")
    if args.profile:
        for d in dtypes:
            t = prof[d].times
            frame = statistics.median(t["frame"])
            print()
            print(f"per block, fast variant, {d}, batch 1 (inclusive ms, median of rounds; frame {frame:.1f} ms; "
                  "GFLOPs are the authors' count, so blocks whose exact rewrites do less work can exceed 1.0)")
            print("| block | ms | % frame | GFLOPs | GFLOP/s | x ceiling |")
            print("| --- | --- | --- | --- | --- | --- |")
            covered = 0.0
            for blk in profile_blocks(models["fast", d]):
                if blk not in t:
                    continue
                bms, bgf = statistics.median(t[blk]), block_flops(flops, blk)
                covered += bms
                rate = bgf / bms * 1000 if bms else 0.0
                print(f"| {blk} | {bms:.1f} | {100 * bms / frame:.0f}% | {bgf:.2f} | {rate:.0f} | {rate / ceiling[d]:.2f} |")
            print(f"| other (softmax, upsampling, layout pyramid, glue) | {frame - covered:.1f} | "
                  f"{100 * (frame - covered) / frame:.0f}% | — | — | — |")
    if "bf16" in dtypes:
        v = variants[-1]
        m32 = models[v, "fp32"] if (v, "fp32") in models else build_variant(base, v, "fp32")
        bf16_accuracy(m32, models[v, "bf16"], latents, v)
    if args.encoders:
        enc = build_variant(base, "fast")
        for k in (1, 8):
            x = torch.rand(k, 6, 224, 224).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                t = [timed(lambda: (enc.style_encoder(x), enc.layout_encoder(x))) for _ in range(3)][1:]
            print(f"encoders fp32 K={k}: {statistics.median(t):.1f} ms/avatar ({statistics.median(t) / k:.1f} ms/shot, "
                  f"{flops['shot'] * k / statistics.median(t) * 1000 / ceiling.get('fp32', float('nan')):.2f} x ceiling)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
