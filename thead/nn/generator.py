"""G^s (image_generator): the SPADE image generator (ref §4.3).

z^s enters only through the first EqDense, reshaped (NHWC order) to a 7x7 seed; the layout (19
softmax channels at 224 px) modulates every block through SPADE, area-pooled to each block's
size. Output is linear RGB (no tanh, ref §9.5); clip to [-1, 1] for display.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thead.config import ImageGeneratorConfig
from thead.nn.layers import SPADE, EqualConv2d, EqualLinear, avg_down, leaky_relu
from thead.nn.layers import upsample as up2x


class SPADEConvBlock(nn.Module):
    """``conv(act(SPADE(x, m)))`` (ref §3.7). TF: ``conv_block{0,1}`` / ``shortcut``."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, label_nc: int, hidden: int, *, act: bool = True, bias: bool = True):
        super().__init__()
        self.spade_norm = SPADE(in_ch, label_nc, hidden)
        self.conv = EqualConv2d(in_ch, out_ch, kernel_size, bias=bias)
        self.act = act

    beta_folded: int = 0  # set by fold_beta_(): C_in, the γ channels of the fused γ/β conv

    @torch.no_grad()
    def fold_beta_(self) -> None:
        """Inference only, for the shortcut (no activation, a bias-free 1x1 conv W; after the
        SPADE's fuse_ and every fold_scale_): ``W·(IN(x)·γ + β) = W·(IN(x)·γ) + W·β``, and W·β
        is the β convolution with W folded into its weights. So the fused γ/β convolution makes
        C_in + C_out channels instead of 2·C_in (an exact identity; saves a quarter of its
        multiply-adds when C_out = C_in / 2, as in every G^s shortcut), and W·β enters the 1x1
        conv as its residual (a post-op when packed)."""
        if self.beta_folded:  # already folded: folding again would apply W twice
            return
        gb, w = self.spade_norm.gamma_beta_conv, self.conv.weight
        if self.act or gb is None or self.conv.bias is not None or w.shape[-1] != 1 or self.conv.scale != 1.0:
            raise ValueError("fold_beta_ needs a fused SPADE and an activation-free, bias-free, folded 1x1 conv")
        c_in = w.shape[1]
        w2 = w[:, :, 0, 0].double()
        beta_w = torch.einsum("oc,chuv->ohuv", w2, gb.weight[c_in:].double()).to(gb.weight.dtype)
        beta_b = (w2 @ gb.bias[c_in:].double()).to(gb.bias.dtype)
        gb.weight = nn.Parameter(torch.cat([gb.weight[:c_in], beta_w]), requires_grad=False)
        gb.bias = nn.Parameter(torch.cat([gb.bias[:c_in], beta_b]), requires_grad=False)
        self.beta_folded = c_in

    def forward(self, x: Tensor, layout: Tensor, *, normalized: Tensor | None = None,
                stats: tuple[Tensor, Tensor] | None = None, upsampled: bool = False,
                add: Tensor | None = None) -> Tensor:
        """``add``: a residual added to the convolution's output (fused into it when packed).
        ``normalized``/``stats``: IN(x), or x's instance statistics for the fused kernels, when the
        caller shares them between SPADE layers; with ``upsampled`` (fused kernels only) the
        block's input is the bilinear x2 upsampling of ``x`` and ``stats`` are its statistics."""
        spade = self.spade_norm
        if spade.gamma_beta_conv is not None and (stats is not None or spade.norm.fuses(x)):
            # inference with the fused kernels: IN, modulation and activation in one pass
            stats = spade.norm.stats(x) if stats is None else stats
            g = spade.gamma_beta_conv(spade.conv0(layout, relu=True))
            if self.beta_folded:
                gamma, wbeta = g[:, : self.beta_folded], g[:, self.beta_folded :]
                h = spade.norm.modulate(x, stats, gamma, upsample=upsampled)
                return self.conv(h, add=wbeta if add is None else wbeta + add)
            gamma, beta = g.chunk(2, dim=1)
            return self.conv(spade.norm.modulate(x, stats, gamma, beta, act=self.act, upsample=upsampled), add=add)
        if self.beta_folded:
            xn = spade.norm(x) if normalized is None else normalized
            g = spade.gamma_beta_conv(spade.conv0(layout, relu=True))
            gamma, wbeta = g[:, : self.beta_folded], g[:, self.beta_folded :]
            return self.conv(xn * gamma, add=wbeta if add is None else wbeta + add)
        h = spade(x, layout, normalized=normalized)
        if self.act:
            # the fused inference path owns h: activate it in place (no new 224² buffer)
            h = F.leaky_relu_(h, 0.2) if self.spade_norm.gamma_beta_conv is not None else leaky_relu(h)
        return self.conv(h, add=add)


class SPADEResBlock(nn.Module):
    """``out = block1(block0(x)) + shortcut(x)``; the shortcut (SPADE + EqConv1, no act, no bias)
    exists only when C_in != C_out; C_mid = min(C_in, C_out) (ref §3.7)."""

    def __init__(self, in_ch: int, out_ch: int, label_nc: int, hidden: int):
        super().__init__()
        mid = min(in_ch, out_ch)
        self.conv_block0 = SPADEConvBlock(in_ch, mid, 3, label_nc, hidden)
        self.conv_block1 = SPADEConvBlock(mid, out_ch, 3, label_nc, hidden)
        self.shortcut = (
            SPADEConvBlock(in_ch, out_ch, 1, label_nc, hidden, act=False, bias=False) if in_ch != out_ch else None
        )

    def forward(self, x: Tensor, layout: Tensor, *, upsample: bool = False) -> Tensor:
        """``upsample``: the block's input is the bilinear x2 upsampling of ``x``; with the fused
        kernels and a shortcut (x is then used only through IN(x)) it is never written out."""
        fused = self.conv_block0.spade_norm.gamma_beta_conv is not None  # inference rewrites on
        if upsample:
            norm = self.conv_block0.spade_norm.norm
            if fused and self.shortcut is not None and norm.fuses(x):
                stats = norm.stats(x, upsample=True)
                skip = self.shortcut(x, layout, stats=stats, upsampled=True)
                return self.conv_block1(self.conv_block0(x, layout, stats=stats, upsampled=True), layout, add=skip)
            x = up2x(x)
        if self.shortcut is None:
            if fused:  # the residual added inside conv_block1's convolution
                return self.conv_block1(self.conv_block0(x, layout), layout, add=x)
            return self.conv_block1(self.conv_block0(x, layout), layout) + x
        # Inference: conv_block0's and the shortcut's SPADE normalise the same x; IN(x) (or, with
        # the fused kernels, its statistics) once.
        norm = self.conv_block0.spade_norm.norm
        stats = norm.stats(x) if fused and norm.fuses(x) else None
        xn = norm(x) if fused and stats is None else None
        skip = self.shortcut(x, layout, normalized=xn, stats=stats)
        if fused:
            return self.conv_block1(self.conv_block0(x, layout, normalized=xn, stats=stats), layout, add=skip)
        return self.conv_block1(self.conv_block0(x, layout), layout) + skip


class ImageGenerator(nn.Module):
    """EqDense(z^s) -> 7x7 seed -> SPADEResBlock, then 5 x (bilinear x2, SPADEResBlock) ->
    LReLU -> EqConv3 to RGB (gain 1).

    Widths nf(i) = min(nf·2^(4-i), nf_max) for i = -1..4; block k outputs nf(k-1).
    """

    def __init__(self, nf: int, nf_max: int, num_upsamples: int, z_dim: int, num_classes: int, spade_hidden: int, seed_size: int, out_channels: int):
        super().__init__()
        n = num_upsamples
        widths = [min(nf * 2 ** (n - 1 - i), nf_max) for i in range(-1, n)]
        self.seed_size, self.seed_channels = seed_size, widths[0]
        self.fc = EqualLinear(z_dim, seed_size * seed_size * widths[0])
        chans = [widths[0]] + widths
        self.blocks = nn.ModuleList(
            SPADEResBlock(a, b, num_classes, spade_hidden) for a, b in zip(chans[:-1], chans[1:])
        )
        self.to_rgb = EqualConv2d(widths[-1], out_channels, 3, gain=1.0)

    @classmethod
    def from_config(cls, c: ImageGeneratorConfig) -> ImageGenerator:
        return cls(c.nf, c.nf_max, c.num_upsamples, c.z_dim, c.num_classes, c.spade_hidden, c.seed_size, c.out_channels)

    def seed(self, z_style: Tensor) -> Tensor:
        """z^s [N, z_dim] -> the 7x7 seed [N, C, 7, 7]: per-avatar, reusable."""
        s = self.seed_size
        # TF reshapes the dense output NHWC: index (h·7 + w)·C + c (ref §8.5.3).
        return self.fc(z_style).view(-1, s, s, self.seed_channels).permute(0, 3, 1, 2)

    def forward(self, layout: Tensor, z_style: Tensor | None = None, *, seed: Tensor | None = None) -> Tensor:
        """layout [N, 19, H, W] (softmax probabilities) -> image [N, 3, H, W], linear.

        Give either ``z_style`` [N, z_dim] or ``seed`` from ``seed()`` (batch 1 broadcasts).
        """
        h = self.seed(z_style) if seed is None else seed
        if h.shape[0] != layout.shape[0]:
            h = h.expand(layout.shape[0], -1, -1, -1)
        # The layout pyramid: repeated 2x2 area pooling as TF's downscale2d (ref §3.7), once
        # per resolution instead of once per SPADE layer.
        pyramid = [layout]
        for _ in range(len(self.blocks) - 1):
            pyramid.append(avg_down(pyramid[-1]))
        for i, block in enumerate(self.blocks):
            h = block(h, pyramid[len(self.blocks) - 1 - i], upsample=i > 0)
        return self.to_rgb(leaky_relu(h))
