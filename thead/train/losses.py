"""LSR's losses (ref §5.1) as pure functions named after the paper's terms.

Per-example terms are averaged over the batch (the release divides sums over the global batch
by its size). The stage objectives return dicts of *weighted* named terms — each is logged,
the total is their sum — and leave out terms whose weight is 0 (nothing is computed for them).

Gradient penalties: R1 and R2 are taken of the softplus *losses* (not the raw logit) with
respect to the 3-channel image only, every step: ``(γ/2)·‖∇_x softplus(∓D(x‖c))‖²`` summed over
C, H, W (ref §5.1, §9.7). ``logit_gradients`` gets ∂D/∂I and ∂D/∂Î with one
``torch.autograd.grad`` call on the images alone (``create_graph=True`` so D's update sees
them); R1's and R2's image gradients are per-example multiples of them. These autograd
definitions are the reference; the training step computes the same numbers with D's gradients
written out (``thead.train.adversarial``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from thead.nn.backbones.vgg import VGG19Features, VGGFace
from thead.train.config import LossWeights

VGG19_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)  # relu1_1 .. relu5_1


@dataclass(frozen=True)
class LossNetworks:
    """The frozen loss networks; ``None`` where the stage's weights never use them."""

    vgg19: VGG19Features | None = None
    vgg_face: VGGFace | None = None

    def to(self, device: torch.device | str, memory_format: torch.memory_format = torch.preserve_format) -> LossNetworks:
        return LossNetworks(*(n.to(device, memory_format=memory_format) if n is not None else None for n in (self.vgg19, self.vgg_face)))


# -- single terms ------------------------------------------------------------------------------


def l1(fake: Tensor, real: Tensor) -> Tensor:
    """mean |Î − I| over C, H, W and the batch, in [-1, 1] units."""
    return (fake - real).abs().mean()


def feature_distance(fake: Sequence[Tensor], real: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """Σ_l w_l · mean |φ_l(Î) − φ_l(I)|."""
    return sum(w * (a - b).abs().mean() for w, a, b in zip(weights, fake, real, strict=True))


def vgg19_perceptual(vgg19: VGG19Features, fake: Tensor, real: Tensor) -> Tensor:
    """Weighted L1 between relu1_1..relu5_1 (weights 1/32..1) of the Keras ImageNet VGG19."""
    with torch.no_grad():
        target = vgg19(real)
    return feature_distance(vgg19(fake), target, VGG19_LAYER_WEIGHTS)


def vgg_face_terms(vgg_face: VGGFace, fake: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
    """(Σ over conv1_1..conv5_1 of mean |φ(Î) − φ(I)|, mean |fc8(Î) − fc8(I)|), unweighted."""
    with torch.no_grad():
        target = vgg_face(real)
    out = vgg_face(fake)
    return feature_distance(out.features, target.features, [1.0] * 5), l1(out.logits, target.logits)


def gan_generator(fake_logit: Tensor) -> Tensor:
    """Non-saturating: mean softplus(−D(Î‖c))."""
    return F.softplus(-fake_logit).mean()


def gan_discriminator(real_logit: Tensor, fake_logit: Tensor) -> tuple[Tensor, Tensor]:
    """Logistic: (mean softplus(−D(I‖c)), mean softplus(D(Î‖c)))."""
    return F.softplus(-real_logit).mean(), F.softplus(fake_logit).mean()


def logit_gradients(real_logit: Tensor, fake_logit: Tensor, real: Tensor, fake: Tensor, *, create_graph: bool = True) -> tuple[Tensor, Tensor]:
    """∂D/∂I and ∂D/∂Î per example, [N, 3, H, W] each, from one ``autograd.grad`` of the logits' sum.

    D scores examples independently with one logit each (no batch statistics), so the gradient of
    the summed logits is each example's own. ``real`` must require grad; ``fake`` is the tensor fed
    to D. With ``create_graph`` D's update can differentiate through them (R1/R2).
    """
    for logit in (real_logit, fake_logit):
        if logit.numel() != logit.shape[0]:
            raise ValueError(f"expected one logit per example, got {tuple(logit.shape)}")
    grad_real, grad_fake = torch.autograd.grad(real_logit.sum() + fake_logit.sum(), [real, fake], create_graph=create_graph)
    return grad_real, grad_fake


def _per_example(scale: Tensor, grad: Tensor) -> Tensor:
    return _full(scale).reshape(-1, *[1] * (grad.dim() - 1)) * _full(grad)


def image_gradients(real_logit: Tensor, fake_logit: Tensor, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """∇_I softplus(−D(I‖c)) = −σ(−D)·∂D/∂I and ∇_Î softplus(D(Î‖c)) = σ(D)·∂D/∂Î per example.

    The σ factors stay in the graph, so D's update sees every path of the second-order term.
    """
    grad_real, grad_fake = logit_gradients(real_logit, fake_logit, real, fake)
    return _per_example(-torch.sigmoid(-_full(real_logit)), grad_real), _per_example(torch.sigmoid(_full(fake_logit)), grad_fake)


def gradient_penalty(grad: Tensor, gamma: float) -> Tensor:
    """(γ/2) · ‖grad‖² summed over C, H, W, averaged over the batch (R1 on real, R2 on fake)."""
    return gamma / 2 * _full(grad).square().flatten(1).sum(1).mean()


def latent_l2(z: Tensor) -> Tensor:
    """mean of z² over the latent dimensions (and the batch) — a mean, not a sum (ref §9.17)."""
    return _full(z).square().mean()


def segmentation_ce(layout_logits: Tensor, labels: Tensor) -> Tensor:
    """Sparse softmax cross-entropy, logits [N, 19, H, W] vs labels [N, H, W] in 0..18,
    averaged over H, W and the batch."""
    return F.cross_entropy(_full(layout_logits), labels.long())


# -- stage objectives ------------------------------------------------------------------------


def layout_pretraining_losses(
    layout_logits: Tensor,
    aux_rgb: Tensor,
    z_layout: Tensor,
    target_rgb: Tensor,
    target_segmap: Tensor,
    weights: LossWeights,
    nets: LossNetworks,
) -> dict[str, Tensor]:
    """Stage A (ref §5.2): 10·CE + 0.01·VGG19(aux RGB, I) + 1·mean(z^l²)."""
    terms: dict[str, Tensor] = {}
    if weights.segmentation:
        terms["segmentation"] = weights.segmentation * segmentation_ce(layout_logits, target_segmap)
    if weights.vgg19:
        terms["vgg19_aux"] = weights.vgg19 * vgg19_perceptual(_need(nets.vgg19, "VGG19"), _full(aux_rgb), target_rgb)
    if weights.z_layout_l2:
        terms["z_layout_l2"] = weights.z_layout_l2 * latent_l2(z_layout)
    return terms


def generator_losses(
    fake: Tensor,
    real: Tensor,
    fake_logit: Tensor | None,
    z_style: Tensor | None,
    z_layout: Tensor | None,
    weights: LossWeights,
    nets: LossNetworks,
) -> dict[str, Tensor]:
    """Stage B/C generator objective (ref §5.3): 1·G_GAN + 0.1·VGG19 + 1·L1 + 0.002·Σ VGG-Face
    conv + 1·VGG-Face fc8 + 1·mean(z^s²) + 1·mean(z^l²). ``fake`` is G^s's (unbounded) output."""
    fake = _full(fake)
    terms: dict[str, Tensor] = {}
    if weights.gan and fake_logit is not None:
        terms["gan"] = weights.gan * gan_generator(_full(fake_logit))
    if weights.vgg19:
        terms["vgg19"] = weights.vgg19 * vgg19_perceptual(_need(nets.vgg19, "VGG19"), fake, real)
    if weights.l1:
        terms["l1"] = weights.l1 * l1(fake, real)
    if weights.vgg_face or weights.identity:
        recon, identity = vgg_face_terms(_need(nets.vgg_face, "VGG-Face"), fake, real)
        if weights.vgg_face:
            terms["vgg_face"] = weights.vgg_face * recon
        if weights.identity:
            terms["identity"] = weights.identity * identity
    if weights.z_style_l2 and z_style is not None:
        terms["z_style_l2"] = weights.z_style_l2 * latent_l2(z_style)
    if weights.z_layout_l2 and z_layout is not None:
        terms["z_layout_l2"] = weights.z_layout_l2 * latent_l2(z_layout)
    return terms


def discriminator_losses(
    real_logit: Tensor,
    fake_logit: Tensor,
    real: Tensor,
    fake: Tensor,
    weights: LossWeights,
) -> dict[str, Tensor]:
    """D_real + D_fake + R1 + R2 (γ = 10 each, every step), ref §5.1, through autograd: the
    definition (and the tests' reference) for ``thead.train.adversarial``, which the trainer
    uses."""
    d_real, d_fake = gan_discriminator(_full(real_logit), _full(fake_logit))
    terms = {"real": d_real, "fake": d_fake}
    if weights.r1_gamma or weights.r2_gamma:
        grad_real, grad_fake = image_gradients(real_logit, fake_logit, real, fake)
        if weights.r1_gamma:
            terms["r1"] = gradient_penalty(grad_real, weights.r1_gamma)
        if weights.r2_gamma:
            terms["r2"] = gradient_penalty(grad_fake, weights.r2_gamma)
    return terms


def total(terms: dict[str, Tensor]) -> Tensor:
    return sum(terms.values())


def _need(net, name: str):
    if net is None:
        raise ValueError(f"this objective needs the {name} loss network, none was given")
    return net


def _full(x: Tensor) -> Tensor:
    """Losses are reduced in float32 (or float64) even when the networks ran in bf16 (AMP)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
