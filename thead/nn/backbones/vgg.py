"""Frozen VGG networks for LSR's perceptual, face-perceptual and identity losses (ref §5.1).

- ``VGG19Features``: Keras ``VGG19(include_top=False, weights='imagenet')`` up to
  ``block5_conv1``; returns relu1_1..relu5_1 (Keras convs include their ReLU). Weights: the Keras
  ImageNet file ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5`` (Caffe-converted; not
  torchvision's, which are RGB, [0,1]-normalised and retrained).
- ``VGGFace``: the Keras re-creation of Oxford VGG-Face (16 layers; ZeroPadding2D + conv pairs,
  fc6 as a 7x7 conv, fc7 and fc8 as 1x1 convs, 2622 identities) whose weights circulate as
  ``vgg_face_weights.h5`` (the file name the release hard-codes). Returns conv1_1..conv5_1
  post-ReLU and the fc8 logits (pre-softmax), which are also ID-SIM's embedding (ref §7).

Both take RGB NCHW in [-1, 1] and apply the release's preprocessing themselves:
``(x+1)/2·255``, RGB→BGR, minus the ImageNet BGR means (103.939, 116.779, 123.68) — ImageNet
means for VGG-Face too (ref §9.8).

Weights: ``from_keras_layers`` maps the Keras layers (HWIO kernels) and ``from_state`` takes
this module's state dict (widths are read from the shapes, so a reduced-width file loads too).
No file I/O here: ``thead.assets`` downloads, reads and caches the publishers' files.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thead.errors import WeightsError

CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
VGG_WIDTHS = (64, 128, 256, 512, 512)


def caffe_preprocess(x: Tensor) -> Tensor:
    """RGB NCHW in [-1, 1] -> Keras 'caffe' input: BGR in [0, 255] minus the ImageNet BGR means.

    ``(x+1)/2·255`` without clipping (G^s's output is unbounded), ref §5.1.
    """
    x = (x + 1) / 2 * 255
    mean = torch.tensor(CAFFE_BGR_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return x.flip(1) - mean


def _conv(in_ch: int, out_ch: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, k, padding=k // 2)


def _conv_stack(blocks: tuple[int, ...], widths: tuple[int, ...], name: str) -> tuple[nn.ModuleDict, int]:
    """VGG's 3x3 convolutions, ``blocks[b]`` of width ``widths[b]`` per block, named by
    ``name.format(b=block, i=conv)`` (1-based); returns them and the last width."""
    convs, c = nn.ModuleDict(), 3
    for b, (n, w) in enumerate(zip(blocks, widths), start=1):
        for i in range(1, n + 1):
            convs[name.format(b=b, i=i)] = _conv(c, w)
            c = w
    return convs, c


class _Frozen(nn.Module):
    """A loss network: no parameter takes gradients, always in eval mode."""

    def freeze(self) -> _Frozen:
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> _Frozen:  # noqa: ARG002 - frozen networks stay in eval
        return super().train(False)


class VGG19Features(_Frozen):
    """Keras VGG19 convolutions block1_conv1..block5_conv1 (3x3 'same', ReLU; 2x2/2 max-pool
    between blocks). forward: RGB [N, 3, H, W] in [-1, 1] -> [relu1_1, relu2_1, relu3_1,
    relu4_1, relu5_1] with widths ``widths`` at H, H/2, H/4, H/8, H/16.
    Keras layer names are this module's child names (``block3_conv2`` ...)."""

    BLOCKS = (2, 2, 4, 4, 1)  # convolutions per block that the loss needs (block5 stops at conv1)

    def __init__(self, widths: tuple[int, ...] = VGG_WIDTHS):
        super().__init__()
        self.widths = tuple(widths)
        self.convs, _ = _conv_stack(self.BLOCKS, self.widths, "block{b}_conv{i}")
        self.freeze()

    def forward(self, x: Tensor) -> list[Tensor]:
        h = caffe_preprocess(x)
        feats = []
        for b, n in enumerate(self.BLOCKS, start=1):
            if b > 1:
                h = F.max_pool2d(h, 2)
            for i in range(1, n + 1):
                h = F.relu(self.convs[f"block{b}_conv{i}"](h))
                if i == 1:
                    feats.append(h)
        return feats

    @classmethod
    def from_keras_layers(cls, layers: dict[str, tuple[Tensor, Tensor]], source: str = "weights") -> VGG19Features:
        """From Keras layers (name -> (kernel HWIO, bias)) of an ImageNet VGG19, with or without top."""
        state = {}
        for name in cls._layer_names():
            if name not in layers:
                raise WeightsError(f"{source} has no layer {name}: not a Keras VGG19 weights file")
            kernel, bias = layers[name]
            state[f"convs.{name}.weight"], state[f"convs.{name}.bias"] = _hwio_to_oihw(kernel), bias
        return cls.from_state(state, source)

    @classmethod
    def from_state(cls, state: dict[str, Tensor], source: str = "weights") -> VGG19Features:
        """From this module's state dict (widths read from the shapes)."""
        if not _has_all(state, cls):
            raise WeightsError(f"{source} does not hold VGG19 block1..block5 convolutions")
        net = cls(tuple(state[f"convs.block{b}_conv1.weight"].shape[0] for b in range(1, 6)))
        _load_strict(net, state, source)
        return net

    @classmethod
    def _layer_names(cls) -> list[str]:
        return [f"block{b}_conv{i}" for b, n in enumerate(cls.BLOCKS, start=1) for i in range(1, n + 1)]


@dataclass(frozen=True)
class VGGFaceOutput:
    """features: conv1_1, conv2_1, conv3_1, conv4_1, conv5_1 after ReLU; logits: fc8 [N, 2622]."""

    features: list[Tensor]
    logits: Tensor


class VGGFace(_Frozen):
    """Oxford VGG-Face as Keras re-creates it: 13 3x3 convs (2,2,3,3,3 per block, ReLU, 2x2/2
    max-pool after each block), fc6 = 7x7 'valid' conv to 4096 + ReLU, fc7 = 1x1 conv + ReLU,
    fc8 = 1x1 conv to 2622 (no softmax; Dropout is a no-op at inference). Input RGB
    [N, 3, 224, 224] in [-1, 1]. Child names follow the Caffe model (``conv3_2``, ``fc6``)."""

    BLOCKS = (2, 2, 3, 3, 3)

    def __init__(self, widths: tuple[int, ...] = VGG_WIDTHS, fc_width: int = 4096, num_classes: int = 2622):
        super().__init__()
        self.widths = tuple(widths)
        self.convs, c = _conv_stack(self.BLOCKS, self.widths, "conv{b}_{i}")
        self.fc6 = nn.Conv2d(c, fc_width, 7)
        self.fc7 = nn.Conv2d(fc_width, fc_width, 1)
        self.fc8 = nn.Conv2d(fc_width, num_classes, 1)
        self.freeze()

    def forward(self, x: Tensor) -> VGGFaceOutput:
        h = caffe_preprocess(x)
        feats = []
        for b, n in enumerate(self.BLOCKS, start=1):
            for i in range(1, n + 1):
                h = F.relu(self.convs[f"conv{b}_{i}"](h))
                if i == 1:
                    feats.append(h)
            h = F.max_pool2d(h, 2)
        h = F.relu(_as_dense(self.fc7, F.relu(_as_dense(self.fc6, h))))
        return VGGFaceOutput(features=feats, logits=_as_dense(self.fc8, h).flatten(1))

    def logits(self, x: Tensor) -> Tensor:
        """fc8 logits [N, 2622]: ID-SIM's embedding (ref §7)."""
        return self(x).logits

    @classmethod
    def _layer_names(cls) -> list[str]:
        convs = [f"conv{b}_{i}" for b, n in enumerate(cls.BLOCKS, start=1) for i in range(1, n + 1)]
        return convs + ["fc6", "fc7", "fc8"]

    @classmethod
    def from_keras_layers(cls, layers: list[tuple[Tensor, Tensor]], source: str = "weights") -> VGGFace:
        """From the weighted layers of ``vgg_face_weights.h5`` in file order (the Sequential's)."""
        names = cls._layer_names()
        if len(layers) != len(names):
            raise WeightsError(f"{source} has {len(layers)} weighted layers, VGG-Face has {len(names)}")
        state = {}
        for name, (kernel, bias) in zip(names, layers):
            key = f"convs.{name}" if name.startswith("conv") else name
            state[f"{key}.weight"], state[f"{key}.bias"] = _hwio_to_oihw(kernel), bias
        return cls.from_state(state, source)

    @classmethod
    def from_state(cls, state: dict[str, Tensor], source: str = "weights") -> VGGFace:
        """From this module's state dict (widths read from the shapes)."""
        try:
            widths = tuple(state[f"convs.conv{b}_1.weight"].shape[0] for b in range(1, 6))
            fc_width, num_classes = state["fc6.weight"].shape[0], state["fc8.weight"].shape[0]
        except KeyError:
            raise WeightsError(f"{source} does not hold VGG-Face's conv1_1..fc8") from None
        net = cls(widths, fc_width, num_classes)
        _load_strict(net, state, source)
        return net


# -- helpers ----------------------------------------------------------------------------------


def _hwio_to_oihw(kernel: Tensor) -> Tensor:
    return kernel.permute(3, 2, 0, 1).contiguous()


def _has_all(state: dict[str, Tensor], cls) -> bool:
    return all(f"convs.{n}.weight" in state for n in cls._layer_names())


def _load_strict(net: nn.Module, state: dict[str, Tensor], path: str) -> None:
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise WeightsError(f"{path}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise WeightsError(f"{path}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    net.load_state_dict(state)


def _as_dense(conv: nn.Conv2d, h: Tensor) -> Tensor:
    """A convolution whose kernel covers the whole map is a dense layer: run it as a GEMM.

    At 224 px fc6 (7x7 on a 7x7 map), fc7 and fc8 (1x1 on 1x1) are; oneDNN's single-output-pixel
    convolution re-lays out the weight on every call (fc6 ~50x slower on the CPU, fc7's backward
    111 ms against ~10). Same sums up to float rounding. Flattening follows the weight's memory
    order, so a channels-last weight is read as a view (flattening it NCHW copied 411 MB per call).
    """
    w = conv.weight
    if h.shape[-2:] != w.shape[-2:]:
        return conv(h)
    if not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last):
        return F.linear(h.permute(0, 2, 3, 1).flatten(1), w.permute(0, 2, 3, 1).flatten(1), conv.bias)[:, :, None, None]
    return F.linear(h.flatten(1), w.flatten(1), conv.bias)[:, :, None, None]
