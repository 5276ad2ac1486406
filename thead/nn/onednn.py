"""oneDNN convolutions for CPU inference: weights packed once, epilogues fused as post-ops.

An eager ``F.conv2d`` on the CPU reorders its plain OIHW weight into oneDNN's blocked layout on
every call; for the wide low-resolution layers that reorder costs as much as the arithmetic
(512 -> 512 channels at 14², fp32: 11.8 ms plain, 4.1 ms packed). ``pack`` does the reorder
once per input shape, in the render dtype, as inductor's freezing does; ``conv`` runs the packed weight with the
following ReLU or residual addition as a oneDNN post-op, applied to the float32 accumulator
before the one rounding to the output dtype (no extra pass over the output).

The ops used (``torch.ops.mkldnn._convolution_pointwise``, ``_reorder_convolution_weight``) are
the ones inductor lowers to; ``available()`` says whether this torch build has them, and a
packed convolution is used only when its dtype is the one the call would compute in (the
autocast dtype under CPU autocast, else the input's), so a model packed for fp32 still
renders correctly, just unpacked, under bf16 autocast.
"""

from __future__ import annotations

import torch
from torch import Tensor

_ONE = [1, 1]


def available() -> bool:
    """Whether this torch build runs packed oneDNN convolutions with post-ops."""
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return bool(torch.backends.mkldnn.is_available() and ops is not None
                    and hasattr(ops, "_convolution_pointwise") and hasattr(ops, "_reorder_convolution_weight"))
    except RuntimeError:
        return False


def pack(weight: Tensor, dtype: torch.dtype, padding: int, input_shape: torch.Size, stride: int = 1) -> Tensor:
    """The convolution weight [O, I, k, k] reordered once for oneDNN in ``dtype``, in the
    layout oneDNN picks for inputs of ``input_shape`` (an opaque mkldnn tensor)."""
    return torch.ops.mkldnn._reorder_convolution_weight(weight.detach().to(dtype).contiguous(), [padding, padding],
                                                        [stride, stride], _ONE, 1, list(input_shape))


def input_pieces(dtype: torch.dtype, shape: torch.Size, kernel_size: int) -> int:
    """How many equal slices of its input channels a packed convolution is run as (summed
    through the residual post-op). oneDNN's fp32 3x3 kernel slows down on very deep inputs at
    14²-28²: 1024 -> 256 channels at 28² ran at 134 GFLOP/s whole and 212 in two 512-channel
    halves, 1024 -> 512 at 14² 170 against 217; at 7² and 56², and in bf16, whole was as fast
    or faster (measured on this project's 2-core Zen 4, torch 2.13)."""
    c, h, w = shape[1], shape[2], shape[3]
    if dtype == torch.float32 and kernel_size == 3 and c >= 1024 and c % 512 == 0 and 14 * 14 <= h * w <= 28 * 28:
        return c // 512
    return 1


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype a convolution of ``x`` computes in here: CPU autocast's, else x's own."""
    if torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return x.dtype


def conv(x: Tensor, packed: Tensor, bias: Tensor | None, padding: int, dtype: torch.dtype, *,
         relu: bool = False, add: Tensor | None = None, stride: int = 1) -> Tensor:
    """``conv(x) + bias``, then ``+ add`` (a residual of the output's shape), then ReLU, in one
    oneDNN call; ``packed``/``bias`` in ``dtype``; output channels-last in ``dtype``."""
    x = x.to(dtype).contiguous(memory_format=torch.channels_last)
    pad, st = [padding, padding], [stride, stride]
    if add is None:
        return torch.ops.mkldnn._convolution_pointwise(x, packed, bias, pad, st, _ONE, 1, "relu" if relu else "none", [], "")
    add = add.to(dtype).contiguous(memory_format=torch.channels_last)
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, add, packed, bias, pad, st, _ONE, 1, "add", None, "relu" if relu else None, [], None)


def conv_slices(x: Tensor, packs: list[Tensor], bias: Tensor | None, padding: int, dtype: torch.dtype, *,
                relu: bool = False, add: Tensor | None = None) -> Tensor:
    """``conv`` with the weight packed as ``len(packs)`` equal slices of its input channels
    (``input_pieces``): each slice's convolution adds the previous result through the residual
    post-op; the bias and ``add`` enter once, the ReLU after the last."""
    step = x.shape[1] // len(packs)
    y = add
    for i, packed in enumerate(packs):
        y = conv(x[:, i * step : (i + 1) * step] if len(packs) > 1 else x, packed, bias if i == 0 else None, padding,
                 dtype, relu=relu and i == len(packs) - 1, add=y)
    return y
