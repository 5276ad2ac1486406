"""The packed oneDNN convolutions of the CPU inference path (thead.nn.onednn, EqualConv2d.pack_)
against PyTorch's own convolution, with their fused ReLU and residual addition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from thead.config import LSRConfig
from thead.model import LSR, RENDER_NETWORKS, Latents
from thead.nn import onednn
from thead.nn.layers import EqualConv2d

pytestmark = pytest.mark.skipif(not onednn.available(), reason="this torch build has no oneDNN post-op convolutions")

CL = torch.channels_last


def _conv(cin: int, cout: int, k: int, *, bias: bool = True, seed: int = 0) -> EqualConv2d:
    torch.manual_seed(seed)
    conv = EqualConv2d(cin, cout, k, bias=bias).requires_grad_(False)
    if bias:
        conv.bias.normal_()
    conv.fold_scale_()
    return conv


def _x(*shape: int, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(*shape).contiguous(memory_format=CL)


@pytest.mark.parametrize("k,bias,size", [(3, True, 14), (3, True, 37), (1, False, 14), (1, False, 28)])
@torch.inference_mode()
def test_packed_fp32_equals_conv2d_with_post_ops(k, bias, size):
    conv = _conv(48, 40, k, bias=bias)
    x, res = _x(2, 48, size, size), _x(2, 40, size, size, seed=2)
    ref = F.conv2d(x, conv.weight, conv.bias, padding=k // 2)
    conv.pack_(torch.float32)
    for kwargs, want in (({}, ref), ({"relu": True}, ref.relu()), ({"add": res}, ref + res),
                         ({"add": res, "relu": True}, (ref + res).relu())):
        got = conv(x, **kwargs)
        assert got.dtype == torch.float32 and got.is_contiguous(memory_format=CL)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=f"{kwargs.keys()}")
    # a 1x1 kernel is packed per input shape (another batch size's pack is oneDNN's slow
    # case), larger kernels once per C, H, W (one copy of the large weights for any batch)
    conv(x[:1])
    assert set(conv._packs) == ({x.shape, x[:1].shape} if k == 1 else {x.shape[1:]})


@torch.inference_mode()
def test_deep_fp32_input_runs_in_channel_slices_with_the_same_result():
    """fp32, 3x3, 1024 input channels at 14²-28²: run as two 512-channel convolutions summed
    through the residual post-op (onednn.input_pieces); the residual and ReLU still apply once."""
    conv = _conv(1024, 16, 3)
    x, res = _x(1, 1024, 14, 14), _x(1, 16, 14, 14, seed=2)
    assert onednn.input_pieces(torch.float32, x.shape, 3) == 2
    assert onednn.input_pieces(torch.bfloat16, x.shape, 3) == 1
    assert onednn.input_pieces(torch.float32, torch.Size([1, 1024, 7, 7]), 3) == 1
    ref = F.conv2d(x, conv.weight, conv.bias, padding=1)
    conv.pack_(torch.float32)
    got = conv(x, add=res, relu=True)
    assert len(conv._packs[x.shape[1:]]) == 2
    torch.testing.assert_close(got, (ref + res).relu(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(conv(x), ref, rtol=1e-4, atol=1e-4)


@torch.inference_mode()
def test_packed_bf16_under_autocast_matches_autocast_conv():
    conv = _conv(64, 32, 3)
    x, res = _x(1, 64, 28, 28), _x(1, 32, 28, 28, seed=2)
    with torch.autocast("cpu", torch.bfloat16):
        ref = conv(x)  # unpacked: autocast's own bf16 convolution
        conv.pack_(torch.bfloat16)
        got, got_add = conv(x), conv(x, add=res.bfloat16())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, ref, rtol=0, atol=0)  # the same oneDNN bf16 kernel
    # the residual is added to the float32 accumulator (one rounding), so it is at least as
    # close to the float32 result as autocast's conv-then-add
    exact = F.conv2d(x, conv.weight, conv.bias, padding=1) + res.bfloat16().float()
    assert (got_add.float() - exact).abs().max() <= (ref.float() + res.bfloat16().float() - exact).abs().max() * 1.01 + 1e-6


@torch.inference_mode()
def test_packed_only_where_its_dtype_is_computed():
    """A conv packed for fp32 under bf16 autocast (or for bf16 on plain fp32 input) computes as
    if unpacked; with gradients on it is the training convolution, unchanged."""
    conv = _conv(16, 8, 3)
    x = _x(1, 16, 12, 12)
    with torch.autocast("cpu", torch.bfloat16):
        want16 = conv(x)
        conv.pack_(torch.float32)
        assert conv(x).dtype == torch.bfloat16
        torch.testing.assert_close(conv(x), want16, rtol=0, atol=0)
    conv.pack_(torch.bfloat16)
    assert conv(x).dtype == torch.float32
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1), rtol=1e-5, atol=1e-5)
    with torch.inference_mode(False), torch.enable_grad():
        conv.pack_(torch.float32)
        w = conv.weight.clone().requires_grad_(True)
        conv.weight = torch.nn.Parameter(w)
        y = conv(x.clone(), add=torch.ones(1, 8, 12, 12), relu=True)
        assert y.requires_grad and y.grad_fn is not None


def test_for_inference_packs_the_render_networks_only_on_the_cpu_path():
    m = LSR(LSRConfig.reduced(), networks=RENDER_NETWORKS).for_inference_(dtype=torch.bfloat16)
    convs = [c for c in m.modules() if isinstance(c, EqualConv2d)]
    assert convs and all(c.pack_dtype == torch.bfloat16 for c in convs)
    for kwargs in ({"channels_last": False}, {"compile": True}):
        m = LSR(LSRConfig.reduced(), networks=RENDER_NETWORKS).for_inference_(**kwargs)
        assert all(c.pack_dtype is None for c in m.modules() if isinstance(c, EqualConv2d))


@torch.inference_mode()
def test_packed_model_renders_as_the_unpacked_one():
    """The whole render step, packed against the same model with packing switched off."""
    torch.manual_seed(0)
    base = LSR(LSRConfig.reduced(), networks=RENDER_NETWORKS)
    packed = LSR(base.config, networks=RENDER_NETWORKS)
    packed.load_state_dict(base.state_dict())
    base.for_inference_()
    packed.for_inference_()
    for c in base.modules():
        if isinstance(c, EqualConv2d):
            c.pack_dtype = None
    z = base.config.image_generator.z_dim
    lat = Latents(torch.randn(1, z), torch.randn(1, z))
    x = (torch.rand(2, 3, 224, 224) * 2 - 1).contiguous(memory_format=CL)
    a, b = base.render(x, base.prepare(lat)), packed.render(x, packed.prepare(lat))
    torch.testing.assert_close(b.layout_logits, a.layout_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(b.image, a.image, rtol=1e-3, atol=1e-3)
