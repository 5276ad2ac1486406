"""G^l (layout_generator): the layout predictor, a 5-level U-Net (ref §4.2).

Input: the target contour drawing [N, 3, H, W] in [-1, 1] and z^l. Output: 22 channels:
``layout_logits`` (0..18, softmax over them = the spatial layout fed to G^s) and the auxiliary
RGB head (19..21, used only by layout pre-training). z^l enters every decoder block through two
``StyleModulation`` layers; their γ/β depend only on the avatar (``styles``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thead.config import LayoutGeneratorConfig
from thead.nn.layers import BlurDown, EqualConv2d, InstanceNorm, StyleModulation, leaky_relu, upsample


class ResBlockDown(nn.Module):
    """ResBlockDown (ref §3.5), G^l flavour (IN + LReLU, m = 1).

    ``main = blur(conv1(lrelu(IN(conv0(lrelu(IN(x)))))))``, ``skip = blur(conv_shortcut(x))``,
    ``out = main + skip``. TF: ``encoder_blocks/i/blocks/0/{conv0,conv1,conv_shortcut}``.
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.norm0, self.norm1 = InstanceNorm(), InstanceNorm()
        self.conv0 = EqualConv2d(in_ch, in_ch, 3)
        self.conv1 = EqualConv2d(in_ch, out_ch, 3)
        self.conv_shortcut = EqualConv2d(in_ch, out_ch, 1, bias=False)
        self.down = BlurDown()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv0(leaky_relu(self.norm0(x)))
        # blur is linear: blur(main) + blur(skip) = blur(main + skip), one pass instead of two;
        # the addition happens inside conv1 (a oneDNN post-op when packed)
        return self.down(self.conv1(leaky_relu(self.norm1(h)), add=self.conv_shortcut(x)))


class ResBlockUp(nn.Module):
    """ResBlockUp with StyleModulation (ref §3.5).

    ``main = conv1(lrelu(mod1(conv0(up(lrelu(mod0(x, z)))), z)))``, ``skip = conv_shortcut(up(x))``.
    TF: ``decoder_blocks/i/resblock_up_fn/{norm0,conv0,norm1,conv1,conv_shortcut}``.
    """

    def __init__(self, in_ch: int, out_ch: int, z_dim: int):
        super().__init__()
        self.norm0 = StyleModulation(in_ch, z_dim)
        self.conv0 = EqualConv2d(in_ch, out_ch, 3)
        self.norm1 = StyleModulation(out_ch, z_dim)
        self.conv1 = EqualConv2d(out_ch, out_ch, 3)
        self.conv_shortcut = EqualConv2d(in_ch, out_ch, 1, bias=False)
        self.fused = False  # inference rewrites on (fuse_)

    @torch.no_grad()
    def fuse_(self) -> None:
        """Inference only: the bias-free 1x1 shortcut commutes with the (linear, per-channel)
        bilinear upsampling, so it runs at the input's resolution, on 4x fewer pixels, and
        upsamples out_ch instead of in_ch channels (equal to rounding); activations in place."""
        self.fused = True

    def styles(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.norm0.styles(z), self.norm1.styles(z)

    def forward(self, x: Tensor, styles: tuple[Tensor, Tensor]) -> Tensor:
        if self.fused:
            h = self.conv0(upsample(F.leaky_relu_(self.norm0(x, styles[0]), 0.2)))
            return self.conv1(F.leaky_relu_(self.norm1(h, styles[1]), 0.2), add=upsample(self.conv_shortcut(x)))
        h = self.conv0(upsample(leaky_relu(self.norm0(x, styles[0]))))
        h = self.conv1(leaky_relu(self.norm1(h, styles[1])))
        return h + self.conv_shortcut(upsample(x))


class LayoutGenerator(nn.Module):
    """U-Net: ``num_levels`` ResBlockDown, then as many ResBlockUp with skips ``[up, skip]``.

    Encoder block i outputs min(nf·2^(i+1), nf_max); decoder block i outputs
    min(nf·2^(levels-1-i), nf_max) and (for i < levels-1) is concatenated with the output of
    encoder block levels-2-i. ``output_conv`` = EqConv3 (gain 1) straight on the last decoder
    output, no activation (ref §4.2).
    """

    def __init__(self, in_channels: int, nf: int, nf_max: int, num_levels: int, z_dim: int, num_classes: int, aux_channels: int):
        super().__init__()
        enc = [min(nf * 2 ** (i + 1), nf_max) for i in range(num_levels)]
        dec = [min(nf * 2 ** (num_levels - 1 - i), nf_max) for i in range(num_levels)]
        self.encoder_blocks = nn.ModuleList(ResBlockDown(a, b) for a, b in zip([in_channels] + enc[:-1], enc))
        dec_in = [enc[-1]] + [dec[i - 1] + enc[num_levels - 1 - i] for i in range(1, num_levels)]
        self.decoder_blocks = nn.ModuleList(ResBlockUp(a, b, z_dim) for a, b in zip(dec_in, dec))
        self.output_conv = EqualConv2d(dec[-1], num_classes + aux_channels, 3, gain=1.0)
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, c: LayoutGeneratorConfig) -> LayoutGenerator:
        return cls(c.in_channels, c.nf, c.nf_max, c.num_levels, c.z_dim, c.num_classes, c.aux_channels)

    def styles(self, z_layout: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Every decoder modulation's [γ, β] for z^l [N, z_dim]: per-avatar, reusable."""
        return [block.styles(z_layout) for block in self.decoder_blocks]

    def forward(self, contour: Tensor, z_layout: Tensor | None = None, *, styles: list | None = None) -> Tensor:
        """contour [N, 3, H, W] in [-1, 1] -> logits [N, 19 + 3, H, W].

        Give either ``z_layout`` [N, z_dim] or ``styles`` precomputed by ``styles()`` (their
        batch may be 1 and is broadcast over N).
        """
        if styles is None:
            styles = self.styles(z_layout)
        skips, h = [], contour
        for block in self.encoder_blocks:
            h = block(h)
            skips.append(h)
        skips.pop()  # the deepest output is the decoder's input, not a skip
        for block, style in zip(self.decoder_blocks, styles):
            h = block(h, style)
            if skips:
                h = torch.cat([h, skips.pop()], dim=1)
        return self.output_conv(h)
