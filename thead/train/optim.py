"""Adam exactly as the release's Keras optimizer applies it (TF ResourceApplyAdam), with
Keras' ``clipvalue`` (element-wise clipping of each gradient) first, ref §5.2-§5.3.

    g ← clip(g, −c, c)
    α ← lr · sqrt(1 − β2^t) / (1 − β1^t)
    m ← m + (g − m)(1 − β1);   v ← v + (g² − v)(1 − β2)
    θ ← θ − (m · α) / (sqrt(v) + ε)

ε is added to sqrt(v) *before* the bias correction of v, unlike ``torch.optim.Adam`` (whose ε
is added to sqrt(v̂)); with ε = 1e-7 the two differ where v is tiny, so thead keeps Keras'
form. Every scalar (lr, β, β^t, 1 − β, α, ε) is a float32 computed with float32 operations,
and the tensor operations run one at a time in TF's order, so the update equals TF's bit for
bit in float32 (shared/parity/train: every element of one step of both stages). The moments
and the iteration count are plain tensors keyed by parameter name, which is what a checkpoint
stores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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
        idx = [i for i, p in enumerate(self.params) if p.grad is not None]  # Keras skips None gradients
        if not idx:
            return
        params = [self.params[i] for i in idx]
        grads = [self.params[i].grad for i in idx]
        ms, vs = [self.m[i] for i in idx], [self.v[i] for i in idx]
        if c.grad_clip:
            torch._foreach_clamp_min_(grads, -c.grad_clip)
            torch._foreach_clamp_max_(grads, c.grad_clip)
        s = _scalars(lr, c.beta1, c.beta2, c.eps, self.iterations)
        d = torch._foreach_sub(grads, ms)  # m += (g − m)·(1 − β1)
        torch._foreach_mul_(d, s.one_minus_beta1)
        torch._foreach_add_(ms, d)
        d = torch._foreach_mul(grads, grads)  # v += (g² − v)·(1 − β2)
        torch._foreach_sub_(d, vs)
        torch._foreach_mul_(d, s.one_minus_beta2)
        torch._foreach_add_(vs, d)
        # θ −= (m·α) / (sqrt(v) + ε). torch's vectorised float32 sqrt on the CPU is not always
        # correctly rounded (1 ulp off on some inputs); float64's, rounded to float32, is.
        denom = [v.double().sqrt_().float() for v in vs]
        torch._foreach_add_(denom, s.eps)
        d = torch._foreach_mul(ms, s.alpha)
        torch._foreach_div_(d, denom)
        torch._foreach_sub_(params, d)

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


@dataclass(frozen=True)
class _Scalars:
    alpha: float
    one_minus_beta1: float
    one_minus_beta2: float
    eps: float


def _scalars(lr: float, beta1: float, beta2: float, eps: float, t: int) -> _Scalars:
    """ResourceApplyAdam's scalars in float32, as Python floats holding float32 values (a float32
    tensor operation with such a scalar uses exactly that value)."""
    f = np.float32
    one, b1, b2 = f(1), f(beta1), f(beta2)
    b1_power, b2_power = np.power(b1, f(t)), np.power(b2, f(t))  # tf.pow(β, iterations + 1)
    with np.errstate(divide="ignore", invalid="ignore"):  # β1 = 1 is not a valid Adam
        alpha = f(lr) * np.sqrt(one - b2_power) / (one - b1_power)
    return _Scalars(float(alpha), float(one - b1), float(one - b2), float(f(eps)))
