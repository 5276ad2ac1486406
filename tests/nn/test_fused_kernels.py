"""thead.kernels: instance norm + modulation + leaky ReLU in two passes, built from C at run time.

Each kernel against a float64 reference (float32 and bfloat16, every operand form the networks
use), the build and its failures, and the networks with and without the kernels."""

from __future__ import annotations

import copy
import os
import shutil

import pytest
import torch
import torch.nn.functional as F

from thead import kernels
from thead.config import LSRConfig
from thead.model import LSR, RENDER_NETWORKS, Latents
from thead.nn.layers import InstanceNorm

CL = torch.channels_last


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    try:
        return kernels.load(tmp_path_factory.mktemp("kernels"))
    except kernels.KernelsUnavailable as e:
        pytest.skip(f"the fused kernels cannot be built here: {e}")


def _reference(x, gamma=None, beta=None, slope=None):
    """float64: IN per sample and channel (biased variance, eps 1e-3), then the modulation."""
    y = F.instance_norm(x.double(), eps=1e-3)
    if gamma is not None:
        y = y * (gamma.double()[:, :, None, None] if gamma.dim() == 2 else gamma.double())
    if beta is not None:
        y = y + (beta.double()[:, :, None, None] if beta.dim() == 2 else beta.double())
    return F.leaky_relu(y, slope) if slope is not None else y


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2 ** -8)])
@pytest.mark.parametrize("shape", [(2, 64, 28, 28), (1, 13, 5, 7), (2, 300, 3, 4)])
@torch.inference_mode()
def test_modulate_matches_the_float64_reference(lib, dtype, tol, shape):
    torch.manual_seed(0)
    n, c, h, w = shape
    x = (torch.randn(shape) * 3 + 40).to(dtype).contiguous(memory_format=CL)  # a large mean: no cancellation
    wide = torch.randn(n, 3 * c, h, w).to(dtype).contiguous(memory_format=CL)
    gamma, beta = wide[:, :c], wide[:, 2 * c :]  # channel slices, read in place
    per_channel = torch.randn(1, c).to(dtype), torch.randn(n, c).to(dtype)
    stats = lib.stats(x, 1e-3)
    mean, rstd = stats
    torch.testing.assert_close(mean.double(), x.double().mean((2, 3)), rtol=1e-6, atol=0)
    torch.testing.assert_close(rstd.double(), 1 / (x.double().var((2, 3), unbiased=False) + 1e-3).sqrt(), rtol=1e-5, atol=0)
    for g, b, slope in [(gamma, beta, 0.2), (gamma, None, None), (None, None, 0.2), (*per_channel, 0.2), (None, beta, None)]:
        got = lib.modulate(x, stats, g, b, slope)
        assert got.dtype == dtype and got.shape == x.shape and got.is_contiguous(memory_format=CL)
        want = _reference(x, g, b, slope)
        # bf16: one rounding, half an ulp; fp32: the mean of values near 40 kept in float32
        err = (got.double() - want).abs() / want.abs().clamp_min(1.0)
        assert err.max().item() <= tol, (g is None, b is None, slope)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 24, 14, 10), (1, 16, 1, 3), (1, 40, 28, 28)])
@torch.inference_mode()
def test_upsampled_variants_equal_the_kernels_on_the_upsampled_tensor(lib, dtype, shape):
    """stats/modulate(upsample=True) work on interpolate(x, 2, bilinear) without writing it."""
    torch.manual_seed(1)
    n, c, h, w = shape
    x = (torch.randn(shape) * 2 + 5).to(dtype).contiguous(memory_format=CL)
    up = F.interpolate(x.float(), scale_factor=2.0, mode="bilinear").double()  # not rounded to bf16
    wide = torch.randn(n, 2 * c, 2 * h, 2 * w).to(dtype).contiguous(memory_format=CL)
    gamma, beta = wide[:, :c], wide[:, c:]
    mean, rstd = lib.stats(x, 1e-3, upsample=True)
    torch.testing.assert_close(mean.double(), up.mean((2, 3)), rtol=1e-6, atol=0)
    torch.testing.assert_close(rstd.double(), 1 / (up.var((2, 3), unbiased=False) + 1e-3).sqrt(), rtol=1e-5, atol=0)
    ones = (torch.zeros(n, c), torch.ones(n, c))  # mean 0, rstd 1: the upsampling itself, rounded once
    if dtype == torch.bfloat16:  # within the one rounding
        torch.testing.assert_close(lib.modulate(x, ones, upsample=True).double(), up, rtol=2 ** -8, atol=0)
    else:  # float32 sums in another order: a few ulps
        torch.testing.assert_close(lib.modulate(x, ones, upsample=True).double(), up, rtol=0,
                                   atol=4 * 2 ** -23 * up.abs().max().item())
    stats = (mean, rstd)
    for g, b, slope in [(gamma, beta, 0.2), (gamma, None, None)]:
        got = lib.modulate(x, stats, g, b, slope, upsample=True)
        assert got.shape == (n, c, 2 * h, 2 * w) and got.is_contiguous(memory_format=CL)
        want = _reference(up, g, b, slope)
        err = (got.double() - want).abs() / want.abs().clamp_min(1.0)
        assert err.max().item() <= (1e-5 if dtype == torch.float32 else 2 ** -8)


@torch.inference_mode()
def test_kernels_refuse_what_they_do_not_handle(lib):
    nchw = torch.randn(1, 16, 8, 8)
    assert not lib.supports(nchw) and not lib.supports(nchw.half().contiguous(memory_format=CL))
    with pytest.raises(ValueError, match="channels-last"):
        lib.stats(nchw, 1e-3)
    x = torch.randn(2, 16, 8, 8).contiguous(memory_format=CL)
    stats = lib.stats(x, 1e-3)
    with pytest.raises(ValueError, match="modulation of shape"):
        lib.modulate(x, stats, torch.randn(2, 8, 8, 8))
    with pytest.raises(ValueError, match="statistics of shape"):
        lib.modulate(x[:1], stats)
    with torch.enable_grad():
        assert not lib.supports(x.requires_grad_())


def test_load_builds_once_and_reuses_the_library(tmp_path):
    try:
        first = kernels.load(tmp_path)
    except kernels.KernelsUnavailable as e:
        pytest.skip(f"the fused kernels cannot be built here: {e}")
    built = list(tmp_path.glob("instance_norm-*.so"))
    assert len(built) == 1 and not list(tmp_path.glob(".instance_norm-*"))  # no temporary left
    mtime = built[0].stat().st_mtime_ns
    second = kernels.load(tmp_path)
    assert second.path == first.path and built[0].stat().st_mtime_ns == mtime


def test_load_says_why_it_cannot(tmp_path, monkeypatch):
    monkeypatch.setenv(kernels.ENV_SWITCH, "0")
    with pytest.raises(kernels.KernelsUnavailable, match="turned off"):
        kernels.load(tmp_path)
    monkeypatch.delenv(kernels.ENV_SWITCH)
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, gcc or clang
    monkeypatch.setenv("CC", "no-such-compiler")
    with pytest.raises(kernels.KernelsUnavailable, match="no C compiler"):
        kernels.load(tmp_path)
    broken = tmp_path / "cc"
    broken.write_text("#!/bin/sh\necho 'cc: error: this compiler is broken' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    with pytest.raises(kernels.KernelsUnavailable, match="could not build instance_norm.c: cc: error: this compiler is broken"):
        kernels.load(tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.so")) and not list((tmp_path / "cache").glob(".*"))
    monkeypatch.undo()  # the real PATH and $CC: a compiler, but nowhere to put the library
    (tmp_path / "a-file").write_text("")
    if shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"):
        with pytest.raises(kernels.KernelsUnavailable, match="cannot write to"):
            kernels.load(tmp_path / "a-file" / "kernels")


def _render(model, latents, contour, dtype):
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=dtype == torch.bfloat16):
        return model.render(contour, model.prepare(latents))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_networks_render_the_same_with_and_without_the_kernels(lib, dtype, monkeypatch, tmp_path):
    monkeypatch.setenv("THEAD_CACHE", str(tmp_path))
    torch.manual_seed(0)
    config = LSRConfig.reduced()
    base = LSR(config, networks=RENDER_NETWORKS)
    latents = Latents(torch.randn(1, config.z_dim), torch.randn(1, config.z_dim))
    contour = (torch.rand(2, 3, 224, 224) * 2 - 1).contiguous(memory_format=CL)
    fused = copy.deepcopy(base).for_inference_(dtype=dtype)
    eager = copy.deepcopy(base).for_inference_(dtype=dtype, fused_kernels=False)
    norms = [m for m in fused.modules() if isinstance(m, InstanceNorm)]
    assert norms and all(m.kernels is not None for m in norms)
    assert not any(m.kernels is not None for m in eager.modules() if isinstance(m, InstanceNorm))
    calls = []
    for m in norms:  # count what takes the fused path
        m.stats = (lambda f: lambda x, **kw: calls.append(kw.get("upsample", False)) or f(x, **kw))(m.stats)
    a, b = _render(fused, latents, contour, dtype), _render(eager, latents, contour, dtype)
    assert len(calls) >= 10  # every wide IN of G^l and G^s (3- and 4-channel ones stay eager)
    assert sum(calls) >= 3  # G^s blocks with a shortcut never write their upsampled input
    if dtype == torch.float32:
        torch.testing.assert_close(a.layout_logits, b.layout_logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(a.image, b.image, rtol=1e-4, atol=1e-4)
    else:  # bf16: the kernels round once where eager rounds after every pass
        agree = (a.layout_logits.argmax(1) == b.layout_logits.argmax(1)).float().mean().item()
        assert agree > 0.99
    # unavailable kernels: a warning, and the eager path renders
    monkeypatch.setenv(kernels.ENV_SWITCH, "off")
    with pytest.warns(RuntimeWarning, match="fused CPU kernels unavailable.*turned off"):
        off = copy.deepcopy(base).for_inference_(dtype=dtype)
    assert not any(m.kernels is not None for m in off.modules() if isinstance(m, InstanceNorm))
    assert torch.equal(_render(off, latents, contour, dtype).image, b.image)


def test_training_never_takes_the_kernels(lib):
    norm = InstanceNorm()
    norm.kernels = lib
    x = torch.randn(1, 16, 8, 8).contiguous(memory_format=CL).requires_grad_()
    assert not norm.fuses(x)
    y = norm.lrelu(x)
    y.sum().backward()
    assert x.grad is not None and os.environ.get(kernels.ENV_SWITCH) is None


def test_kernels_do_not_need_the_packed_convolutions(lib, monkeypatch, tmp_path):
    """A torch without oneDNN's post-op convolutions still renders with the kernels; the
    compiled and CUDA-bound paths (no channels-last CPU rendering) do not take them."""
    from thead.nn import onednn

    monkeypatch.setenv("THEAD_CACHE", str(tmp_path))
    monkeypatch.setattr(onednn, "available", lambda: False)
    model = LSR(LSRConfig.reduced(), networks=RENDER_NETWORKS).for_inference_()
    norms = [m for m in model.modules() if isinstance(m, InstanceNorm)]
    assert norms and all(m.kernels is not None for m in norms)
    for kwargs in ({"channels_last": False}, {"fused_kernels": False}):
        other = LSR(LSRConfig.reduced(), networks=RENDER_NETWORKS).for_inference_(**kwargs)
        assert not any(m.kernels is not None for m in other.modules() if isinstance(m, InstanceNorm))
