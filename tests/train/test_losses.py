"""Loss maths (ref §5.1) and the stage configs against the reference tables (ref §2)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thead.train import losses as L
from thead.train.config import LossWeights, layout_pretraining, meta_learning


class ToyDiscriminator(nn.Module):
    """Conditional on [image ‖ contour] like D, tiny, float64, per-example (no batch stats)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(6, 4, 3, padding=1)
        self.out = nn.Conv2d(4, 1, 6)

    def forward(self, image, contour):
        h = F.leaky_relu(self.conv(torch.cat([image, contour], 1)), 0.2)
        return [h, self.out(h)]  # like D: a list whose last entry is the [N,1,1,1] logit


@pytest.fixture
def toy():
    torch.manual_seed(0)
    d = ToyDiscriminator().double()
    real = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    fake = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    contour = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    return d, real, fake, contour


def _numeric_grad(f, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    g = torch.zeros_like(x)
    flat, gflat = x.view(-1), g.view(-1)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + h
        up = f(x)
        flat[i] = old - h
        down = f(x)
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return g


def test_r1_r2_match_finite_differences_of_the_softplus_losses(toy):
    d, real, fake, contour = toy
    real_ = real.clone().requires_grad_(True)
    fake_ = fake.clone().requires_grad_(True)
    logits = d(torch.cat([real_, fake_]), torch.cat([contour, contour]))[-1]
    grad_real, grad_fake = L.image_gradients(*logits.chunk(2), real_, fake_)

    with torch.no_grad():
        num_real = _numeric_grad(lambda x: F.softplus(-d(x, contour)[-1]).sum().item(), real.clone())
        num_fake = _numeric_grad(lambda x: F.softplus(d(x, contour)[-1]).sum().item(), fake.clone())
    torch.testing.assert_close(grad_real, num_real, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(grad_fake, num_fake, rtol=1e-6, atol=1e-9)

    # (γ/2)·‖∇‖² summed over C,H,W, mean over the batch; gradient of the *loss*, not the logit.
    r1 = L.gradient_penalty(grad_real, 10.0)
    expected = 5.0 * num_real.square().flatten(1).sum(1).mean()
    torch.testing.assert_close(r1, expected, rtol=1e-6, atol=0)
    raw_logit_grad = torch.autograd.grad(d(real_, contour)[-1].sum(), real_)[0]
    assert not torch.allclose(grad_real, -raw_logit_grad)


def test_penalty_gradient_wrt_discriminator_weights_matches_finite_differences(toy):
    """D's update differentiates through R1 + R2 (double backward); check it numerically."""
    d, real, fake, contour = toy

    def penalties() -> torch.Tensor:
        r, f = real.clone().requires_grad_(True), fake.clone().requires_grad_(True)
        logits = d(torch.cat([r, f]), torch.cat([contour, contour]))[-1]
        terms = L.discriminator_losses(*logits.chunk(2), r, f, LossWeights())
        return terms["r1"] + terms["r2"]

    analytic = torch.autograd.grad(penalties(), d.conv.weight)[0]
    with torch.no_grad():
        w = d.conv.weight
        numeric = torch.zeros_like(w)
        for idx in [(0, 0, 0, 0), (1, 3, 1, 2), (3, 5, 2, 2), (2, 1, 0, 1)]:
            old = w[idx].item()
            w[idx] = old + 1e-6
            with torch.enable_grad():
                up = penalties().item()
            w[idx] = old - 1e-6
            with torch.enable_grad():
                down = penalties().item()
            w[idx] = old
            numeric[idx] = (up - down) / 2e-6
            assert analytic[idx].item() == pytest.approx(numeric[idx].item(), rel=1e-5, abs=1e-9)


def test_single_forward_discriminator_update_equals_the_textbook_one(toy):
    """D on [I; Î] once, with Î still attached to G, gives D the same gradients as the usual
    detached two-forward computation, and the D loss sends nothing into G."""
    d, real, _, contour = toy
    g = nn.Linear(4, 3 * 36).double()
    z = torch.randn(2, 4, dtype=torch.float64)
    weights = LossWeights()

    fake = g(z).view(2, 3, 6, 6)
    r = real.clone().requires_grad_(True)
    logits = d(torch.cat([r, fake]), torch.cat([contour, contour]))[-1]
    ours = L.total(L.discriminator_losses(*logits.chunk(2), r, fake, weights))
    ours.backward(inputs=list(d.parameters()))
    assert g.weight.grad is None
    got = [p.grad.clone() for p in d.parameters()]

    d.zero_grad()
    r2 = real.clone().requires_grad_(True)
    f2 = fake.detach().clone().requires_grad_(True)
    real_logit, fake_logit = d(r2, contour)[-1], d(f2, contour)[-1]
    gr = torch.autograd.grad(F.softplus(-real_logit).sum(), r2, create_graph=True)[0]
    gf = torch.autograd.grad(F.softplus(fake_logit).sum(), f2, create_graph=True)[0]
    ref = (F.softplus(-real_logit).mean() + F.softplus(fake_logit).mean()
           + 5 * gr.square().flatten(1).sum(1).mean() + 5 * gf.square().flatten(1).sum(1).mean())
    ref.backward()
    for a, p in zip(got, d.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-10, atol=1e-12)


def test_simple_terms():
    a = torch.tensor([[1.0, -1.0], [0.5, 0.0]])
    assert L.l1(a, torch.zeros_like(a)).item() == pytest.approx(0.625)
    z = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert L.latent_l2(z).item() == pytest.approx(30 / 4)  # mean of squares, not a sum
    logit = torch.tensor([0.3, -2.0]).view(2, 1, 1, 1)
    assert L.gan_generator(logit).item() == pytest.approx(F.softplus(-logit).mean().item())
    real, fake = L.gan_discriminator(logit, -logit)
    assert real.item() == pytest.approx(fake.item())
    logits = torch.zeros(1, 19, 2, 2)
    assert L.segmentation_ce(logits, torch.zeros(1, 2, 2, dtype=torch.long)).item() == pytest.approx(torch.log(torch.tensor(19.0)).item())


def test_objectives_leave_out_zero_weight_terms_and_apply_weights():
    from tests.train.helpers import tiny_loss_networks

    nets = tiny_loss_networks()
    torch.manual_seed(1)
    fake, real = torch.randn(1, 3, 224, 224), torch.rand(1, 3, 224, 224) * 2 - 1
    z = torch.randn(1, 8)
    g = L.generator_losses(fake, real, torch.zeros(1, 1, 1, 1), z, z, meta_learning().weights, nets)
    assert set(g) == {"gan", "vgg19", "l1", "vgg_face", "identity", "z_style_l2", "z_layout_l2"}
    assert g["l1"].item() == pytest.approx(L.l1(fake, real).item())
    assert g["z_style_l2"].item() == pytest.approx(L.latent_l2(z).item())
    assert g["vgg19"].item() == pytest.approx(0.1 * L.vgg19_perceptual(nets.vgg19, fake, real).item(), rel=1e-6)
    recon, identity = L.vgg_face_terms(nets.vgg_face, fake, real)
    assert g["vgg_face"].item() == pytest.approx(0.002 * recon.item(), rel=1e-6)
    assert g["identity"].item() == pytest.approx(identity.item(), rel=1e-6)
    a = L.layout_pretraining_losses(torch.zeros(1, 19, 224, 224), fake, z, real, torch.zeros(1, 224, 224, dtype=torch.long), layout_pretraining().weights, nets)
    assert set(a) == {"segmentation", "vgg19_aux", "z_layout_l2"}  # no GAN, L1 or VGG-Face in stage A
    assert a["segmentation"].item() == pytest.approx(10 * torch.log(torch.tensor(19.0)).item(), rel=1e-6)


_FLAG = {  # ref §2 flag -> LossWeights / TrainConfig field
    "w_loss_gan": "gan", "w_loss_vgg": "vgg19", "w_loss_l1": "l1", "w_loss_segmentation": "segmentation",
    "w_loss_vgg_face_recon": "vgg_face", "w_loss_identity": "identity", "w_loss_z_l2": "z_style_l2",
    "w_loss_z_layout_l2": "z_layout_l2",
}  # fmt: skip


def _reference_table(shared_dir) -> dict[str, tuple[str, str, str]]:
    path = shared_dir / "design" / "lsr-reference.md"
    if not path.exists():
        pytest.skip(f"{path} not found")
    rows = {}
    for line in path.read_text().splitlines():
        m = re.match(r"\|\s*([A-Za-z_0-9 /()]+?)\s*\|\s*([^|]*)\|\s*([^|]*)\|\s*([^|]*)\|\s*$", line)
        if m:
            rows[m.group(1)] = tuple(c.strip() for c in m.groups()[1:])
    return rows


def test_stage_configs_equal_the_reference_tables(shared_dir):
    table = _reference_table(shared_dir)
    stage_a, stage_b = layout_pretraining(), meta_learning()
    for flag, name in _FLAG.items():
        default, pre, meta = table[flag]
        assert getattr(LossWeights(), name) == float(default), flag
        assert getattr(stage_a.weights, name) == float(pre or default), flag
        assert getattr(stage_b.weights, name) == float(meta or default), flag
    assert (stage_b.weights.r1_gamma, stage_b.weights.r2_gamma) == (10.0, 10.0)
    for cfg, col in ((stage_a, 1), (stage_b, 2)):
        assert cfg.total_examples == int(table["total_k_examples"][col]) * 1000
        assert cfg.decay_examples == int(table["num_lr_decay_k_examples"][col]) * 1000
        assert cfg.warmup_steps == int(table["lr_warmstart_steps"][col])
        assert cfg.decay_intervals == int(table["decay_num_intervals"][col])
        assert cfg.num_shots == int(table["K"][col]) and cfg.batch_size == int(table["batch_size (per GPU)"][col])
        assert cfg.optimizer.lr == float(table["g_lr / d_lr / e_lr"][0].split("/")[0])
        assert (cfg.optimizer.beta1, cfg.optimizer.beta2) == tuple(float(v) for v in table["adam_beta1 / adam_beta2"][0].split("/"))
        assert cfg.optimizer.grad_clip == float(table["grad_clip_abs_val"][0])
        assert cfg.optimizer.eps == 1e-7  # Keras default (ref §5.2)
        assert cfg.window == 10  # num_frame_concatenations (ref §1.7)
    assert meta_learning("learned_segmentation").weights.segmentation > 0
    assert meta_learning("oracle_segmentation").needs_segmaps and not stage_b.needs_segmaps


def test_image_gradients_need_one_logit_per_example(toy):
    d, real, fake, contour = toy
    r, f = real.clone().requires_grad_(True), fake.clone().requires_grad_(True)
    maps = d(torch.cat([r, f]), torch.cat([contour, contour]))[0]  # a feature map, not a logit
    with pytest.raises(ValueError, match="one logit per example"):
        L.image_gradients(*maps.chunk(2), r, f)
