"""thead.nn.functional against PyTorch's own autograd: values, first and second derivatives."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from thead.nn import functional as ops
from thead.nn.layers import BlurDown, EqualConv2d, _same_pad

BLUR = (torch.tensor([1.0, 2.0, 1.0])[:, None] * torch.tensor([1.0, 2.0, 1.0])[None] / 16)[None, None]


def _reference_blur(x, pads):
    c = x.shape[1]
    return F.conv2d(F.pad(x, pads), BLUR.to(x.dtype).expand(c, 1, 3, 3), stride=2, groups=c)


def _layout(t, channels_last):
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t.contiguous()


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.slow
def test_conv_gradcheck_first_and_second_order(k):
    torch.manual_seed(k)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, k, k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    f = lambda x, w, b: ops.conv2d(x, w, b, k // 2)
    assert gradcheck(f, (x, w, b))
    assert gradgradcheck(f, (x, w, b))


@pytest.mark.parametrize("size", [(8, 8), (7, 7), (6, 5)])
@pytest.mark.slow
def test_blur_gradcheck_first_and_second_order(size):
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    h, w = size
    ph, pw = _same_pad(h), _same_pad(w)
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    f = lambda x: ops.blur_down(x, BLUR.double(), pad)
    torch.testing.assert_close(f(x), _reference_blur(x, pad), rtol=0, atol=1e-15)
    assert gradcheck(f, (x,))
    assert gradgradcheck(f, (x,))


@pytest.mark.parametrize("channels_last", [False, True])
def test_r1_through_a_small_d_matches_native_autograd(channels_last):
    """The discriminator's R1 pattern — grad wrt the image with create_graph, then the penalty's
    gradient wrt every weight — gives PyTorch's own numbers in float32, in either layout."""
    torch.manual_seed(0)
    convs = [EqualConv2d(6, 8, 1), EqualConv2d(8, 8, 3), EqualConv2d(8, 16, 3), EqualConv2d(16, 16, 3)]
    blur = BlurDown()
    params = [p for c in convs for p in c.parameters()]
    for p in params:
        p.data.normal_(0, 1)
    x0 = _layout(torch.randn(3, 6, 12, 12), channels_last)

    def d(x, native):
        h = x
        for i, c in enumerate(convs):
            w = c.weight * c.scale
            h = F.conv2d(h, w, c.bias, padding=c.padding) if native else ops.conv2d(h, w, c.bias, c.padding)
            h = F.leaky_relu(h, 0.2)
            if i in (1, 2):
                pads = (0, 1, 0, 1) if h.shape[-1] % 2 == 0 else (1, 1, 1, 1)
                h = _reference_blur(h, pads) if native else ops.blur_down(h, blur.kernel, pads)
        return h.mean((1, 2, 3))

    results = []
    for native in (True, False):
        x = x0.clone().requires_grad_(True)
        logit = d(x, native)
        (g,) = torch.autograd.grad(F.softplus(-logit).sum(), x, create_graph=True)
        penalty = g.square().sum((1, 2, 3)).mean() + F.softplus(logit).mean()
        grads = torch.autograd.grad(penalty, params)
        results.append((logit.detach(), g.detach(), grads))
    (l0, g0, w0), (l1, g1, w1) = results
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-6)
    for a, b in zip(w1, w0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())


def test_plain_backward_matches_native_and_skips_unneeded_gradients():
    torch.manual_seed(1)
    x = torch.randn(2, 4, 9, 9).contiguous(memory_format=torch.channels_last)
    w = torch.randn(5, 4, 3, 3, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    gy = torch.randn(2, 5, 9, 9)  # a gradient in the other layout
    ops.conv2d(x, w, b, 1).backward(gy)
    gw, gb = w.grad.clone(), b.grad.clone()
    w.grad = b.grad = None
    F.conv2d(x, w, b, padding=1).backward(gy)
    torch.testing.assert_close(gw, w.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gb, b.grad, rtol=1e-6, atol=1e-5)
    assert x.grad is None  # the image never asked for one


def test_image_only_gradient_skips_the_weight_gradients(monkeypatch):
    """R1/R2's autograd.grad(…, [image], create_graph=True) must not pay for weight gradients
    (needs_input_grad says the weights *could* take one; the running pass says it doesn't)."""
    calls = []
    real = ops.conv_weight
    monkeypatch.setattr(ops, "conv_weight", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w1, w2 = torch.randn(4, 3, 3, 3, requires_grad=True), torch.randn(1, 4, 3, 3, requires_grad=True)
    y = ops.conv2d(F.leaky_relu(ops.conv2d(x, w1 * 0.5, None, 1), 0.2), w2 * 0.5, None, 1)
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    assert calls == []
    g.square().sum().backward(inputs=[w1, w2])  # the penalty's update does need them
    assert len(calls) == 2 and w1.grad is not None and w2.grad is not None
