"""One training step, shared by meta-learning (``trainer``, stages A/B) and fine-tuning
(``finetune``, stage C), ref §5.

A step is, in this order:
1. ``zero_grads`` of every optimizer;
2. the forward pass and the losses under ``autocast`` (bf16 on CUDA when asked), the
   adversarial ones from ``thead.train.adversarial.adversarial_terms``;
3. ``loss_values``: every weighted term as ``"G/name"``, ``"D/name"``, ... (what is logged);
4. ``nonfinite``: the terms that are not finite; the caller stops before any gradient or
   update when there is one (``TrainingError``: its message says what was kept);
5. the backward pass (``AdversarialTerms.backward`` for G and D);
6. ``step_optimizers``: clip and update each optimizer at this step's learning rate, G's first,
   then D's (the release's order).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

import torch
from torch import Tensor

from thead.train.optim import KerasAdam


def autocast(amp: bool):
    """bf16 autocast on CUDA when ``amp``, else nothing."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()


def zero_grads(optimizers: Iterable[KerasAdam]) -> None:
    for opt in optimizers:
        opt.zero_grad()


def loss_values(terms: dict[str, dict[str, Tensor]]) -> dict[str, float]:
    """{"G": {...}, "D": {...}} -> {"G/name": value, ...}, sides in the given order."""
    return {f"{side}/{k}": float(v.detach()) for side, d in terms.items() for k, v in d.items()}


def nonfinite(values: dict[str, float]) -> list[str]:
    """The terms that are NaN or infinite, as ``name=value``."""
    return [f"{k}={v}" for k, v in values.items() if not math.isfinite(v)]


def step_optimizers(optimizers: Iterable[KerasAdam], lr: float) -> None:
    """Clip and apply each optimizer's gradients at ``lr``, in the order given."""
    for opt in optimizers:
        opt.step(lr)
