"""The adversarial part of a stage-B/C step (ref §5.1), with D's gradients written out.

D scores [I; Î] once. Its losses are D_real + D_fake (logistic) + R1 + R2 (γ/2·‖∇_x softplus(∓l)‖²
on the images); G's is the non-saturating mean softplus(−l(Î)). autograd would run D backwards
five times for these: ∂l/∂x for R1/R2 (graph kept), G's GAN loss back to Î, and for D's update
once through the forward graph (first-order terms) and once through the gradient graph
(R1/R2's second-order term). But D gives one logit l_n per example, so

- every image gradient is a per-example multiple of u = ∂l/∂x: R1's −σ(−l)·u, R2's σ(l)·u,
  G's −σ(−l)/N·u at Î;
- every first-order term of D's loss is Σ_n c_n ∂l_n/∂W, and ∂l/∂W at a convolution is the
  weight gradient Bw(x, g) of its input x and the layer gradient g = ∂l/∂y that the ∂l/∂x pass
  computes anyway; R1/R2's second-order term at the same layer is Bw(gg, g), with gg the
  cotangent of ∂l/∂x there. Bw is bilinear, so the two are one weight gradient,
  Bw(gg + c⊙x, g), and no input-gradient pass through the forward graph is needed.

``discriminator_step`` therefore costs, at batch 2B: the forward pass, the ∂l/∂x pass (input
gradients), one cotangent pass (forward convolutions) and one weight gradient per layer —
4 D-passes instead of autograd's 6 (and G's GAN gradient is free). Values and gradients equal
autograd's on the same losses (``tests/train/test_adversarial.py`` checks them in float64).
Symbols: l logits, u ∂l/∂x, s the σ factors, c the per-example first-order weights.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from thead.nn import functional as ops
from thead.nn.discriminator import Discriminator
from thead.nn.layers import BlurDown, EqualConv2d
from thead.train import losses as L
from thead.train.config import LossWeights

SLOPE = 0.2
INV_SQRT2 = 1 / math.sqrt(2)


def _lrelu_grad(g: Tensor, pre: Tensor) -> Tensor:
    """g ⊙ LReLU'(pre): also the cotangent map of that same (linear in g) operation."""
    return torch.ops.aten.leaky_relu_backward(g, pre, SLOPE, False)


@dataclass
class _Conv:
    """One EqualConv2d as D ran it: input x, effective weight w = W·scale, and (after the ∂l/∂x
    pass) the layer gradient g = ∂l/∂y."""

    module: EqualConv2d
    x: Tensor
    w: Tensor
    g: Tensor | None = None

    def forward(self) -> Tensor:
        return F.conv2d(self.x, self.w, None if self.module.bias is None else self.module.bias.to(self.w.dtype), padding=self.module.padding)

    def data(self, g: Tensor) -> Tensor:
        self.g = g
        return ops.conv_data(g, self.w, self.x, self.module.padding)


@dataclass
class _Block:
    h: Tensor  # block input (pre-activation)
    conv0: _Conv
    ya: Tensor  # conv0's output (pre-activation of conv1's input)
    conv1: _Conv
    shortcut: _Conv
    size: tuple[int, int]


@dataclass
class _Tape:
    """What the written-out backward passes need from D's forward pass."""

    kernel: Tensor
    from_rgb: _Conv
    y0: Tensor
    blocks: list[_Block] = field(default_factory=list)
    h_last: Tensor | None = None
    conv_4x4: _Conv | None = None
    yc: Tensor | None = None
    flat: Tensor | None = None
    wd: Tensor | None = None
    dense_scale: float = 1.0
    yd: Tensor | None = None
    yd_grad: Tensor | None = None
    logits: _Conv | None = None


def _conv(module: EqualConv2d, x: Tensor, dtype: torch.dtype) -> tuple[_Conv, Tensor]:
    c = _Conv(module, x, (module.weight * module.scale).to(dtype))
    return c, c.forward()


@torch.no_grad()
def _forward(d: Discriminator, x: Tensor, dtype: torch.dtype) -> tuple[Tensor, _Tape]:
    """D's forward pass (as ``Discriminator.forward``), keeping inputs and pre-activations."""
    rgb, y0 = _conv(d.from_rgb, x, dtype)
    tape = _Tape(d.blocks[0].down.kernel, rgb, y0)
    h = F.leaky_relu(y0, SLOPE)
    for block in d.blocks:
        c0, ya = _conv(block.conv0, F.leaky_relu(h, SLOPE), dtype)
        c1, yb = _conv(block.conv1, F.leaky_relu(ya, SLOPE), dtype)
        sc, s = _conv(block.conv_shortcut, h, dtype)
        t = yb.add_(s)
        tape.blocks.append(_Block(h, c0, ya, c1, sc, tuple(t.shape[-2:])))
        h = ops.blur(t, tape.kernel, BlurDown.pads(*t.shape[-2:])).mul_(INV_SQRT2)
    tape.h_last = h
    tape.conv_4x4, tape.yc = _conv(d.conv_4x4, F.leaky_relu(h, SLOPE), dtype)
    tape.flat = F.leaky_relu(tape.yc, SLOPE).permute(0, 2, 3, 1).flatten(1)  # TF's NHWC flatten
    tape.wd, tape.dense_scale = (d.dense.weight * d.dense.scale).to(dtype), d.dense.scale
    tape.yd = F.linear(tape.flat, tape.wd, d.dense.bias.to(dtype))
    tape.logits, logit = _conv(d.logits, F.leaky_relu(tape.yd, SLOPE)[:, :, None, None], dtype)
    return logit.flatten(), tape


@torch.no_grad()
def _input_gradient(tape: _Tape) -> Tensor:
    """u = ∂l_n/∂x_n for every example (dl/dl = 1), storing each layer's g on the tape."""
    n = tape.yd.shape[0]
    g = tape.logits.data(tape.logits.x.new_ones(n, 1, 1, 1)).flatten(1)
    g_yd = tape.yd_grad = _lrelu_grad(g, tape.yd)
    b, c, hh, ww = tape.yc.shape
    g = (g_yd @ tape.wd).view(b, hh, ww, c).permute(0, 3, 1, 2)  # channels-last view
    g = tape.conv_4x4.data(_lrelu_grad(g, tape.yc))
    g = _lrelu_grad(g, tape.h_last)
    for blk in reversed(tape.blocks):
        g_t = ops.blur_adjoint(g, tape.kernel, BlurDown.pads(*blk.size), blk.size).mul_(INV_SQRT2)
        g_ya = _lrelu_grad(blk.conv1.data(g_t), blk.ya)
        g = _lrelu_grad(blk.conv0.data(g_ya), blk.h) + blk.shortcut.data(g_t)
    return tape.from_rgb.data(_lrelu_grad(g, tape.y0))


def _scaled(c: Tensor, x: Tensor) -> Tensor:
    return c.reshape(-1, *[1] * (x.dim() - 1)).to(x.dtype) * x


@torch.no_grad()
def _weight_gradients(tape: _Tape, gg_x: Tensor, c: Tensor) -> dict[str, Tensor]:
    """∂(Σ_n c_n l_n + ⟨gg_x, u⟩)/∂W for every D parameter (gg_x: the cotangent of u = ∂l/∂x,
    c: per-example first-order weights), by name; one weight gradient per layer."""
    grads: dict[str, Tensor] = {}

    def conv(name: str, rec: _Conv, gg_in: Tensor) -> Tensor:
        """Gradients of conv ``name`` (first + second order); returns the cotangent of its g."""
        m = rec.module
        grads[f"{name}.weight"] = ops.conv_weight(rec.g, gg_in + _scaled(c, rec.x), rec.w, m.padding) * m.scale
        if m.bias is not None:
            grads[f"{name}.bias"] = _scaled(c, rec.g).sum((0, 2, 3))
        return F.conv2d(gg_in, rec.w, padding=m.padding)

    gg = _lrelu_grad(conv("from_rgb", tape.from_rgb, gg_x), tape.y0)
    for j, blk in enumerate(tape.blocks):
        gg_t = conv(f"blocks.{j}.conv_shortcut", blk.shortcut, gg)
        gg_ya = conv(f"blocks.{j}.conv0", blk.conv0, _lrelu_grad(gg, blk.h))
        gg_t = gg_t + conv(f"blocks.{j}.conv1", blk.conv1, _lrelu_grad(gg_ya, blk.ya))
        gg = ops.blur(gg_t, tape.kernel, BlurDown.pads(*blk.size)).mul_(INV_SQRT2)
    gg = conv("conv_4x4", tape.conv_4x4, _lrelu_grad(gg, tape.h_last))
    gg = _lrelu_grad(gg, tape.yc).permute(0, 2, 3, 1).flatten(1)
    g_yd = tape.yd_grad
    grads["dense.weight"] = (g_yd.t() @ (gg + _scaled(c, tape.flat))) * tape.dense_scale
    grads["dense.bias"] = _scaled(c, g_yd).sum(0)
    gg = _lrelu_grad(gg @ tape.wd.t(), tape.yd)[:, :, None, None]
    conv("logits", tape.logits, gg)
    return grads


@dataclass
class DiscriminatorStep:
    """D's and G's adversarial results of one forward pass of D on [I; Î]."""

    terms: dict[str, Tensor]  # D's weighted terms: real, fake, r1, r2 (values)
    gan: Tensor  # G's weighted non-saturating term (value)
    gan_grad: Tensor  # ∂(gan)/∂Î, [B, 3, H, W]
    grads: dict[str, Tensor]  # ∂(Σ terms)/∂(D parameter), by parameter name


def discriminator_step(
    d: Discriminator, real: Tensor, fake: Tensor, contour: Tensor, weights: LossWeights, *, precision: torch.dtype | None = None
) -> DiscriminatorStep:
    """D once on [I; Î] (fake detached) -> D's terms and gradients, G's GAN term and image gradient.

    ``precision``: the networks' working dtype; by default bf16 under the trainer's CUDA AMP,
    else D's own. Losses and the returned gradients are in at least float32.
    """
    dtype = precision or (torch.bfloat16 if torch.is_autocast_enabled("cuda") else d.from_rgb.weight.dtype)
    acc = torch.promote_types(dtype, torch.float32)
    with torch.autocast("cuda", enabled=False) if dtype == torch.bfloat16 else contextlib.nullcontext():
        x = torch.cat([torch.cat([real, fake.detach()]), torch.cat([contour, contour])], dim=1).to(dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        logit, tape = _forward(d, x, dtype)
        logit = logit.to(acc)
        u = _input_gradient(tape)[:, :3].to(acc)
        n = real.shape[0]
        l_r, l_f = logit[:n], logit[n:]
        u_r, u_f = u[:n], u[n:]
        # σ factors: ∇_I softplus(−l) = s_r·u, ∇_Î softplus(l) = s_f·u; ds/dl = σ(l)σ(−l) for both.
        s_r, s_f = -torch.sigmoid(-l_r), torch.sigmoid(l_f)
        sq_r, sq_f = u_r.square().flatten(1).sum(1), u_f.square().flatten(1).sum(1)
        g1, g2 = weights.r1_gamma, weights.r2_gamma
        terms = {"real": F.softplus(-l_r).mean(), "fake": F.softplus(l_f).mean()}
        if g1:
            terms["r1"] = g1 / 2 * (s_r.square() * sq_r).mean()
        if g2:
            terms["r2"] = g2 / 2 * (s_f.square() * sq_f).mean()
        dsig_r, dsig_f = torch.sigmoid(l_r) * torch.sigmoid(-l_r), torch.sigmoid(l_f) * torch.sigmoid(-l_f)
        c = torch.cat([-torch.sigmoid(-l_r) / n + g1 / n * s_r * sq_r * dsig_r, torch.sigmoid(l_f) / n + g2 / n * s_f * sq_f * dsig_f])
        gg_u = torch.cat([_scaled(g1 / n * s_r.square(), u_r), _scaled(g2 / n * s_f.square(), u_f)])
        gg_x = torch.cat([gg_u, torch.zeros_like(gg_u)], dim=1).to(dtype).contiguous(memory_format=torch.channels_last)
        grads = {k: v.to(acc) for k, v in _weight_gradients(tape, gg_x, c).items()}
    gan = weights.gan * F.softplus(-l_f).mean()
    gan_grad = _scaled(-weights.gan * torch.sigmoid(-l_f) / n, u_f)
    return DiscriminatorStep(terms, gan, gan_grad, grads)


# -- a stage B/C step's adversarial terms ------------------------------------------------------


@dataclass
class AdversarialTerms:
    """One step's weighted terms for G and D, and ``backward`` that puts their gradients in place.

    ``generator["gan"]`` is a value (logged); its gradient enters at Î through ``gan_grad``.
    ``discriminator`` holds D's values; its parameter gradients are already in ``d_grads``.
    """

    generator: dict[str, Tensor]
    discriminator: dict[str, Tensor]
    fake: Tensor
    gan_grad: Tensor | None
    d_grads: dict[str, Tensor]

    def backward(self, g_params: list[Tensor], d_named: list[tuple[str, Tensor]]) -> None:
        """G's gradients into ``g_params`` (one backward pass of G's side), D's into its
        parameters (added to any ``.grad`` already there)."""
        rest = {k: v for k, v in self.generator.items() if k != "gan"}
        outputs, grads = ([L.total(rest)], [None]) if rest else ([], [])
        if self.gan_grad is not None:
            outputs.append(self.fake)
            grads.append(self.gan_grad.to(self.fake.dtype))
        if outputs:
            torch.autograd.backward(outputs, grads, inputs=g_params)
        for name, p in d_named:
            g = self.d_grads[name].to(p.dtype).view_as(p)
            p.grad = g if p.grad is None else p.grad + g


def adversarial_terms(
    discriminator: Discriminator,
    fake: Tensor,
    real: Tensor,
    contour: Tensor,
    z_style: Tensor | None,
    z_layout: Tensor | None,
    weights: LossWeights,
    nets: L.LossNetworks,
) -> AdversarialTerms:
    """G's terms (ref §5.3) and D's (ref §5.1) from one pass of D on [I; Î]."""
    step = discriminator_step(discriminator, real.detach(), fake, contour, weights)
    g = {"gan": step.gan} if weights.gan else {}
    g |= L.generator_losses(fake, real.detach(), None, z_style, z_layout, weights, nets)
    return AdversarialTerms(g, step.terms, fake, step.gan_grad if weights.gan else None, step.grads)
