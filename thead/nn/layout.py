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
from thead.nn import onednn
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
        h = self.conv0(self.norm0.lrelu(x))
        a = self.norm1.lrelu(h)
        if self.blur_folded is not None and not torch.is_grad_enabled() and a.device.type == "cpu" \
                and onednn.compute_dtype(a) == self.blur_folded and _folds_blur(a.shape):
            # the 1x1 shortcut commutes with the (per-channel, zero-padded) blur: on 1/4 of the pixels
            return self._conv1_down(a, add=self.conv_shortcut(self.down(x)))
        # blur is linear: blur(main) + blur(skip) = blur(main + skip), one pass instead of two;
        # the addition happens inside conv1 (a oneDNN post-op when packed)
        return self.down(self.conv1(a, add=self.conv_shortcut(x)))

    blur_folded: torch.dtype | None = None  # set by fold_blur_(): the dtype of its packs

    @torch.no_grad()
    def fold_blur_(self, dtype: torch.dtype) -> None:
        """Inference on the CPU only (after fold_scale_; packs for oneDNN in ``dtype``): blur
        (3x3, stride 2) after conv1 (3x3) is one 5x5 convolution evaluated only where the blur
        samples, with stride 2: 25/4 instead of 9 multiply-adds per input pixel and channel
        pair, and no full-size conv1 output. Exact but for the blur's zero padding after the
        last row and column (TF 'SAME' on even sizes), which ``_conv1_down`` recomputes."""
        self.blur_folded = dtype
        self._w5_packs: dict[tuple[int, ...], Tensor] = {}  # built at first use (sizes from 28²)

    def _conv1_down(self, a: Tensor, add: Tensor) -> Tensor:
        dtype = self.blur_folded
        h, w = a.shape[-2:]
        padded = F.pad(a, (1, 2, 1, 2))  # out[i] = Σ_t W5[t]·a[2i + t - 1], i = 0 .. h/2 - 1
        packed = self._w5_packs.get(padded.shape[1:])
        if packed is None:
            w3, k = self.conv1.weight.double(), self.down.kernel[0, 0].double()
            w5 = torch.zeros(w3.shape[0], w3.shape[1], 5, 5, dtype=torch.float64)
            for u in range(3):
                for v in range(3):
                    w5[:, :, u : u + 3, v : v + 3] += k[u, v] * w3
            packed = self._w5_packs[padded.shape[1:]] = onednn.pack(w5, dtype, 0, padded.shape, stride=2)
        bias = self.conv1.packed_bias if self.conv1.pack_dtype == dtype else self.conv1.bias.detach().to(dtype)
        out = onednn.conv(padded, packed, bias, 0, dtype, add=add, stride=2)
        # the last output row and column: the blur reads a zero row/column after conv1's output,
        # where the 5x5 form sees conv1 evaluated outside the image; recompute them from strips
        kernel = self.down.kernel.to(out.dtype).expand(out.shape[1], 1, 3, 3)
        rows = self.conv1(a[:, :, h - 3 :])[:, :, 1:]  # conv1's last two rows
        out[:, :, -1:] = F.conv2d(F.pad(rows, (0, 1, 0, 1)), kernel, stride=2, groups=out.shape[1]) + add[:, :, -1:]
        cols = self.conv1(a[:, :, :, w - 3 :])[:, :, :, 1:]  # its last two columns
        out[:, :, :, -1:] = F.conv2d(F.pad(cols, (0, 1, 0, 1)), kernel, stride=2, groups=out.shape[1]) + add[:, :, :, -1:]
        return out


def _folds_blur(shape: torch.Size) -> bool:
    # even sizes only (TF pads the blur 1/1 on odd ones); from 28² up: at 14² the border
    # strips recomputed by _conv1_down cost more than the 5x5 form saves (measured)
    return shape[-1] % 2 == 0 and shape[-2] % 2 == 0 and min(shape[-2:]) >= 28


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

    upsample_folded: torch.dtype | None = None  # set by fold_upsample_(): the dtype of its packs

    @torch.no_grad()
    def fold_upsample_(self, dtype: torch.dtype) -> None:
        """Inference on the CPU only (after fold_scale_; packs for oneDNN in ``dtype``): conv0
        of the bilinear x2 upsampling is, at each of the 4 output phases, a 3x3 convolution of
        the low-resolution input, so one convolution with 4·C_out channels at the input's
        resolution, interleaved, computes it without the 4x larger upsampled tensor (the same
        multiply-adds, in a wider convolution). Exact but for the two outermost output rows
        and columns (the upsampling clamps at the edges, conv0 pads with zeros), which
        ``_conv0_up`` recomputes."""
        self.upsample_folded = dtype
        self._up_packs: dict[tuple[int, ...], Tensor] = {}  # built at first use (from 112²)

    def _conv0_up(self, a: Tensor) -> Tensor:
        dtype = self.upsample_folded
        n, _, h, w = a.shape
        o = self.conv0.weight.shape[0]
        packed = self._up_packs.get(a.shape[1:])
        if packed is None:
            # 1-D: up[2i] = a[i-1]/4 + 3a[i]/4, up[2i+1] = 3a[i]/4 + a[i+1]/4 (edges clamped);
            # the conv tap d ∈ {-1, 0, 1} of output phase s reads up[2i + s + d]: rows of M[s]
            # are the input taps a[i-1], a[i], a[i+1], its columns the conv taps
            m = torch.tensor([[[0.75, 0.25, 0.0], [0.25, 0.75, 0.75], [0.0, 0.0, 0.25]],
                              [[0.25, 0.0, 0.0], [0.75, 0.75, 0.25], [0.0, 0.25, 0.75]]], dtype=torch.float64)
            w3 = self.conv0.weight.double()
            phases = torch.einsum("yup,xvq,ocpq->yxocuv", m, m, w3)  # [2, 2, C_out, C_in, 3, 3]
            packed = self._up_packs[a.shape[1:]] = onednn.pack(phases.reshape(4 * o, *w3.shape[1:]), dtype, 1, a.shape)
            self._b_up = self.conv0.bias.detach().repeat(4).to(dtype)
        # zero padding instead of the upsampling's edge clamp: wrong only in the two outermost
        # output rows and columns, recomputed below
        y = onednn.conv(a, packed, self._b_up, 1, dtype)  # [N, (2, 2, C_out), H, W]
        y = y.permute(0, 2, 3, 1).reshape(n, h, w, 2, 2, o).permute(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, o)
        out = y.permute(0, 3, 1, 2)  # channels-last [N, C_out, 2H, 2W]
        # the two outermost rows and columns the direct way, from two-row/column strips of a
        # (each strip's upsampling is exact where these outputs read it)
        out[:, :, :2] = self.conv0(upsample(a[:, :, :2]))[:, :, :2]
        out[:, :, -2:] = self.conv0(upsample(a[:, :, -2:]))[:, :, -2:]
        out[:, :, :, :2] = self.conv0(upsample(a[:, :, :, :2]))[:, :, :, :2]
        out[:, :, :, -2:] = self.conv0(upsample(a[:, :, :, -2:]))[:, :, :, -2:]
        return out

    def styles(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.norm0.styles(z), self.norm1.styles(z)

    def forward(self, x: Tensor, styles: tuple[Tensor, Tensor]) -> Tensor:
        if self.fused:
            a = self.norm0.lrelu(x, styles[0])
            if self.upsample_folded is not None and a.device.type == "cpu" and onednn.compute_dtype(a) == self.upsample_folded \
                    and min(a.shape[-2:]) >= 112:  # smaller: the border strips cost more (measured)
                h = self._conv0_up(a)
            else:
                h = self.conv0(upsample(a))
            return self.conv1(self.norm1.lrelu(h, styles[1]), add=upsample(self.conv_shortcut(x)))
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
