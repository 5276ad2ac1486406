"""Adam exactly as the release's Keras optimizer applies it (TF ResourceApplyAdam), with
Keras' ``clipvalue`` (element-wise clipping of each gradient) first, ref §5.2-§5.3.

    g ← clip(g, −c, c)
    m ← m + (g − m)(1 − β1);   v ← v + (g² − v)(1 − β2)
    θ ← θ − lr · sqrt(1 − β2^t)/(1 − β1^t) · m / (sqrt(v) + ε)

ε is added to sqrt(v) *before* the bias correction of v, unlike ``torch.optim.Adam`` (whose ε
is added to sqrt(v̂)); with ε = 1e-7 the two differ where v is tiny, so thead keeps Keras'
form. The moments and the iteration count are plain tensors keyed by parameter name, which is
what a checkpoint stores.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from thead.train.config import OptimizerConfig


class KerasAdam:
    """Adam + element-wise gradient clipping over named parameters; ``step(lr)`` applies it."""

    def __init__(self, named_params: list[tuple[str, nn.Parameter]], config: OptimizerConfig):
        self.names = [n for n, _ in named_params]
        self.params = [p for _, p in named_params]
        self.config = config
        self.m = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.v = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.iterations = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: float) -> None:
        c = self.config
        self.iterations += 1
        t = self.iterations
        idx = [i for i, p in enumerate(self.params) if p.grad is not None]  # Keras skips None gradients
        if not idx:
            return
        params = [self.params[i] for i in idx]
        grads = [self.params[i].grad for i in idx]
        ms, vs = [self.m[i] for i in idx], [self.v[i] for i in idx]
        if c.grad_clip:
            torch._foreach_clamp_min_(grads, -c.grad_clip)
            torch._foreach_clamp_max_(grads, c.grad_clip)
        torch._foreach_lerp_(ms, grads, 1 - c.beta1)
        torch._foreach_lerp_(vs, torch._foreach_mul(grads, grads), 1 - c.beta2)
        lr_t = lr * math.sqrt(1 - c.beta2**t) / (1 - c.beta1**t)
        denom = torch._foreach_sqrt(vs)
        torch._foreach_add_(denom, c.eps)
        torch._foreach_addcdiv_(params, ms, denom, value=-lr_t)

    def state_tensors(self, prefix: str) -> dict[str, Tensor]:
        """Moments as ``{prefix}.{param}.m`` / ``.v`` plus ``{prefix}.iterations``."""
        out = {f"{prefix}.iterations": torch.tensor(self.iterations, dtype=torch.int64)}
        for n, m, v in zip(self.names, self.m, self.v):
            out[f"{prefix}.{n}.m"] = m.detach().cpu().contiguous()
            out[f"{prefix}.{n}.v"] = v.detach().cpu().contiguous()
        return out

    def load_state_tensors(self, state: dict[str, Tensor], prefix: str) -> None:
        self.iterations = int(state[f"{prefix}.iterations"])
        for n, m, v in zip(self.names, self.m, self.v):
            m.copy_(state[f"{prefix}.{n}.m"])
            v.copy_(state[f"{prefix}.{n}.v"])
