"""Exact rewrites of the inference path, each against the module it rewrites: G^s's shortcut
with W·β folded into its SPADE's β convolution, G^l's conv1 + blur pooling as one strided 5x5
convolution (with the blur's zero padding after the last row and column recomputed), and G^l's
conv0 of the upsampling as a 4-phase convolution at the input's resolution."""

from __future__ import annotations

import copy

import pytest
import torch

from thead.nn import onednn
from thead.nn.generator import SPADEResBlock
from thead.nn.layers import SPADE, EqualConv2d
from thead.nn.layout import ResBlockDown, ResBlockUp

CL = torch.channels_last


def _prepare_(module: torch.nn.Module) -> torch.nn.Module:
    """What LSR.for_inference_ does to these blocks, in its order."""
    module.eval().requires_grad_(False)
    for m in module.modules():
        if isinstance(m, SPADE):
            m.fuse_()
    for m in module.modules():
        if isinstance(m, EqualConv2d):
            m.fold_scale_()
    return module.to(memory_format=CL)


def _randomise_(module: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 1 if p.ndim > 1 else 0.3)
    return module


@torch.inference_mode()
def test_spade_shortcut_with_beta_folded_equals_the_block():
    ref = _randomise_(SPADEResBlock(64, 32, label_nc=19, hidden=16)).eval()
    fast = _prepare_(copy.deepcopy(ref))
    fast.shortcut.fold_beta_()
    fast.shortcut.fold_beta_()  # idempotent
    gb = fast.shortcut.spade_norm.gamma_beta_conv
    assert gb.weight.shape[0] == 64 + 32  # γ for C_in, W·β for C_out (2·C_in before)
    torch.manual_seed(1)
    x = torch.randn(2, 64, 28, 28).contiguous(memory_format=CL)
    layout = torch.softmax(torch.randn(2, 19, 28, 28), 1).contiguous(memory_format=CL)
    want = ref(x.contiguous(), layout.contiguous())
    torch.testing.assert_close(fast(x, layout), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    with pytest.raises(ValueError, match="1x1"):
        fast.conv_block0.fold_beta_()  # a 3x3 conv after an activation: no such identity


@pytest.mark.skipif(not onednn.available(), reason="this torch build has no oneDNN post-op convolutions")
@pytest.mark.parametrize("cin,cout,size", [(3, 64, 32), (32, 64, 28), (64, 64, 56)])
@torch.inference_mode()
def test_res_block_down_with_blur_folded_equals_the_block(cin, cout, size):
    ref = _randomise_(ResBlockDown(cin, cout)).eval()
    fast = _prepare_(copy.deepcopy(ref))
    for m in fast.modules():
        if isinstance(m, EqualConv2d):
            m.pack_(torch.float32)
    fast.fold_blur_(torch.float32)
    torch.manual_seed(1)
    x = torch.randn(2, cin, size, size).contiguous(memory_format=CL)
    want = ref(x.contiguous())
    got = fast(x)
    assert got.shape == want.shape == (2, cout, size // 2, size // 2)
    scale = want.abs().max().item()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * scale)
    # the border rows and columns that the 5x5 form gets wrong are recomputed
    torch.testing.assert_close(got[:, :, -1], want[:, :, -1], rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(got[:, :, :, -1], want[:, :, :, -1], rtol=1e-4, atol=1e-5 * scale)
    # odd and small sizes (TF pads the blur 1/1 on odd ones) take the direct path
    for n in (7, 14):
        small = torch.randn(1, cin, n, n).contiguous(memory_format=CL)
        torch.testing.assert_close(fast(small), ref(small.contiguous()), rtol=1e-4, atol=1e-4)
    # under bf16 autocast a block folded for fp32 computes as autocast would (unfolded)
    with torch.autocast("cpu", torch.bfloat16):
        assert fast(x).dtype == torch.bfloat16


@pytest.mark.skipif(not onednn.available(), reason="this torch build has no oneDNN post-op convolutions")
@torch.inference_mode()
def test_res_block_up_with_upsampling_folded_equals_the_block():
    ref = _randomise_(ResBlockUp(24, 8, z_dim=16)).eval()
    fast = _prepare_(copy.deepcopy(ref))
    fast.fuse_()
    for m in fast.modules():
        if isinstance(m, EqualConv2d):
            m.pack_(torch.float32)
    fast.fold_upsample_(torch.float32)
    torch.manual_seed(1)
    styles = ref.styles(torch.randn(1, 16))
    x = torch.randn(2, 24, 112, 112).contiguous(memory_format=CL)
    want = ref(x.contiguous(), styles)
    calls = []
    fast._conv0_up = (lambda f: lambda a: calls.append(a.shape) or f(a))(fast._conv0_up)
    got = fast(x, styles)
    assert calls and got.shape == want.shape == (2, 8, 224, 224)
    scale = want.abs().max().item()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * scale)
    for border in (got[:, :, :2] - want[:, :, :2], got[:, :, -2:] - want[:, :, -2:],
                   got[:, :, :, :2] - want[:, :, :, :2], got[:, :, :, -2:] - want[:, :, :, -2:]):
        assert border.abs().max().item() <= 1e-5 * scale
    small = torch.randn(1, 24, 28, 28).contiguous(memory_format=CL)  # below 112²: the direct path
    calls.clear()
    torch.testing.assert_close(fast(small, styles), ref(small.contiguous(), styles), rtol=1e-4, atol=1e-4)
    assert not calls
