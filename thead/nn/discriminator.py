"""D (discriminator): conditional StyleGAN2-like ResNet discriminator (ref §4.4).

Input ``[image ‖ contour]`` (6 x 224 x 224). No norm, LReLU, blur-pool residual blocks scaled by
1/√2, no minibatch-stddev. ``forward`` returns the feature-map list of the release
(``get_fmaps=True``): from_rgb, the six blocks, conv_4x4, the dense layer (as [N, C, 1, 1]) and
the logit [N, 1, 1, 1] last.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from thead.config import DiscriminatorConfig
from thead.nn.layers import BlurDown, EqualConv2d, EqualLinear, leaky_relu


class DiscriminatorBlock(nn.Module):
    """ResBlockDown, D flavour (ref §3.5): ``(blur(conv1(lrelu(conv0(lrelu(x))))) +
    blur(conv_shortcut(x))) / √2``. TF: ``blocks/j/{conv0,conv1,conv_shortcut}``."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_ch, in_ch, 3)
        self.conv1 = EqualConv2d(in_ch, out_ch, 3)
        self.conv_shortcut = EqualConv2d(in_ch, out_ch, 1, bias=False)
        self.down = BlurDown()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(leaky_relu(self.conv0(leaky_relu(x))))
        return self.down(h + self.conv_shortcut(x)) * (1 / math.sqrt(2))


class Discriminator(nn.Module):
    """EqConv1 + LReLU, N blocks, LReLU, EqConv3 + LReLU, NHWC flatten, EqDense + LReLU,
    EqConv1 to one logit (gain √2). Block j outputs min(nf·2^j, nf_max)."""

    def __init__(self, in_channels: int, nf: int, nf_max: int, num_downsamples: int, resolution: int):
        super().__init__()
        self.from_rgb = EqualConv2d(in_channels, nf, 1)
        widths = [nf] + [min(nf * 2**j, nf_max) for j in range(1, num_downsamples + 1)]
        self.blocks = nn.ModuleList(DiscriminatorBlock(a, b) for a, b in zip(widths[:-1], widths[1:]))
        size = resolution
        for _ in range(num_downsamples):
            size = -(-size // 2)  # TF 'SAME' stride 2: ceil
        c = widths[-1]
        self.conv_4x4 = EqualConv2d(c, c, 3)
        self.dense = EqualLinear(size * size * c, c)
        self.logits = EqualConv2d(c, 1, 1)

    @classmethod
    def from_config(cls, c: DiscriminatorConfig, resolution: int) -> Discriminator:
        return cls(c.in_channels, c.nf, c.nf_max, c.num_downsamples, resolution)

    def forward(self, image: Tensor, contour: Tensor) -> list[Tensor]:
        """image, contour [N, 3, H, W] in [-1, 1] -> 10 feature maps; ``[-1]`` is the logit."""
        h = leaky_relu(self.from_rgb(torch.cat([image, contour], dim=1)))
        fmaps = [h]
        for block in self.blocks:
            h = block(h)
            fmaps.append(h)
        h = leaky_relu(self.conv_4x4(leaky_relu(h)))
        fmaps.append(h)
        h = leaky_relu(self.dense(h.permute(0, 2, 3, 1).flatten(1)))[:, :, None, None]
        fmaps.append(h)
        fmaps.append(self.logits(h))
        return fmaps
