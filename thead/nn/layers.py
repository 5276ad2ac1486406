"""Building blocks shared by LSR's networks (ref §3).

- ``EqualConv2d`` / ``EqualLinear``: equalized learning rate (ref §3.1): N(0,1) weights scaled
  at run time by ``gain / sqrt(fan_in)``. The factor is a float32 constant, as in TF, so a
  converted TF kernel gives bit-identical effective weights.
- ``blur_down``: depthwise [1,2,1]⊗[1,2,1]/16, stride 2, TF 'SAME' padding (ref §3.4).
- ``avg_down``: 2x2/2 'VALID' average pooling (floors: 7 -> 3).
- ``upsample``: bilinear x2 with half-pixel centres (Keras UpSampling2D = align_corners=False).
- ``InstanceNorm``: parameter-free, biased variance, eps 1e-3 (tfa default, ref §3.2).
- ``StyleModulation``: AdaIN-style ``IN(x)·(1+γ(z)) + β(z)`` (ref §3.6).
- ``SPADE``: ``IN(x)·(1+γ(m)) + β(m)`` with γ, β from the area-pooled layout m (ref §3.7).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thead.nn import functional as ops
from thead.nn import onednn

SQRT2 = math.sqrt(2.0)
IN_EPS = 1e-3  # tfa InstanceNormalization default (ref §3.2); the release never overrides it
NARROW_CHANNELS = 8  # instance norm of fewer channels runs in NCHW memory (see InstanceNorm)
LRELU_SLOPE = 0.2


def _runtime_scale(gain: float, fan_in: int) -> float:
    # TF multiplies the float32 kernel by float32(gain / sqrt(fan_in)) (parity README).
    return float(np.float32(gain / np.sqrt(fan_in)))


class EqualConv2d(nn.Module):
    """Conv2d with equalized learning rate, stride 1, 'same' padding (k // 2 each side).

    ``y = conv(x, W · gain/sqrt(k·k·C_in)) + b``. TF name: ``Conv2DScaled`` (kernel HWIO).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, *, gain: float = SQRT2, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = _runtime_scale(gain, in_ch * kernel_size * kernel_size)
        self.padding = kernel_size // 2

    def forward(self, x: Tensor, *, relu: bool = False, add: Tensor | None = None) -> Tensor:
        """``conv(x)``, then ``+ add`` (a residual), then ReLU: one oneDNN call when packed."""
        if self.pack_dtype is not None and x.device.type == "cpu" and not torch.is_grad_enabled() \
                and onednn.compute_dtype(x) == self.pack_dtype:
            return onednn.conv_slices(x, self._packed_for(x), self.packed_bias, self.padding, self.pack_dtype,
                                      relu=relu, add=add)
        w = self.weight if self.scale == 1.0 else self.weight * self.scale
        if torch.is_grad_enabled():  # training: derivatives of every order as conv primitives
            y = ops.conv2d(x, w, self.bias, self.padding)
            y = y if add is None else y + add
            return F.relu(y) if relu else y
        y = F.conv2d(x, w, self.bias, padding=self.padding)
        y = y if add is None else y.add_(add)
        return F.relu_(y) if relu else y

    pack_dtype: torch.dtype | None = None  # set by pack_(): calls computing in it run packed
    packed_bias: Tensor | None = None

    @torch.no_grad()
    def fold_scale_(self) -> None:
        """Inference only: bake the run-time scale into the weight (same float32 product)."""
        self.weight.mul_(self.scale)
        self.scale = 1.0

    @torch.no_grad()
    def pack_(self, dtype: torch.dtype) -> None:
        """Inference on the CPU only (after ``fold_scale_``): run calls that compute in ``dtype``
        on oneDNN with the weight reordered once per input size (``thead.nn.onednn``)."""
        self.pack_dtype = dtype
        self.packed_bias = None if self.bias is None else self.bias.detach().to(dtype)
        self._packs: dict[tuple[int, ...], list[Tensor]] = {}

    def _packed_for(self, x: Tensor) -> list[Tensor]:
        # per input shape, as inductor packs: a 1x1 kernel packed for no particular input, or
        # for another batch size, runs ~15x slower at 14² (oneDNN picks another layout); the
        # 3x3 and 5x5 packs serve any batch size as fast (measured), so one per C, H, W keeps
        # a single copy of the large weights
        key = x.shape if self.weight.shape[-1] == 1 else x.shape[1:]
        packs = self._packs.get(key)
        if packs is None:
            n = onednn.input_pieces(self.pack_dtype, x.shape, self.weight.shape[-1])
            step = x.shape[1] // n
            piece = torch.Size([x.shape[0], step, *x.shape[2:]])
            packs = self._packs[key] = [
                onednn.pack(self.weight[:, i * step : (i + 1) * step], self.pack_dtype, self.padding, piece) for i in range(n)
            ]
        return packs

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, scale={self.scale:.4g}, bias={self.bias is not None}"


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate: ``y = x · (W · gain/sqrt(in))ᵀ + b``.

    TF name: ``DenseScaled`` (kernel [in, out]).
    """

    def __init__(self, in_features: int, out_features: int, *, gain: float = SQRT2):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = _runtime_scale(gain, in_features)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight if self.scale == 1.0 else self.weight * self.scale
        return F.linear(x, w, self.bias)

    @torch.no_grad()
    def fold_scale_(self) -> None:
        """Inference only: bake the run-time scale into the weight (same float32 product)."""
        self.weight.mul_(self.scale)
        self.scale = 1.0

    def extra_repr(self) -> str:
        o, i = self.weight.shape
        return f"{i}, {o}, scale={self.scale:.4g}"


def leaky_relu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, LRELU_SLOPE)


def avg_down(x: Tensor) -> Tensor:
    """2x2 average pooling, stride 2, 'VALID' (floors odd sizes: 7 -> 3)."""
    return F.avg_pool2d(x, 2)


def upsample(x: Tensor) -> Tensor:
    """Bilinear x2, half-pixel centres, no antialias (Keras UpSampling2D 'bilinear')."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class BlurDown(nn.Module):
    """Blur pooling: depthwise ([1,2,1]⊗[1,2,1])/16, stride 2, TF 'SAME' zero padding.

    TF 'SAME' pads asymmetrically: even H pads 0 before / 1 after (224 -> 112); H = 7 pads
    1 / 1 (7 -> 4) (ref §3.4).
    """

    def __init__(self) -> None:
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (k[:, None] * k[None, :] / 16.0)[None, None], persistent=False)

    @staticmethod
    def pads(h: int, w: int) -> tuple[int, int, int, int]:
        """TF 'SAME' zero padding for an h x w input, in F.pad order (left, right, top, bottom)."""
        ph, pw = _same_pad(h), _same_pad(w)
        return (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)

    def forward(self, x: Tensor) -> Tensor:
        pads = self.pads(*x.shape[-2:])
        if torch.is_grad_enabled():  # R1/R2 differentiate it twice: see thead.nn.functional
            return ops.blur_down(x, self.kernel, pads)
        c = x.shape[1]
        return F.conv2d(F.pad(x, pads), self.kernel.to(x.dtype).expand(c, 1, 3, 3), stride=2, groups=c)


def _same_pad(size: int, k: int = 3, s: int = 2) -> int:
    out = -(-size // s)
    return max((out - 1) * s + k - size, 0)


class InstanceNorm(nn.Module):
    """Parameter-free instance norm: per sample and channel over H, W; biased variance; eps 1e-3.

    ``forward(x, weight, bias)`` optionally fuses a per-sample, per-channel affine
    ``IN(x)·weight + bias`` (weight, bias [N or 1, C]) into the same pass. Computed as batch
    norm of each sample (the same statistics), whose CPU kernels are fast in channels-last
    memory without copies; the float32 statistics are exact to rounding.
    """

    def __init__(self, eps: float = IN_EPS):
        super().__init__()
        self.eps = eps
        # inference only (set by LSR.for_inference_): narrow channels-last inputs go through
        # NCHW memory; the training path keeps its numerics
        self.narrow_nchw = False

    # inference only (set by LSR.for_inference_(fused_kernels=True)): thead.kernels.InstanceNormKernels,
    # statistics in one pass and act(IN(x)·g + b) in another instead of five eager passes
    kernels = None

    def fuses(self, x: Tensor) -> bool:
        """Whether ``x`` takes the fused kernels (inference, CPU, channels-last, ≥ 8 channels)."""
        return self.kernels is not None and x.shape[1] >= NARROW_CHANNELS and not torch.is_grad_enabled() \
            and self.kernels.supports(x)

    def stats(self, x: Tensor, *, upsample: bool = False) -> tuple[Tensor, Tensor]:
        """Fused path only: x's per-sample, per-channel mean and 1/sqrt(var + eps) (with
        ``upsample``: those of x's bilinear x2 upsampling, which is never written out)."""
        return self.kernels.stats(x, self.eps, upsample=upsample)

    def modulate(self, x: Tensor, stats: tuple[Tensor, Tensor], gamma: Tensor | None = None,
                 beta: Tensor | None = None, *, act: bool = False, upsample: bool = False) -> Tensor:
        """Fused path only: ``IN(x)·gamma + beta`` (each optional; per pixel [N, C, H, W] or per
        channel [N, C]), then leaky ReLU (0.2) when ``act``, in one pass; with ``upsample``, of
        x's bilinear x2 upsampling (``stats`` from ``stats(x, upsample=True)``)."""
        return self.kernels.modulate(x, stats, gamma, beta, LRELU_SLOPE if act else None, upsample=upsample)

    def lrelu(self, x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        """``leaky_relu(IN(x)·weight + bias, 0.2)``: fused when ``fuses(x)``, else eagerly."""
        if self.fuses(x):
            return self.modulate(x, self.stats(x), weight, bias, act=True)
        y = self(x, weight, bias)  # a new tensor: without gradients, activate it in place
        return leaky_relu(y) if torch.is_grad_enabled() else F.leaky_relu_(y, LRELU_SLOPE)

    def forward(self, x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        def affine(t: Tensor | None, i: int) -> Tensor | None:
            return None if t is None else t[i if t.shape[0] > 1 else 0].to(x.dtype)

        def one(xi: Tensor, i: int) -> Tensor:
            return F.batch_norm(xi, None, None, affine(weight, i), affine(bias, i), True, 0.0, self.eps)

        if self.narrow_nchw and x.shape[1] < NARROW_CHANNELS and x.is_contiguous(memory_format=torch.channels_last):
            # A few channels in channels-last memory are the batch-norm kernel's worst case
            # (measured under load, 3 x 224²: 0.2 ms contiguous, 60 ms channels-last).
            out = self(x.contiguous(), weight, bias)
            return out.contiguous(memory_format=torch.channels_last)
        if x.shape[0] == 1:
            return one(x, 0)
        # split, not x[i:i+1]: a slice's backward zero-fills a whole-batch tensor per sample.
        return torch.cat([one(xi, i) for i, xi in enumerate(x.split(1))])


class StyleModulation(nn.Module):
    """AdaIN-style modulation (ref §3.6): ``IN(x)·(1+γ) + β`` with ``[γ, β] = EqDense(z)``.

    TF: ``norm{0,1}/dense`` (kernel [z_dim, 2C]; the first C outputs are γ, the next C are β).
    ``styles(z)`` is the per-avatar part; ``forward`` takes its result so that it can be
    computed once and reused for every frame; normalization and modulation are one pass.
    """

    def __init__(self, channels: int, z_dim: int):
        super().__init__()
        self.dense = EqualLinear(z_dim, 2 * channels)
        self.norm = InstanceNorm()

    def styles(self, z: Tensor) -> Tensor:
        """z [N, z_dim] -> [N, 2C] (γ then β)."""
        return self.dense(z)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        gamma, beta = style.chunk(2, dim=1)
        return self.norm(x, 1 + gamma, beta)

    def lrelu(self, x: Tensor, style: Tensor) -> Tensor:
        """``leaky_relu(forward(x, style), 0.2)`` (one fused pass pair when the norm's kernels take x)."""
        gamma, beta = style.chunk(2, dim=1)
        return self.norm.lrelu(x, 1 + gamma, beta)


class SPADE(nn.Module):
    """Spatially-adaptive normalization (ref §3.7): ``IN(x)·(1+γ(m)) + β(m)``.

    ``m`` is the 19-channel layout already area-pooled to x's size. h = ReLU(EqConv3(m)),
    γ = EqConv3(h), β = EqConv3(h), all gain √2 with bias. TF: ``spade_norm/{conv0,
    gamma_conv, beta_conv}``.

    ``fuse_()`` (inference only) makes γ and β one convolution ``gamma_beta_conv`` (h -> 2C,
    twice as wide, so oneDNN runs it nearer its peak) with the "1 +" in γ's bias.
    """

    def __init__(self, channels: int, label_nc: int, hidden: int):
        super().__init__()
        self.conv0 = EqualConv2d(label_nc, hidden, 3)
        self.gamma_conv = EqualConv2d(hidden, channels, 3)
        self.beta_conv = EqualConv2d(hidden, channels, 3)
        self.gamma_beta_conv: EqualConv2d | None = None  # set by fuse_()
        self.norm = InstanceNorm()
        self.gamma_offset = 1.0  # the "1 +" of (1 + γ); 0 once folded into gamma_conv's bias

    def forward(self, x: Tensor, layout: Tensor, *, normalized: Tensor | None = None) -> Tensor:
        """``normalized`` = ``self.norm(x)`` when the caller has it already (shared IN)."""
        xn = self.norm(x) if normalized is None else normalized
        if self.gamma_beta_conv is not None:  # fused inference path
            h = self.conv0(layout, relu=True)
            gamma, beta = self.gamma_beta_conv(h).chunk(2, dim=1)
            return torch.addcmul(beta, xn, gamma)
        h = F.relu(self.conv0(layout))
        gamma = self.gamma_conv(h)
        if self.gamma_offset:
            gamma = gamma + self.gamma_offset
        return torch.addcmul(self.beta_conv(h), xn, gamma)

    @torch.no_grad()
    def fold_gamma_offset_(self) -> None:
        """Inference only: fold the "1 +" into gamma_conv's bias (one pass fewer per layer)."""
        self.gamma_conv.bias.add_(self.gamma_offset)
        self.gamma_offset = 0.0

    @torch.no_grad()
    def fuse_(self) -> None:
        """Inference only: fold scales and the "1 +", then concatenate γ's and β's convolutions
        (the same float32 weights: outputs equal to rounding)."""
        for m in (self.conv0, self.gamma_conv, self.beta_conv):
            m.fold_scale_()
        if self.gamma_offset:
            self.fold_gamma_offset_()
        g, b = self.gamma_conv, self.beta_conv
        fused = EqualConv2d(g.weight.shape[1], 2 * g.weight.shape[0], g.weight.shape[2])
        fused.weight = nn.Parameter(torch.cat([g.weight, b.weight]), requires_grad=False)
        fused.bias = nn.Parameter(torch.cat([g.bias, b.bias]), requires_grad=False)
        fused.scale = 1.0
        self.gamma_beta_conv = fused.to(g.weight.device)
        del self.gamma_conv, self.beta_conv
