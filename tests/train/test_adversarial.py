"""D's written-out gradients (thead.train.adversarial) against autograd on the same losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from thead.nn.discriminator import Discriminator
from thead.train import losses as L
from thead.train.adversarial import adversarial_terms, discriminator_step
from thead.train.config import LossWeights


def _setup(resolution: int, seed: int = 0):
    torch.manual_seed(seed)
    # 28 -> 14 -> 7 -> 4: even and odd TF-'SAME' blur padding
    d = Discriminator(6, nf=4, nf_max=8, num_downsamples=3, resolution=resolution).double()
    with torch.no_grad():
        for name, p in d.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.3)  # non-zero biases: their gradients are checked too
    real = torch.randn(3, 3, resolution, resolution, dtype=torch.float64)
    fake = torch.randn(3, 3, resolution, resolution, dtype=torch.float64)
    contour = torch.randn(3, 3, resolution, resolution, dtype=torch.float64)
    return d, real, fake, contour


def _autograd_reference(d, real, fake, contour, weights):
    r = real.clone().requires_grad_(True)
    f = fake.clone().requires_grad_(True)
    logits = d(torch.cat([r, f]), torch.cat([contour, contour]))[-1]
    real_logit, fake_logit = logits.chunk(2)
    terms = L.discriminator_losses(real_logit, fake_logit, r, f, weights)
    grads = torch.autograd.grad(L.total(terms), list(d.parameters()), retain_graph=True)
    gan = weights.gan * L.gan_generator(fake_logit)
    (gan_grad,) = torch.autograd.grad(gan, f)
    return {k: v.detach() for k, v in terms.items()}, dict(zip([n for n, _ in d.named_parameters()], grads, strict=True)), gan.detach(), gan_grad


@pytest.mark.parametrize("weights", [LossWeights(gan=0.7), LossWeights(r1_gamma=0.0), LossWeights(r2_gamma=3.0)], ids=["default", "no-r1", "r2-3"])
def test_written_out_gradients_equal_autograd(weights):
    d, real, fake, contour = _setup(28)
    step = discriminator_step(d, real, fake, contour, weights)
    terms, grads, gan, gan_grad = _autograd_reference(d, real, fake, contour, weights)
    assert set(step.terms) == set(terms)
    for k in terms:
        torch.testing.assert_close(step.terms[k].double(), terms[k], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(step.gan.double(), gan, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(step.gan_grad.double(), gan_grad, rtol=1e-9, atol=1e-12)
    assert set(step.grads) == set(grads)
    for name, g in grads.items():
        scale = g.abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(step.grads[name].double(), g, rtol=1e-8, atol=1e-9 * scale, msg=lambda m, name=name: f"{name}: {m}")


def test_float32_channels_last_matches_float64():
    """The trainer's setting (float32, channels-last D) against the float64 values."""
    d, real, fake, contour = _setup(28, seed=1)
    ref = discriminator_step(d, real, fake, contour, LossWeights())
    d32 = d.float().to(memory_format=torch.channels_last)
    got = discriminator_step(d32, *(t.float().contiguous(memory_format=torch.channels_last) for t in (real, fake, contour)), LossWeights())
    for name, g in ref.grads.items():
        torch.testing.assert_close(got.grads[name].double(), g, rtol=2e-4, atol=2e-5 * g.abs().max().item())
    torch.testing.assert_close(got.gan_grad.double(), ref.gan_grad, rtol=2e-4, atol=1e-6)


def test_adversarial_terms_give_g_and_d_the_textbook_gradients():
    """adversarial_terms + backward: G's gradients (its losses + the GAN gradient entering at Î)
    and D's equal the plain two-backward autograd computation; D's loss reaches nothing in G."""
    d, real, _, contour = _setup(28, seed=2)
    g = torch.nn.Linear(4, 3 * 28 * 28).double()
    z = torch.randn(3, 4, dtype=torch.float64)
    z_style = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    weights = LossWeights(gan=0.7, vgg19=0.0, vgg_face=0.0, identity=0.0, z_layout_l2=0.0)
    g_params, d_named = [*g.parameters(), z_style], list(d.named_parameters())

    adv = adversarial_terms(d, g(z).view(3, 3, 28, 28), real, contour, z_style, None, weights, L.LossNetworks())
    assert set(adv.generator) == {"gan", "l1", "z_style_l2"} and set(adv.discriminator) == {"real", "fake", "r1", "r2"}
    adv.backward(g_params, d_named)
    ours = [p.grad.clone() for p in g_params] + [p.grad.clone() for _, p in d_named]
    for p in g_params + [p for _, p in d_named]:
        p.grad = None

    fake = g(z).view(3, 3, 28, 28)
    r = real.clone().requires_grad_(True)
    logits = d(torch.cat([r, fake]), torch.cat([contour, contour]))[-1]
    real_logit, fake_logit = logits.chunk(2)
    g_total = 0.7 * F.softplus(-fake_logit).mean() + (fake - real).abs().mean() + z_style.square().mean()
    g_total.backward(inputs=g_params, retain_graph=True)
    L.total(L.discriminator_losses(real_logit, fake_logit, r, fake, weights)).backward(inputs=[p for _, p in d_named])
    theirs = [p.grad for p in g_params] + [p.grad for _, p in d_named]
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9 * b.abs().max().item())


def test_bf16_working_precision_runs_and_stays_close():
    """The AMP path's arithmetic (bf16 activations and weights, float32 losses and gradients),
    run on the CPU: same terms to bf16 accuracy, gradients pointing the same way."""
    d, real, fake, contour = _setup(28, seed=3)
    d = d.float().to(memory_format=torch.channels_last)
    real, fake, contour = (t.float().contiguous(memory_format=torch.channels_last) for t in (real, fake, contour))
    ref = discriminator_step(d, real, fake, contour, LossWeights())
    got = discriminator_step(d, real, fake, contour, LossWeights(), precision=torch.bfloat16)
    assert all(g.dtype == torch.float32 for g in got.grads.values()) and got.gan_grad.dtype == torch.float32
    for k, v in ref.terms.items():
        assert float(got.terms[k]) == pytest.approx(float(v), rel=0.1), k
    a = torch.cat([got.grads[k].flatten() for k in ref.grads])
    b = torch.cat([ref.grads[k].flatten() for k in ref.grads])
    assert F.cosine_similarity(a, b, dim=0) > 0.99
    assert F.cosine_similarity(got.gan_grad.flatten(), ref.gan_grad.flatten(), dim=0) > 0.99
