"""The release's learning-rate schedule (models/model_utils.py, ref §5.4), one function for
every optimizer: linear warm-up, constant, then a 1/t ("hyperbolic") decay to lr / intervals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Schedule:
    """Step boundaries of one run (global steps).

    ``start_step`` is s0: warm-up runs over [s0, s0 + warmup_steps). The release passes the LR
    multiplier (1) into that slot by mistake, so s0 = 1 in stages A and B and the first two
    steps' LRs are −2e-6 and 0 (paper≠code, ref §5.4); thead follows the release, so that every
    global step's LR is the authors'. The value is computed in float32 in the release's order
    of operations, so it equals the release's bit for bit (shared/parity/train); where the decay
    window is empty (Ds = De, stage A) the release divides by zero past Ds and its LR is 0.
    """

    base_lr: float
    warmup_steps: int
    decay_start: int  # Ds: the LR is constant up to and including this step
    decay_end: int  # De: the LR reaches base_lr / intervals here
    intervals: int = 100
    start_step: int = 0

    def __call__(self, step: int) -> float:
        f = np.float32
        s, s0, lr = f(step), f(self.start_step), f(self.base_lr)
        if self.warmup_steps and s < s0 + f(self.warmup_steps):  # (none: no 0/0 before s0)
            return float(lr * ((s + f(1e-8) - s0) / f(self.warmup_steps)))
        if s <= f(self.decay_start):
            return float(lr)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = f(self.intervals) * ((s - f(self.decay_start)) / (f(self.decay_end) - f(self.decay_start)))
            return float(lr / np.maximum(f(1), t))


RELEASE_START_STEP = 1  # the LR multiplier, passed positionally into ``starting_step``


def training_schedule(
    base_lr: float, *, total_examples: int, decay_examples: int, global_batch: int, warmup_steps: int, intervals: int = 100
) -> Schedule:
    """Stages A and B: Ds = (total − decay)/B, De = total/B in global steps, s0 = 1 (ref §5.4)."""
    return Schedule(
        base_lr=base_lr,
        warmup_steps=warmup_steps,
        decay_start=(total_examples - decay_examples) // global_batch,
        decay_end=total_examples // global_batch,
        intervals=intervals,
        start_step=RELEASE_START_STEP,
    )


def finetune_schedule(base_lr: float, steps: int, *, decay: bool = True, start_step: int = 0, intervals: int = 100) -> Schedule:
    """Stage C (ref §5.5): no warm-up; with decay, Ds = g0 + steps//2 and De = g0 + steps."""
    if not decay:
        return Schedule(base_lr, 0, start_step + steps, start_step + steps, intervals, start_step)
    return Schedule(base_lr, 0, start_step + steps // 2, start_step + steps, intervals, start_step)
