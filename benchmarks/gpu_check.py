"""One short check of thead on a CUDA machine (well under 10 minutes), printed as one table.

    python benchmarks/gpu_check.py            # CUDA: default (full-size) model, full-size VGGs
    python benchmarks/gpu_check.py --smoke    # CPU: reduced model, tiny VGGs, a few seconds

1. Render throughput (G^l + softmax + G^s per frame, avatar prepared once) by batch and dtype
   (fp32, and bf16 / fp16 under autocast), frames/s as the median of timed repeats.
2. The meta-learning training step (stage B, the full objective: GAN + R1 + R2 + VGG19 + L1 +
   VGG-Face + latent L2, Adam on G and D) with AMP (bf16 autocast on CUDA), s/step.
3. One DDP training step: a one-process group (NCCL on CUDA, gloo in smoke mode), the trainer
   wrapping G's side in DistributedDataParallel and all-reducing D's gradients.
4. ``thead finetune`` for an avatar of K = 4 sample frames, end to end through the CLI in a
   fresh process (weights and avatar store in a temporary folder): the release's 60 steps on
   CUDA, 2 in smoke mode.

VGG19 / VGG-Face and the LSR weights are random (the real files cannot be downloaded here):
the same architectures, so the same work. The avatar's landmarks are random too (timing only).
Uses the real sample frames in ../shared/data/lsr-sample. Exit code 1 if a check fails; the
table shows which.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("THEAD_SHARED", REPO.parent / "shared")) / "data" / "lsr-sample" / "fsth_eval_subset_processed"
CLIP = "train/id00017/OLguY5ofUrY/combined"
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Plan:
    """What one run measures: the full plan on CUDA, a seconds-long one on the CPU."""

    device: torch.device
    model_size: str  # "default" | "reduced"
    render_batches: tuple[int, ...]
    render_dtypes: tuple[str, ...]
    render_repeats: int
    train_batch: int
    num_shots: int
    train_steps: int  # timed
    warmup_steps: int  # untimed, first
    finetune_steps: int | None  # None: the release's schedule for K = 4
    tiny_loss_networks: bool

    @classmethod
    def cuda(cls) -> Plan:
        return cls(torch.device("cuda"), "default", (1, 8, 32), ("fp32", "bf16", "fp16"), 10, 4, 4, 5, 2, None, False)

    @classmethod
    def smoke(cls) -> Plan:
        return cls(torch.device("cpu"), "reduced", (1, 2), ("fp32", "bf16"), 1, 1, 2, 1, 0, 2, True)


@dataclass
class Row:
    check: str
    setting: str
    result: str
    ok: bool = True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeats: int):
    """(seconds of each timed call, the last result); one untimed call first (kernel
    selection, allocator growth)."""
    fn()
    times, result = [], None
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return times, result


def _model_config(plan: Plan):
    from thead.config import LSRConfig

    return LSRConfig.reduced() if plan.model_size == "reduced" else LSRConfig()


def _loss_networks(plan: Plan):
    from thead.nn.backbones.vgg import VGG19Features, VGGFace
    from thead.train.losses import LossNetworks

    torch.manual_seed(0)
    if plan.tiny_loss_networks:
        widths = (4, 8, 8, 8, 8)
        return LossNetworks(VGG19Features(widths), VGGFace(widths, fc_width=16, num_classes=8))
    return LossNetworks(VGG19Features(), VGGFace())


def _frames(indices) -> tuple[torch.Tensor, torch.Tensor]:
    from thead.train.data import read_rgb

    folder = SAMPLE / CLIP
    rgb = torch.stack([read_rgb(folder / f"{i:05d}_rgb.png", 224) for i in indices])
    contour = torch.stack([read_rgb(folder / f"{i:05d}_contour.png", 224) for i in indices])
    return rgb, contour


# -- 1. rendering ----------------------------------------------------------------------------


def check_render(plan: Plan) -> list[Row]:
    from thead.model import LSR

    torch.manual_seed(0)
    model = LSR(_model_config(plan)).for_inference_(channels_last=plan.device.type == "cpu").to(plan.device)
    rgb, contour = _frames(range(4))
    rows = []
    with torch.inference_mode():
        state = model.prepare(model.encode(rgb[None].to(plan.device), contour[None].to(plan.device)))
        for dtype in plan.render_dtypes:
            for batch in plan.render_batches:
                contours = contour[torch.arange(batch) % 4].to(plan.device)
                auto = torch.autocast(plan.device.type, dtype=DTYPES[dtype]) if DTYPES[dtype] else contextlib.nullcontext()

                def render():
                    with auto:
                        return model.render(contours, state).image

                times, image = _timed(render, plan.device, plan.render_repeats)
                finite = bool(torch.isfinite(image).all())
                med = statistics.median(times)
                rows.append(Row("render", f"batch {batch}, {dtype}", f"{batch / med:.1f} frames/s ({med * 1e3:.1f} ms/batch)" + ("" if finite else ", NON-FINITE"), finite))
    return rows


# -- 2. and 3. training steps ------------------------------------------------------------------


def _trainer(plan: Plan, run: Path, dist):
    from thead.model import LSR
    from thead.train.checkpoint import TrainState
    from thead.train.config import meta_learning
    from thead.train.data import DatasetIndex
    from thead.train.trainer import Trainer

    config = meta_learning(batch_size=plan.train_batch, num_shots=plan.num_shots, num_workers=0, warmup_steps=0, amp=True)
    index, _ = DatasetIndex.load_or_build(SAMPLE, run / "index.npz")
    torch.manual_seed(0)
    model = LSR(_model_config(plan))
    return Trainer(config, model, _loss_networks(plan), index, run, dist=dist, state=TrainState(0, 0, 0, dist.world_size, config.to_dict()))


def _time_steps(trainer, plan: Plan) -> tuple[list[float], dict[str, float]]:
    it = iter(trainer.loader)
    times, values = [], {}
    for _ in range(plan.warmup_steps + plan.train_steps):
        batch = next(it).to(plan.device, channels_last=True)
        _sync(plan.device)
        t = time.perf_counter()
        values = trainer.step(batch)
        _sync(plan.device)
        times.append(time.perf_counter() - t)
    return times[plan.warmup_steps :], values


def check_train_step(plan: Plan) -> list[Row]:
    from thead.train.trainer import Distributed

    with tempfile.TemporaryDirectory() as tmp:
        trainer = _trainer(plan, Path(tmp), Distributed(device=plan.device))
        times, values = _time_steps(trainer, plan)
    med = statistics.median(times)
    finite = all(np.isfinite(v) for v in values.values())
    amp = "bf16 AMP" if trainer.amp else "fp32 (AMP is CUDA-only)"
    return [Row("train step (stage B)", f"batch {plan.train_batch}, K={plan.num_shots}, {amp}", f"{med:.3f} s/step, {plan.train_batch / med:.2f} images/s (median of {len(times)})" + ("" if finite else ", NON-FINITE loss"), finite)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_ddp_step(plan: Plan) -> list[Row]:
    import torch.distributed as dist_

    from thead.train.trainer import Distributed

    backend = "nccl" if plan.device.type == "cuda" else "gloo"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(_free_port())
    dist_.init_process_group(backend, rank=0, world_size=1)
    try:
        dist = Distributed(0, 0, 1, torch.device("cuda", 0) if plan.device.type == "cuda" else plan.device)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = _trainer(plan, Path(tmp), dist)
            wrapped = type(trainer.generator).__name__
            times, values = _time_steps(trainer, plan)
    finally:
        dist_.destroy_process_group()
    ok = wrapped == "DistributedDataParallel" and all(np.isfinite(v) for v in values.values())
    med = statistics.median(times)
    return [Row("DDP train step", f"{backend}, world size 1, batch {plan.train_batch}", f"{med:.3f} s/step (G side: {wrapped})", ok)]


# -- 4. thead finetune -----------------------------------------------------------------------


def _make_avatar(plan: Plan, home: Path, weights: Path) -> None:
    """An avatar of K = 4 sample frames (the crops are the frames; landmarks random)."""
    from thead.avatar import Avatar, AvatarInfo, AvatarStore
    from thead.faces import load_image
    from thead.model import LSR

    shots = np.stack([load_image(SAMPLE / CLIP / f"{i:05d}_rgb.png") for i in (0, 8, 16, 24)])
    model = LSR.from_pretrained(weights)
    rgb, contour = _frames((0, 8, 16, 24))
    with torch.no_grad():
        latents = model.encode(rgb[None], contour[None])
    rng = np.random.default_rng(0)
    info = AvatarInfo(
        name="check", weights_sha256=model.weights_sha256 or "", weights=str(weights), created="2024-01-01T00:00:00+00:00",
        source="gpu_check", num_shots=4, landmarks="random", crop_scale=1.0, photo_size=(224, 224), z_dim=model.config.z_dim,
    )
    avatar = Avatar(info, latents.z_style, latents.z_layout, shots, rng.uniform(40, 180, (4, 68, 2)).astype(np.float32), shots[0], np.eye(3))
    AvatarStore(home / "avatars").save(avatar)


def check_finetune(plan: Plan) -> list[Row]:
    from safetensors.torch import save_file

    from thead.model import LSR
    from thead.train.finetune import finetune_steps

    steps = plan.finetune_steps or finetune_steps(4)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        LSR(_model_config(plan)).save_pretrained(tmp / "weights")
        nets = _loss_networks(plan)
        save_file(nets.vgg19.state_dict(), str(tmp / "vgg19.safetensors"))
        save_file(nets.vgg_face.state_dict(), str(tmp / "vgg_face.safetensors"))
        _make_avatar(plan, tmp, tmp / "weights")
        cmd = [sys.executable, "-m", "thead", "finetune", "check", "--weights", str(tmp / "weights"), "--vgg19", str(tmp / "vgg19.safetensors"),
               "--vgg-face", str(tmp / "vgg_face.safetensors"), "--device", plan.device.type]  # fmt: skip
        if plan.finetune_steps is not None:
            cmd += ["--steps", str(steps)]
        env = {**os.environ, "THEAD_HOME": str(tmp), "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        t = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        written = (tmp / "avatars" / "check.finetuned.safetensors").is_file()
    ok = done.returncode == 0 and written
    result = f"{wall:.1f} s wall for {steps} steps (process start, loading and saving included)"
    if not ok:
        result += f"; exit {done.returncode}: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
    return [Row("thead finetune", f"K=4, {steps} steps, {plan.device.type}", result, ok)]


# -- the table -------------------------------------------------------------------------------


def run_checks(plan: Plan) -> list[Row]:
    rows: list[Row] = []
    for name, check in (("render", check_render), ("train step", check_train_step), ("DDP train step", check_ddp_step), ("thead finetune", check_finetune)):
        t = time.perf_counter()
        try:
            rows += check(plan)
        except Exception as e:  # one failing check must not hide the others' numbers
            traceback.print_exc()
            rows.append(Row(name, "-", f"FAILED: {type(e).__name__}: {e}".splitlines()[0], False))
        print(f"  {name}: {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    return rows


def format_table(rows: list[Row], plan: Plan) -> str:
    head = ("check", "setting", "result", "ok")
    body = [(r.check, r.setting, r.result, "yes" if r.ok else "NO") for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    device = torch.cuda.get_device_name(plan.device) if plan.device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    title = f"thead gpu_check on {device}, torch {torch.__version__}, {plan.model_size} model"
    return "\n".join([title, line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="the CPU smoke mode: reduced model, tiny VGGs, seconds")
    args = p.parse_args(argv)
    if not SAMPLE.is_dir():
        print(f"error: sample frames not found at {SAMPLE} (set THEAD_SHARED)", file=sys.stderr)
        return 1
    if args.smoke:
        plan = Plan.smoke()
    elif torch.cuda.is_available():
        plan = Plan.cuda()
    else:
        print("error: no CUDA device; use --smoke for the CPU smoke mode", file=sys.stderr)
        return 1
    started = time.perf_counter()
    rows = run_checks(plan)
    print(format_table(rows, plan))
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
