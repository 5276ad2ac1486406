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

Weights: ``from_file`` reads the Keras ``.h5`` (needs the optional ``h5py``) or thead's
converted ``.safetensors`` (keys = this module's state dict; widths are read from the shapes,
so a reduced-width file loads too). ``pretrained()`` downloads the publisher's file once,
checks its published hash, converts it to safetensors in thead's cache and loads that, so
``h5py`` is needed only for that one conversion.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thead._atomic import atomic_file
from thead._hash import sha256_file
from thead.errors import WeightsError

# Keras applications' own copy and the original release it mirrors; same bytes, md5 from
# keras/applications/vgg19.py (``file_hash``).
VGG19_URLS = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "https://github.com/fchollet/deep-learning-models/releases/download/v0.1/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
)
VGG19_MD5 = "253f8cb515780f3b799900260a226db6"
# The widely circulated Keras conversion of VGG-Face (deepface's release); its publisher gives
# no checksum, so the download is checked by its tensor shapes (strict) and its sha256 is
# recorded next to the converted copy.
VGG_FACE_URLS = ("https://github.com/serengil/deepface_models/releases/download/v1.0/vgg_face_weights.h5",)
VGG_FACE_MD5: str | None = None

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
    def from_file(cls, path: str | os.PathLike) -> VGG19Features:
        """A Keras ``.h5`` (ImageNet VGG19, with or without top) or thead's ``.safetensors``."""
        path = Path(path)
        if path.suffix in (".h5", ".hdf5"):
            layers = _read_keras_h5(path)
            state = {}
            for name in cls._layer_names():
                if name not in layers:
                    raise WeightsError(f"{path} has no layer {name}: not a Keras VGG19 weights file")
                kernel, bias = layers[name]
                state[f"convs.{name}.weight"], state[f"convs.{name}.bias"] = _hwio_to_oihw(kernel), bias
        else:
            state = _read_safetensors(path)
        widths = tuple(state[f"convs.block{b}_conv1.weight"].shape[0] for b in range(1, 6)) if _has_all(state, cls) else None
        if widths is None:
            raise WeightsError(f"{path} does not hold VGG19 block1..block5 convolutions")
        net = cls(widths)
        _load_strict(net, state, path)
        return net

    @classmethod
    def pretrained(cls, cache_dir: str | os.PathLike | None = None) -> VGG19Features:
        """The Keras ImageNet weights: downloaded once (md5-checked), converted, cached."""
        return cls.from_file(_cached_conversion(cls, "vgg19_keras_imagenet_notop", VGG19_URLS, VGG19_MD5, cache_dir))

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
    def from_file(cls, path: str | os.PathLike) -> VGGFace:
        """``vgg_face_weights.h5`` (Keras Sequential, layers in order) or thead's ``.safetensors``."""
        path = Path(path)
        names = cls._layer_names()
        if path.suffix in (".h5", ".hdf5"):
            layers = list(_read_keras_h5(path).values())  # file order = the Sequential's order
            if len(layers) != len(names):
                raise WeightsError(f"{path} has {len(layers)} weighted layers, VGG-Face has {len(names)}")
            state = {}
            for name, (kernel, bias) in zip(names, layers):
                key = f"convs.{name}" if name.startswith("conv") else name
                state[f"{key}.weight"], state[f"{key}.bias"] = _hwio_to_oihw(kernel), bias
        else:
            state = _read_safetensors(path)
        try:
            widths = tuple(state[f"convs.conv{b}_1.weight"].shape[0] for b in range(1, 6))
            fc_width, num_classes = state["fc6.weight"].shape[0], state["fc8.weight"].shape[0]
        except KeyError:
            raise WeightsError(f"{path} does not hold VGG-Face's conv1_1..fc8") from None
        net = cls(widths, fc_width, num_classes)
        _load_strict(net, state, path)
        return net

    @classmethod
    def pretrained(cls, cache_dir: str | os.PathLike | None = None) -> VGGFace:
        """``vgg_face_weights.h5``: downloaded once, checked by shape, converted, cached."""
        return cls.from_file(_cached_conversion(cls, "vgg_face_keras", VGG_FACE_URLS, VGG_FACE_MD5, cache_dir))


# -- weights plumbing ------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$THEAD_CACHE``, else ``$XDG_CACHE_HOME/thead``, else ``~/.cache/thead``."""
    if env := os.environ.get("THEAD_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "thead"


def _cached_conversion(cls, stem: str, urls: tuple[str, ...], md5: str | None, cache_dir) -> Path:
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "backbones"
    converted = folder / f"{stem}.safetensors"
    if converted.exists():
        return converted
    folder.mkdir(parents=True, exist_ok=True)
    h5 = folder / f"{stem}.h5"
    if not h5.exists():
        _download(urls, h5, md5)
    net = cls.from_file(h5)
    from safetensors.torch import save_file

    with atomic_file(converted) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp), metadata={"source": urls[0], "sha256_of_source": sha256_file(h5)})
    h5.unlink()
    return converted


def _download(urls: tuple[str, ...], target: Path, md5: str | None) -> None:
    errors = []
    for url in urls:
        try:
            response = urllib.request.urlopen(url, timeout=30)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', e)}")
            continue
        with response, atomic_file(target) as tmp, open(tmp, "wb") as f:
            h = hashlib.md5()
            try:
                while block := response.read(1 << 20):
                    h.update(block)
                    f.write(block)
            except (OSError, TimeoutError) as e:  # a dropped connection is not an output error
                raise WeightsError(f"download of {url} broke off ({e})") from None
            if md5 is not None and h.hexdigest() != md5:
                raise WeightsError(f"{url} has md5 {h.hexdigest()}, expected {md5}")
        return
    raise WeightsError(f"could not download {target.name} ({'; '.join(errors)}); download it yourself and pass its path")


def _read_keras_h5(path: Path) -> dict[str, tuple[Tensor, Tensor]]:
    """Layer name -> (kernel HWIO, bias) for every layer with weights, in the file's order."""
    try:
        import h5py
    except ImportError:
        raise WeightsError(f"reading {path.name} needs h5py (pip install h5py); it is needed once, to convert it") from None
    import numpy as np

    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f  # model.save() vs save_weights()
            out = {}
            for name in _h5_strs(root.attrs["layer_names"]):
                g = root[name]
                weights = _h5_strs(g.attrs["weight_names"])
                if not weights:
                    continue
                if len(weights) != 2:
                    raise WeightsError(f"{path}: layer {name} has {len(weights)} weights, expected kernel and bias")
                out[name] = tuple(torch.from_numpy(np.asarray(g[w], dtype=np.float32)) for w in weights)
            return out
    except (OSError, KeyError) as e:
        raise WeightsError(f"{path} is not a readable Keras weights file ({e})") from None


def _h5_strs(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _hwio_to_oihw(kernel: Tensor) -> Tensor:
    return kernel.permute(3, 2, 0, 1).contiguous()


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise WeightsError(f"{path} does not exist") from None
    except Exception as e:  # safetensors' own error types on corrupt headers
        raise WeightsError(f"{path} is not a readable safetensors file ({e})") from None


def _has_all(state: dict[str, Tensor], cls) -> bool:
    return all(f"convs.{n}.weight" in state for n in cls._layer_names())


def _load_strict(net: nn.Module, state: dict[str, Tensor], path: Path) -> None:
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
