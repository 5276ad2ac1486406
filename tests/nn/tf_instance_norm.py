"""Test-only: instance norm whose statistics follow TF 2.15's float32 summation order.

From shared/parity/README.md ("Instance-norm summation order"): fewer than 8 channels, one
sequential float32 sum over H·W in row-major order; 8 or more, 4 interleaved float32 partial
sums (element j into partial j mod 4) combined as (p0 + p2) + (p1 + p3); divide by H·W; the
variance is the same sum over (x - μ)²; out = x·r + (-μ·r), r = 1/sqrt(var + eps), all float32.
The shipped model uses accurate statistics; this exists to prove the structure exactly.
It is differentiable (TF's values forward, the instance norm's gradient backward), so the
training-step parity tests can separate "the statistics round differently" from a real bug.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from thead.nn.layers import InstanceNorm


def _tf_sum(x: np.ndarray, channels: int) -> np.ndarray:
    """x [M, L] float32 -> [M] float32 sums in TF's order (np.cumsum accumulates sequentially)."""
    if channels < 8:
        return np.cumsum(x, axis=1, dtype=np.float32)[:, -1]
    m, n = x.shape
    pad = (-n) % 4
    if pad:  # adding exact zeros leaves each partial sum unchanged
        x = np.concatenate([x, np.zeros((m, pad), np.float32)], axis=1)
    p = np.cumsum(x.reshape(m, -1, 4), axis=1, dtype=np.float32)[:, -1, :]
    return (p[:, 0] + p[:, 2]) + (p[:, 1] + p[:, 3])


def _tf_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """IN(x) with TF's float32 statistics (no affine part), as a contiguous NCHW tensor."""
    n, c, h, w = x.shape
    a = x.detach().cpu().numpy().astype(np.float32).reshape(n * c, h * w)
    count = np.float32(h * w)
    mean = _tf_sum(a, c) / count
    d = a - mean[:, None]
    var = _tf_sum(d * d, c) / count
    r = np.float32(1.0) / np.sqrt(var + np.float32(eps))
    return torch.from_numpy((a * r[:, None] + (-mean * r)[:, None]).reshape(n, c, h, w)).to(x.device)


class _TFOrderNormalize(torch.autograd.Function):
    """Forward: TF's values exactly. Backward: the instance norm's analytic gradient (from
    ``F.instance_norm``; TF's differs only in float rounding, not in which pixels tie)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.eps = eps
        return _tf_normalize(x, eps)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            (gx,) = torch.autograd.grad(torch.nn.functional.instance_norm(xx, eps=ctx.eps), xx, grad)
        return gx, None


class TFOrderInstanceNorm(InstanceNorm):
    """Drop-in for thead's ``InstanceNorm`` (a subclass: its eager paths call this forward):
    TF-order statistics, differentiable."""

    def forward(self, x: torch.Tensor, weight=None, bias=None) -> torch.Tensor:
        out = _TFOrderNormalize.apply(x, self.eps)
        if weight is not None:  # TF: IN(x)·(1+γ) + β, in that order
            out = out * weight[:, :, None, None] + bias[:, :, None, None]
        return out


def use_tf_order(module: nn.Module) -> nn.Module:
    """Swap every thead InstanceNorm inside ``module`` for the TF-order one (in place)."""
    for name, child in list(module.named_children()):
        if isinstance(child, InstanceNorm) and not isinstance(child, TFOrderInstanceNorm):
            setattr(module, name, TFOrderInstanceNorm(child.eps))
        else:
            use_tf_order(child)
    return module
