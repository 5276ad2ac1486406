"""The training loop for stages A (layout pre-training) and B (meta-learning), ref §5.2-§5.4.

What a stage trains, its forward pass and its losses are ``thead.train.stages``
(``LayoutPretraining``, ``MetaLearning``); this module runs them: the data stream, the
optimizers, checkpoints, Ctrl-C, logs and sample grids.

Runs unchanged on one process or many under ``torchrun``: this is the only module that reads
``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE``. It uses NCCL with CUDA and gloo otherwise, wraps the
stage's generator side (the encoders and generators one step uses) in DistributedDataParallel,
averages every other optimizer's gradients itself (D's are written out, not autograd's), and
only rank 0 writes (checkpoints, logs, sample grids). Batch size is per process.

One step (``thead.train.step``): the stage's forward pass and weighted terms under autocast;
one collective for any rank's non-finite loss, Ctrl-C and skipped files; the stage's backward
pass; then element-wise clipping ±1 and Keras Adam (β = (0, 0.999), ε = 1e-7) for each
optimizer in the stage's order, at the release's learning rate for this global step.

A non-finite loss stops the run with ``TrainingError`` before any update; the newest
checkpoint stays the last good one. Ctrl-C finishes the current step, writes a checkpoint and
re-raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as torch_dist
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader

from thead._atomic import atomic_file
from thead.config import LSRConfig
from thead.errors import CheckpointError, TrainingError
from thead.faces.images import from_tensor
from thead.model import LSR
from thead.progress import Progress, loss_info
from thead.runtime import resolve_device, tune_cpu_allocator
from thead.train import losses as L
from thead.train.checkpoint import (
    Checkpoint,
    TrainState,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from thead.train.config import TrainConfig
from thead.train.data import Batch, ClipDataset, DatasetIndex, ExampleSampler, collate
from thead.train.optim import KerasAdam
from thead.train.schedule import Schedule, training_schedule
from thead.train.stages import default_loss_networks, stage_for
from thead.train.step import autocast, loss_values, nonfinite, step_optimizers, zero_grads

LOG_NAME = "log.jsonl"
SAMPLES = "samples"
# CelebAMask-HQ label colours used by the release's summaries (ref §1.4).
PALETTE = np.array(
    [(0, 0, 0), (204, 0, 0), (76, 153, 0), (204, 204, 0), (51, 51, 255), (204, 0, 204), (0, 255, 255),
     (255, 204, 204), (102, 51, 0), (255, 0, 0), (102, 204, 0), (255, 255, 0), (0, 0, 153), (0, 0, 204),
     (255, 51, 153), (0, 204, 204), (0, 51, 0), (255, 153, 51), (0, 204, 0)],
    dtype=np.uint8,
)  # fmt: skip


# -- processes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (world 1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """A process group is in use: several processes, or one started by the caller (a
        one-process DDP run, as ``benchmarks/gpu_check.py`` makes on one GPU)."""
        return self.world_size > 1 or (torch_dist.is_available() and torch_dist.is_initialized())


def init_distributed(device: str | None = None) -> Distributed:
    """Read torchrun's environment; start the process group (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)  # the one device choice (a missing GPU is one line)
    cuda = dev.type == "cuda"
    if cuda and dev.index is None:  # each torchrun worker takes its own GPU
        dev = torch.device(f"cuda:{local_rank}")
    if cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if cuda else "gloo")
    return Distributed(rank, local_rank, world, dev)


def _all_reduce_sum(values: list[float], dist: Distributed) -> list[float]:
    if not dist.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=dist.device)
    torch_dist.all_reduce(t)
    return t.tolist()


# -- the trainer -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    run: Path
    step: int
    checkpoint: Path | None
    losses: dict[str, float] = field(default_factory=dict)
    skipped_files: int = 0


class Trainer:
    """The loop of one stage (``thead.train.stages``): data stream, optimizers and their steps,
    distributed averaging, checkpoints, Ctrl-C, logs and sample grids."""

    def __init__(
        self,
        config: TrainConfig,
        model: LSR,
        nets: L.LossNetworks,
        index: DatasetIndex,
        run: Path,
        *,
        dist: Distributed,
        state: TrainState,
        progress: Progress | None = None,
    ):
        self.config, self.model, self.run_dir, self.dist, self.state = config, model, Path(run), dist, state
        self.progress = progress
        self.global_batch = config.batch_size * dist.world_size
        self.schedule: Schedule = training_schedule(
            config.optimizer.lr,
            total_examples=config.total_examples,
            decay_examples=config.decay_examples,
            global_batch=self.global_batch,
            warmup_steps=config.warmup_steps,
            intervals=config.decay_intervals,
        )
        self.amp = config.amp and dist.device.type == "cuda"
        if dist.device.type == "cpu":
            tune_cpu_allocator(training=True)  # no page faults on the step's large activations
        # channels_last: oneDNN's convolutions (forward, both backward passes and R1/R2's double
        # backward) run markedly faster in NHWC; checkpoints are written contiguous as usual.
        model.to(dist.device, memory_format=torch.channels_last)
        self.stage = stage_for(config, model, nets.to(dist.device, memory_format=torch.channels_last))
        self.generator = self._wrap(self.stage.generator)  # what one step runs forward
        # Optimizer states are keyed by the parameters' names in the model (what a checkpoint holds).
        prefix = {id(p): n for n, p in model.named_parameters()}
        self.optimizers: dict[str, KerasAdam] = {
            name: KerasAdam([(prefix[id(p)], p) for p in params], config.optimizer) for name, params in self.stage.optimizers().items()
        }
        dataset = ClipDataset(index, num_shots=config.num_shots, window=config.window, segmaps=config.needs_segmaps, seed=config.seed, resolution=model.config.resolution)
        self.sampler = ExampleSampler(len(index), batch_size=config.batch_size, seed=config.seed, rank=dist.rank, world_size=dist.world_size, start_position=state.position)
        self.loader = DataLoader(
            dataset,
            batch_size=config.batch_size,
            sampler=self.sampler,
            num_workers=config.num_workers,
            collate_fn=collate,
            pin_memory=dist.device.type == "cuda",
            persistent_workers=False,
            worker_init_fn=_worker_init,
        )
        self.last_checkpoint: Path | None = latest_checkpoint(run)
        self._stop = False
        self._step_flags = (False, 0)
        self._kept: dict[str, list[Tensor | None]] = {}

    def _wrap(self, module: nn.Module) -> nn.Module:
        if not self.dist.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
        # Constant blur kernels are the only buffers: nothing to re-broadcast each step.
        params = inspect.signature(DDP).parameters
        sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
        return DDP(module, device_ids=ids, **sync)

    def load_optimizer_state(self, tensors: dict[str, Tensor]) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_tensors(tensors, name)

    # -- one step (thead.train.step) ------------------------------------------------------
    def step(self, batch: Batch) -> dict[str, float]:
        """One update of every optimizer from one forward pass; returns the weighted terms."""
        values = self.compute_gradients(batch)
        self.apply_gradients()
        return values

    def compute_gradients(self, batch: Batch) -> dict[str, float]:
        """The stage's forward pass, losses and every optimizer's raw (unclipped) gradients, in
        the parameters' ``.grad`` or kept apart (the layout optimizer's); returns the weighted
        terms."""
        zero_grads(self.optimizers.values())
        with autocast(self.amp):
            losses = self.stage.losses(self.generator, batch)
        values = loss_values(losses.terms)
        bad = nonfinite(values)
        # One collective per step: any rank's non-finite loss, Ctrl-C, skipped files.
        any_nonfinite, stop, skipped = _all_reduce_sum([float(bool(bad)), float(self._stop), float(len(batch.skipped))], self.dist)
        if any_nonfinite:
            where = f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was written yet"
            what = ", ".join(bad) if bad else "on another process"
            raise TrainingError(f"non-finite loss at step {self.state.step} ({what}); stopped before updating, {where}")
        self._step_flags = (bool(stop), int(skipped))
        self._kept = self.stage.backward(losses)
        # DDP averages the generator's gradients; every other optimizer's are averaged here.
        for name, opt in self.optimizers.items():
            if name == "generator" or not self.dist.enabled:
                continue
            if name in self._kept:
                self._kept[name] = self._average(self._kept[name])
            else:
                for p, g in zip(opt.params, self._average([p.grad for p in opt.params])):
                    p.grad = g
        return values

    def apply_gradients(self) -> None:
        """Clip and apply the gradients of ``compute_gradients`` at this global step's LR, one
        optimizer after the other in the stage's order (G's, D's, the layout optimizer's)."""
        lr = self.schedule(self.state.step)
        for name, opt in self.optimizers.items():
            for p, g in zip(opt.params, self._kept.get(name, ())):
                p.grad = g
            step_optimizers([opt], lr)
        self._kept = {}

    def _average(self, grads):
        out = []
        for g in grads:
            if g is not None:
                torch_dist.all_reduce(g)
                g = g / self.dist.world_size
            out.append(g)
        return out

    # -- the loop --------------------------------------------------------------------------
    def run(self, end_step: int) -> TrainResult:
        """Train until global step ``end_step``; checkpoint every N steps, at the end and on Ctrl-C."""
        cfg, state = self.config, self.state
        values: dict[str, float] = {}
        t_last, n_last = time.perf_counter(), state.step
        with self._interrupt_flag():
            it = iter(self.loader)
            while state.step < end_step:
                batch = next(it).to(self.dist.device, channels_last=True)
                values = self.step(batch)
                stop, skipped = self._step_flags
                state = self.state = _advance(state, self.global_batch, skipped)
                if batch.skipped and self.dist.is_main:
                    self._log({"step": state.step, "skipped": list(batch.skipped)})
                now = time.perf_counter()
                ips = (state.step - n_last) * self.global_batch / max(now - t_last, 1e-9)
                if self.dist.is_main and self.progress is not None:
                    self.progress.update(state.step, end_step, stage=f"train {cfg.stage}", info=f"{ips:.2f} img/s · {loss_info(values)}")
                if state.step % cfg.log_every == 0 and self.dist.is_main:
                    self._log({"step": state.step, "examples": state.examples, "lr": self.schedule(state.step - 1), "images_per_s": ips, "losses": values})
                    t_last, n_last = now, state.step
                if cfg.sample_every and state.step % cfg.sample_every == 0 and self.dist.is_main:
                    self.write_samples(batch)
                if stop:
                    self.save()
                    raise KeyboardInterrupt
                if state.step % cfg.checkpoint_every == 0 and state.step < end_step:
                    self.save()
            del it
        self.save()
        return TrainResult(self.run_dir, state.step, self.last_checkpoint, values, state.skipped_files)

    def save(self) -> Path | None:
        if self.dist.is_main:
            opt = {k: v for name, o in self.optimizers.items() for k, v in o.state_tensors(name).items()}
            self.last_checkpoint = save_checkpoint(self.run_dir, self.state, self.model.config, self.model.state_dict(), opt, keep=self.config.keep_checkpoints)
        if self.dist.enabled:
            torch_dist.barrier()
        return self.last_checkpoint

    @contextlib.contextmanager
    def _interrupt_flag(self):
        """First Ctrl-C (or SIGTERM, SIGHUP: a scheduler stopping the job): finish the step,
        checkpoint, stop. A second one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._stop:
                raise KeyboardInterrupt
            self._stop = True

        signals = [signal.SIGINT] + [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]
        previous = {s: signal.signal(s, handler) for s in signals}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _log(self, record: dict) -> None:
        with open(self.run_dir / LOG_NAME, "a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}, sort_keys=True) + "\n")

    @torch.no_grad()
    def write_samples(self, batch: Batch, max_rows: int = 4) -> Path:
        """PNG grid, one row per example: [contour | layout argmax | output | target]."""
        n = min(max_rows, len(batch))
        first = Batch(*(t[:n] if t is not None else None for t in (batch.shots_rgb, batch.shots_contour, batch.target_rgb, batch.target_contour, batch.target_segmap)))
        with autocast(self.amp):
            logits, out = self.stage.sample(first)
        rows = []
        for i in range(n):
            layout = PALETTE[logits[i].float().argmax(0).cpu().numpy()]
            panels = [from_tensor(batch.target_contour[i]), layout, from_tensor(out[i]), from_tensor(batch.target_rgb[i])]
            rows.append(np.concatenate(panels, axis=1))
        path = self.run_dir / SAMPLES / f"step-{self.state.step:09d}.png"
        path.parent.mkdir(exist_ok=True)
        with atomic_file(path) as tmp:
            Image.fromarray(np.concatenate(rows, axis=0)).save(tmp, format="PNG")
        return path


def _advance(state: TrainState, global_batch: int, skipped: int) -> TrainState:
    return TrainState(
        step=state.step + 1,
        position=state.position + global_batch,
        examples=state.examples + global_batch,
        world_size=state.world_size,
        train_config=state.train_config,
        skipped_files=state.skipped_files + skipped,
        init_from=state.init_from,
        start_step=state.start_step,
    )


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # PNG decoding only; leave the cores to the main process


# -- entry point -----------------------------------------------------------------------------


def train(
    config: TrainConfig,
    *,
    data: str | os.PathLike,
    out: str | os.PathLike,
    model_config: LSRConfig | None = None,
    init: str | os.PathLike | None = None,
    loss_networks: L.LossNetworks | None = None,
    steps: int | None = None,
    index_path: str | os.PathLike | None = None,
    device: str | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Run (or resume) one stage into the run folder ``out``.

    - ``out`` with checkpoints: resumes exactly from the newest (its configs win).
    - ``init`` (stage B): a stage-A run or checkpoint; E^l and G^l and the example counter are
      taken from it (E^s, G^s, D start fresh), as the release warm-starts (ref §5.3).
    - ``steps``: stop after this many steps of the stage (counted from its first step, so a
      resumed run stops where the uninterrupted one would); default: the full schedule.
    - ``loss_networks``: default the pretrained VGG19 / VGG-Face the weights need.
    - ``progress``: an update after each step on rank 0 (stage "train STAGE", img/s and losses).
    """
    dist = init_distributed(device)
    out = Path(out)
    resume, warm = latest_checkpoint(out), None
    if resume is not None:
        ckpt = load_checkpoint(resume)
        config, model_config = TrainConfig.from_dict(ckpt.state.train_config), ckpt.model_config
    elif init is not None:
        warm = load_checkpoint(init)
        if model_config is not None and model_config != warm.model_config:
            raise CheckpointError(f"{warm.path} was trained with another model configuration")
        model_config = warm.model_config
    model_config = model_config or LSRConfig()
    torch.manual_seed(config.seed)  # the same initial weights on every rank (DDP also broadcasts)
    model = LSR(model_config)  # with D in every stage, so each checkpoint is complete weights
    global_batch = config.batch_size * dist.world_size
    if resume is not None:
        model.load_state_dict(ckpt.weights)
        state = ckpt.state
        if state.position % global_batch:
            raise CheckpointError(f"{resume} stopped at example {state.position}, not a multiple of the global batch {global_batch}")
    else:
        state = TrainState(0, 0, 0, dist.world_size, config.to_dict())
        if warm is not None:
            state = _warm_start(model, warm, state, global_batch)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
    if loss_networks is None:
        loss_networks = default_loss_networks(config)
    index = _load_index(data, index_path, dist).usable(min_frames=config.window, need_segmaps=config.needs_segmaps)
    trainer = Trainer(config, model, loss_networks, index, out, dist=dist, state=state, progress=progress)
    if resume is not None:
        trainer.load_optimizer_state(ckpt.optimizer)
        restore_rng(ckpt.rng)
    end = config.total_examples // global_batch if steps is None else state.start_step + steps
    return trainer.run(end)


def _warm_start(model: LSR, ckpt: Checkpoint, state: TrainState, global_batch: int) -> TrainState:
    """E^l, G^l and the example counter from stage A; E^s, G^s, D stay fresh (ref §5.3)."""
    own = model.state_dict()
    own.update({k: v for k, v in ckpt.weights.items() if k.startswith(("layout_encoder.", "layout_generator."))})
    model.load_state_dict(own)
    step = ckpt.state.examples // global_batch
    return TrainState(step, 0, ckpt.state.examples, state.world_size, state.train_config, init_from=str(ckpt.path), start_step=step)


def _load_index(data, index_path, dist: Distributed) -> DatasetIndex:
    # Rank 0 walks the tree and saves the index; the others then load it (or walk themselves
    # when it could not be saved: the walk is deterministic).
    if dist.is_main:
        index, _ = DatasetIndex.load_or_build(data, index_path)
    if dist.enabled:
        torch_dist.barrier()
    if not dist.is_main:
        index, _ = DatasetIndex.load_or_build(data, index_path)
    return index
