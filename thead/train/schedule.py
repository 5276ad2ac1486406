"""The release's learning-rate schedule (models/model_utils.py, ref §5.4), one function for
every optimizer: linear warm-up, constant, then a 1/t ("hyperbolic") decay to lr / intervals."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """Step boundaries of one run (global steps).

    ``start_step`` is s0: warm-up runs over [s0, s0 + warmup_steps). The release passes the LR
    multiplier into that slot by mistake, so s0 = 1 there and the first step's LR is slightly
    negative; thead uses the intended s0 = 0 (paper≠code, ref §5.4).
    """

    base_lr: float
    warmup_steps: int
    decay_start: int  # Ds: the LR is constant up to and including this step
    decay_end: int  # De: the LR reaches base_lr / intervals here
    intervals: int = 100
    start_step: int = 0

    def __call__(self, step: int) -> float:
        s, s0 = step, self.start_step
        if s < s0 + self.warmup_steps:
            return self.base_lr * (s + 1e-8 - s0) / self.warmup_steps
        if s <= self.decay_start:
            return self.base_lr
        if self.decay_end <= self.decay_start:  # no decay window: training ends at Ds
            return self.base_lr / self.intervals
        return self.base_lr / max(1.0, self.intervals * (s - self.decay_start) / (self.decay_end - self.decay_start))


def training_schedule(
    base_lr: float, *, total_examples: int, decay_examples: int, global_batch: int, warmup_steps: int, intervals: int = 100
) -> Schedule:
    """Stages A and B: Ds = (total − decay)/B, De = total/B in global steps (ref §5.4)."""
    return Schedule(
        base_lr=base_lr,
        warmup_steps=warmup_steps,
        decay_start=(total_examples - decay_examples) // global_batch,
        decay_end=total_examples // global_batch,
        intervals=intervals,
    )


def finetune_schedule(base_lr: float, steps: int, *, decay: bool = True, start_step: int = 0, intervals: int = 100) -> Schedule:
    """Stage C (ref §5.5): no warm-up; with decay, Ds = g0 + steps//2 and De = g0 + steps."""
    if not decay:
        return Schedule(base_lr, 0, start_step + steps, start_step + steps, intervals, start_step)
    return Schedule(base_lr, 0, start_step + steps // 2, start_step + steps, intervals, start_step)
