"""E^s (style_encoder) and E^l (layout_encoder): two independent ResNet encoders (ref §4.1).

Each maps one shot ``[rgb ‖ contour]`` (6 x 224 x 224 in [-1, 1]) to a latent; the K shots'
latents are averaged by the caller (``LSR.encode``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from thead.config import EncoderConfig
from thead.nn.layers import EqualConv2d, EqualLinear, avg_down


class EncoderResBlock(nn.Module):
    """Pre-activation ResBlock without norm (ref §3.5), preceded by 2x2 average pooling.

    ``out = conv1(relu(conv0(relu(x)))) + shortcut(x)``; shortcut = EqConv1 (no bias) only
    when C_in != C_out. TF: ``blocks/<2j>/{conv_block0,conv_block1,shortcut}/layer_with_weights-0``.
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        mid = min(in_ch, out_ch)
        self.conv0 = EqualConv2d(in_ch, mid, 3)
        self.conv1 = EqualConv2d(mid, out_ch, 3)
        self.shortcut = EqualConv2d(in_ch, out_ch, 1, bias=False) if in_ch != out_ch else None

    def forward(self, x: Tensor) -> Tensor:
        x = avg_down(x)
        h = self.conv1(F.relu(self.conv0(F.relu(x))))
        return h + (self.shortcut(x) if self.shortcut is not None else x)


class Encoder(nn.Module):
    """ResNet encoder: EqConv7 + ReLU, N x (avg-pool, ResBlock), ReLU, NHWC flatten, EqDense.

    Input [N, 6, H, W] in [-1, 1]; output [N, z_dim] (unbounded). Block j outputs
    min(nf·2^j, nf_max); at 224 px the last map is 3x3 (7 -> 3 by flooring pooling).
    """

    def __init__(self, in_channels: int, nf: int, nf_max: int, num_downsamples: int, z_dim: int, resolution: int):
        super().__init__()
        self.from_rgb = EqualConv2d(in_channels, nf, 7)
        widths = [nf] + [min(nf * 2**j, nf_max) for j in range(1, num_downsamples + 1)]
        self.blocks = nn.ModuleList(EncoderResBlock(a, b) for a, b in zip(widths[:-1], widths[1:]))
        size = resolution
        for _ in range(num_downsamples):
            size //= 2
        self.fc_z = EqualLinear(size * size * widths[-1], z_dim)

    @classmethod
    def from_config(cls, c: EncoderConfig, resolution: int) -> Encoder:
        return cls(c.in_channels, c.nf, c.nf_max, c.num_downsamples, c.z_dim, resolution)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.from_rgb(x))
        for block in self.blocks:
            h = block(h)
        h = F.relu(h)
        # TF flattens NHWC: index (h·W + w)·C + c (ref §8.5.3).
        return self.fc_z(h.permute(0, 2, 3, 1).flatten(1))
