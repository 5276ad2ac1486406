"""The LR schedule (ref §5.4, §5.5) and Keras Adam with element-wise clipping (ref §5.2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from thead.train.config import OptimizerConfig
from thead.train.finetune import finetune_steps
from thead.train.optim import KerasAdam
from thead.train.schedule import finetune_schedule, training_schedule


def reference_lr(s, lr0, s0, w, ds, de, intervals=100):
    """models/model_utils.py as ref §5.4 writes it."""
    if s < s0 + w:
        return lr0 * (s + 1e-8 - s0) / w
    if s <= ds:
        return lr0
    return lr0 / max(1, intervals * (s - ds) / (de - ds))


def test_stage_b_schedule_follows_the_formula():
    sched = training_schedule(1e-3, total_examples=16_350_000, decay_examples=1_090_000, global_batch=4, warmup_steps=500)
    ds, de = (16_350_000 - 1_090_000) // 4, 16_350_000 // 4
    assert (sched.decay_start, sched.decay_end) == (ds, de)
    for s in [0, 1, 250, 499, 500, 272_500, ds, ds + 1, ds + 2725, ds + 100_000, de - 1, de]:
        assert sched(s) == pytest.approx(reference_lr(s, 1e-3, 1, 500, ds, de), rel=1e-6), s  # float32
    # s0 = 1 as in the release (its LR multiplier lands in ``starting_step``): −2e-6, then 0
    assert (sched(0), sched(1)) == (pytest.approx(-2e-6, rel=1e-6), 0.0)
    assert sched(de) == pytest.approx(1e-5)  # lr / 100 at the end
    assert sched(ds + (de - ds) // 2) == pytest.approx(1e-3 / 50)  # 1/t, not linear


def test_stage_a_has_warmup_and_no_decay():
    sched = training_schedule(1e-3, total_examples=1_090_000, decay_examples=0, global_batch=4, warmup_steps=500)
    assert sched(250) == pytest.approx(4.98e-4, rel=1e-6)  # (250 − s0)/500 with s0 = 1
    assert sched(600) == sched(272_499) == np.float32(1e-3)
    assert sched(272_501) == 0.0  # past the end the release divides by zero: LR 0 (never reached)


def test_no_warmup_means_the_full_lr_from_step_0():
    sched = training_schedule(1e-3, total_examples=1000, decay_examples=0, global_batch=1, warmup_steps=0)
    assert [sched(s) for s in (0, 1, 2)] == [np.float32(1e-3)] * 3  # never 0/0 before s0 = 1


def test_finetune_schedule_and_steps_by_shots():
    sched = finetune_schedule(1e-3, 60)
    assert [sched(s) for s in (0, 10, 30)] == [np.float32(1e-3)] * 3  # the release's float32 LR
    assert sched(45) == pytest.approx(reference_lr(45, 1e-3, 0, 0, 30, 60), rel=1e-6)
    assert sched(59) == pytest.approx(1e-3 / max(1, 100 * 29 / 30), rel=1e-6)
    assert all(finetune_schedule(1e-3, 60, decay=False)(s) == np.float32(1e-3) for s in range(60))
    assert [finetune_steps(k) for k in (1, 3, 4, 7, 8, 15, 16, 31, 32, 64)] == [24, 24, 60, 60, 100, 100, 200, 200, 400, 400]


def test_keras_adam_matches_the_keras_update_rule_with_clipping():
    cfg = OptimizerConfig()
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(50))
    opt = KerasAdam([("p", p)], cfg)
    theta, m, v = p.detach().double().numpy().copy(), np.zeros(50), np.zeros(50)
    for t in range(1, 5):
        g = torch.randn(50) * 2  # some beyond ±1 get clipped
        g[:3] = torch.tensor([1e-9, -1e-8, 0.0])  # where ε's placement matters
        p.grad = g.clone()
        opt.step(1e-3)
        gc = np.clip(g.double().numpy(), -1, 1)
        m = m + (gc - m) * (1 - cfg.beta1)
        v = v + (gc * gc - v) * (1 - cfg.beta2)
        lr_t = 1e-3 * math.sqrt(1 - cfg.beta2**t) / (1 - cfg.beta1**t)
        theta = theta - lr_t * m / (np.sqrt(v) + cfg.eps)
        np.testing.assert_allclose(p.detach().double().numpy(), theta, rtol=0, atol=2e-7)
    assert opt.iterations == 4
    # torch.optim.Adam puts ε on the bias-corrected sqrt(v̂): a different update for tiny gradients.
    q = torch.nn.Parameter(torch.zeros(1))
    torch_adam = torch.optim.Adam([q], lr=1e-3, betas=(0.0, 0.999), eps=1e-7)
    q.grad = torch.tensor([1e-8])
    torch_adam.step()
    r = torch.nn.Parameter(torch.zeros(1))
    ours = KerasAdam([("r", r)], cfg)
    r.grad = torch.tensor([1e-8])
    ours.step(1e-3)
    assert abs(q.item() - r.item()) > 1e-5


def test_optimizer_state_round_trip():
    p = torch.nn.Parameter(torch.ones(3))
    opt = KerasAdam([("w", p)], OptimizerConfig())
    p.grad = torch.tensor([0.5, -2.0, 0.1])
    opt.step(1e-3)
    state = opt.state_tensors("generator")
    assert set(state) == {"generator.iterations", "generator.w.m", "generator.w.v"}
    other = KerasAdam([("w", torch.nn.Parameter(torch.ones(3)))], OptimizerConfig())
    other.load_state_tensors(state, "generator")
    assert other.iterations == 1 and torch.equal(other.v[0], opt.v[0]) and torch.equal(other.m[0], opt.m[0])
