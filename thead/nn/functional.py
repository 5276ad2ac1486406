"""Convolution and blur pooling whose first *and second* derivatives are oneDNN/cuDNN kernels.

R1 and R2 (ref §5.1) differentiate D's input gradient once more. PyTorch's generic double
backward of a convolution computes the weight term as a convolution whose kernel is the whole
image (and loops over the groups of a depthwise one), and copies every operand to a transposed
layout first: on this 2-core CPU that was 2.4 s of a 5.1 s D backward pass at batch 4, for a
few GFLOPs of work. Here a convolution has three linear maps,

    forward  F(x, W)        y = conv(x, W)
    data     Bx(gy, W)      the input gradient   = ∂<gy, F(x, W)>/∂x
    weight   Bw(x, gy)      the weight gradient  = ∂<gy, F(x, W)>/∂W

and each is a differentiable ``autograd.Function`` whose backward is built from the others
(``<ggx, Bx(gy, W)> = <gy, F(ggx, W)>``, ``<ggW, Bw(x, gy)> = <gy, F(x, ggW)>``), so every
derivative of any order runs as a forward, backward-data or backward-weight primitive of the
library, never as an image-sized kernel. Plain backward passes (no ``create_graph``) take one
fused ``convolution_backward`` call, as ``F.conv2d`` does. Pure Python over ATen: no
extension, no global switch; ``tests/nn/test_functional.py`` checks values and first and
second derivatives against PyTorch's own.

Only stride-1, symmetric-padding, ungrouped convolutions (every ``EqualConv2d``, whenever
gradients are on) and the fixed depthwise blur of ``BlurDown`` go through here. The plain maps
(``conv_data``, ``conv_weight``, ``blur``, ``blur_adjoint``) are also the building blocks of
the training step's written-out D update (``thead.train.adversarial``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function

_conv_backward = torch.ops.aten.convolution_backward


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, padding: int) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` (stride 1) with cheap double backward."""
    return _Conv.apply(x, weight, bias, padding)


def _is_cl(t: Tensor) -> bool:
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)


def _in_format(t: Tensor, channels_last: bool) -> Tensor:
    """Gradients arrive in whatever layout the next op produced; give oneDNN the one its forward
    pass used (else it copies, or runs the slow layout)."""
    return t.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _wanted(ctx, i: int) -> bool:
    """Whether the running backward pass uses input i's gradient. ``needs_input_grad`` only says
    it *could*: R1/R2's ``autograd.grad(..., [image])`` must not pay for D's weight gradients."""
    if not ctx.needs_input_grad[i]:
        return False
    node = ctx.next_functions[i][0]
    try:
        return node is not None and torch._C._will_engine_execute_node(node)
    except (AttributeError, RuntimeError):  # a leaf under autograd.grad, or an older torch
        return True


def _bwd(gy: Tensor, x: Tensor, w: Tensor, padding: int, mask: list[bool], bias: bool = False):
    return _conv_backward(gy, x, w, [w.shape[0]] if bias else None, [1, 1], [padding, padding], [1, 1], False, [0, 0], 1, mask)


def conv_data(gy: Tensor, w: Tensor, x: Tensor, padding: int) -> Tensor:
    """Bx(gy, W): the input gradient of a stride-1 convolution (``x`` gives shape and layout)."""
    return _bwd(gy, x, w, padding, [True, False, False])[0]


def conv_weight(gy: Tensor, x: Tensor, w: Tensor, padding: int) -> Tensor:
    """Bw(x, gy): the weight gradient, summed over the batch (``w`` gives the shape)."""
    return _bwd(gy, x, w, padding, [False, True, False])[1]


# Under CUDA autocast (the trainer's AMP) each Function runs in bf16 throughout: inputs cast on
# entry, backward in the same autocast state as forward.
_amp_fwd = torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.bfloat16)
_amp_bwd = torch.amp.custom_bwd(device_type="cuda")


class _Conv(Function):
    @staticmethod
    @_amp_fwd
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor | None, padding: int) -> Tensor:
        y = F.conv2d(x, w, b, padding=padding)
        ctx.save_for_backward(x, w)
        ctx.padding, ctx.cl = padding, _is_cl(y)
        return y

    @staticmethod
    @_amp_bwd
    def backward(ctx, gy: Tensor):
        x, w = ctx.saved_tensors
        p = ctx.padding
        need_x, need_w, need_b = (_wanted(ctx, i) for i in range(3))
        gy = _in_format(gy, ctx.cl)
        if not torch.is_grad_enabled():  # plain backward: one fused call
            gx, gw, gb = _bwd(gy, x, w, p, [need_x, need_w, need_b], bias=need_b)
            return gx, gw, gb, None
        gx = _ConvData.apply(gy, w, x, p) if need_x else None
        gw = _ConvWeight.apply(gy, x, w, p) if need_w else None
        gb = gy.sum((0, 2, 3)) if need_b else None
        return gx, gw, gb, None


class _ConvData(Function):
    """Bx(gy, W); ``x`` only gives the shape and layout of the result."""

    @staticmethod
    @_amp_fwd
    def forward(ctx, gy: Tensor, w: Tensor, x: Tensor, padding: int) -> Tensor:
        gx = conv_data(gy, w, x, padding)
        ctx.save_for_backward(gy, w)
        ctx.padding, ctx.cl = padding, _is_cl(gx)
        return gx

    @staticmethod
    @_amp_bwd
    def backward(ctx, ggx: Tensor):
        gy, w = ctx.saved_tensors
        p = ctx.padding
        ggx = _in_format(ggx, ctx.cl)
        d_gy = _Conv.apply(ggx, w, None, p) if _wanted(ctx, 0) else None
        d_w = _ConvWeight.apply(gy, ggx, w, p) if _wanted(ctx, 1) else None
        return d_gy, d_w, None, None


class _ConvWeight(Function):
    """Bw(x, gy); ``w`` only gives the shape of the result."""

    @staticmethod
    @_amp_fwd
    def forward(ctx, gy: Tensor, x: Tensor, w: Tensor, padding: int) -> Tensor:
        ctx.save_for_backward(gy, x)
        ctx.padding = padding
        return conv_weight(gy, x, w, padding)

    @staticmethod
    @_amp_bwd
    def backward(ctx, ggw: Tensor):
        gy, x = ctx.saved_tensors
        p = ctx.padding
        ggw = ggw.contiguous()
        d_gy = _Conv.apply(x, ggw, None, p) if _wanted(ctx, 0) else None
        d_x = _ConvData.apply(gy, ggw, x, p) if _wanted(ctx, 1) else None
        return d_gy, d_x, None, None


# -- blur pooling ------------------------------------------------------------------------------


def blur_down(x: Tensor, kernel: Tensor, pads: tuple[int, int, int, int]) -> Tensor:
    """Depthwise ``kernel`` [1, 1, k, k], stride 2, after zero padding ``pads`` (F.pad order).

    A fixed linear map B; its adjoint Bᵀ is the transposed convolution cropped to x's size, and
    the derivative of each is the other, so any order of gradient costs one depthwise pass.
    """
    return _Blur.apply(x, kernel, pads)


def _depthwise(kernel: Tensor, channels: int, dtype: torch.dtype) -> Tensor:
    return kernel.to(dtype).expand(channels, 1, *kernel.shape[-2:])


def blur(x: Tensor, kernel: Tensor, pads: tuple[int, int, int, int]) -> Tensor:
    """B(x), no autograd."""
    return F.conv2d(F.pad(x, pads), _depthwise(kernel, x.shape[1], x.dtype), stride=2, groups=x.shape[1])


def blur_adjoint(gy: Tensor, kernel: Tensor, pads: tuple[int, int, int, int], size: tuple[int, int]) -> Tensor:
    """Bᵀ(gy) for an input of spatial ``size``, no autograd; in gy's layout."""
    left, right, top, bottom = pads
    h, w = size
    k = kernel.shape[-1]
    # Transposed conv covers (out - 1)·2 + k rows; the padded input may have one more.
    extra = (h + top + bottom - ((gy.shape[-2] - 1) * 2 + k), w + left + right - ((gy.shape[-1] - 1) * 2 + k))
    c = gy.shape[1]
    g = F.conv_transpose2d(gy, _depthwise(kernel, c, gy.dtype), stride=2, groups=c, output_padding=extra)
    return _in_format(g[:, :, top : top + h, left : left + w], _is_cl(gy))


class _Blur(Function):
    @staticmethod
    @_amp_fwd
    def forward(ctx, x: Tensor, kernel: Tensor, pads: tuple[int, int, int, int]) -> Tensor:
        y = blur(x, kernel, pads)
        ctx.save_for_backward(kernel)
        ctx.pads, ctx.size, ctx.cl = pads, tuple(x.shape[-2:]), _is_cl(y)
        return y

    @staticmethod
    @_amp_bwd
    def backward(ctx, gy: Tensor):
        (kernel,) = ctx.saved_tensors
        return _BlurAdjoint.apply(_in_format(gy, ctx.cl), kernel, ctx.pads, ctx.size), None, None


class _BlurAdjoint(Function):
    @staticmethod
    @_amp_fwd
    def forward(ctx, gy: Tensor, kernel: Tensor, pads: tuple[int, int, int, int], size: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(kernel)
        ctx.pads, ctx.cl = pads, _is_cl(gy)
        return blur_adjoint(gy, kernel, pads, size)

    @staticmethod
    @_amp_bwd
    def backward(ctx, gg: Tensor):
        (kernel,) = ctx.saved_tensors
        return _Blur.apply(_in_format(gg, ctx.cl), kernel, ctx.pads), None, None, None
