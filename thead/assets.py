"""Every published file thead may download, and how the loss networks' ones are read.

The catalogue: each entry is a ``thead.download.Asset`` (mirrors, pin, cache folder), fetched
by ``thead.download.resolve_asset`` (one cache root, one hash policy, one progress display, one
offline rule). The LSR weights themselves are ``thead.release`` / ``thead.hub``; the metric
networks' files are in ``thead.eval.weights`` (same ``Asset`` type); the face parser is
mirrored on the Hub (``thead.faces.parsing``); FAN's are the face-alignment package's own
(``thead.faces.landmarks``).

VGG19 and VGG-Face come as Keras ``.h5`` files; ``load_vgg19`` / ``load_vgg_face`` download
one once, check it, convert it to safetensors in the cache (so ``h5py`` is needed only that
once) and build the network (``thead.nn.backbones.vgg``, which does no file I/O).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from thead.download import Asset, cache_root, remove_cached, resolve_asset
from thead.errors import WeightsError
from thead.progress import Progress

__all__ = ["VGG19_H5", "VGG_FACE_H5", "load_vgg19", "load_vgg_face", "read_keras_h5", "converted_cache"]

# Keras applications' own copy and the original release it mirrors; same bytes, md5 from
# keras/applications/vgg19.py (``file_hash``), the only digest the publisher gives.
VGG19_H5 = Asset(
    name="VGG19 (Keras ImageNet, no top)",
    filename="vgg19_keras_imagenet_notop.h5",
    urls=(
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "https://github.com/fchollet/deep-learning-models/releases/download/v0.1/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    md5="253f8cb515780f3b799900260a226db6",
    subdir="backbones",
)
# The widely circulated Keras conversion of VGG-Face (deepface's release); its publisher gives
# no checksum: checked by its tensor shapes (strict) and trusted on first use (its sha256 is
# recorded at the first download and in the converted copy's metadata).
VGG_FACE_H5 = Asset(
    name="VGG-Face (Keras)",
    filename="vgg_face_keras.h5",
    urls=("https://github.com/serengil/deepface_models/releases/download/v1.0/vgg_face_weights.h5",),
    subdir="backbones",
)


def converted_cache(asset: Asset, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the safetensors conversion of a Keras asset is kept."""
    return asset.cached_path(cache_dir).with_suffix(".safetensors")


def load_vgg19(path: str | os.PathLike | None = None, *, cache_dir=None, allow_download: bool = True, display: Progress | None = None):
    """``VGG19Features`` from ``path`` (Keras ``.h5`` or converted ``.safetensors``), else the
    publisher's file (downloaded once, md5-checked, converted, cached)."""
    from thead.nn.backbones.vgg import VGG19Features

    if path is not None:
        return _from_path(VGG19Features, Path(path))
    return VGG19Features.from_state(_converted(VGG19_H5, VGG19Features, cache_dir, allow_download, display), VGG19_H5.name)


def load_vgg_face(path: str | os.PathLike | None = None, *, cache_dir=None, allow_download: bool = True, display: Progress | None = None):
    """``VGGFace`` from ``path`` (``vgg_face_weights.h5`` or ``.safetensors``), else the
    published file (downloaded once, converted, cached)."""
    from thead.nn.backbones.vgg import VGGFace

    if path is not None:
        return _from_path(VGGFace, Path(path))
    return VGGFace.from_state(_converted(VGG_FACE_H5, VGGFace, cache_dir, allow_download, display), VGG_FACE_H5.name)


def _from_path(cls, path: Path):
    if path.suffix in (".h5", ".hdf5"):
        layers = read_keras_h5(path)
        return cls.from_keras_layers(layers if cls.__name__ == "VGG19Features" else list(layers.values()), str(path))
    return cls.from_state(_read_safetensors(path), str(path))


def _converted(asset: Asset, cls, cache_dir, allow_download: bool, display) -> dict[str, Tensor]:
    converted = converted_cache(asset, cache_dir)
    if converted.exists():
        return _read_safetensors(converted)
    h5 = resolve_asset(asset, cache_dir=Path(cache_dir) if cache_dir is not None else None, allow_download=allow_download, display=display)
    net = _from_path(cls, h5)
    from safetensors.torch import save_file

    from thead._atomic import atomic_file
    from thead._hash import sha256_file

    with atomic_file(converted) as tmp:
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        save_file(state, str(tmp), metadata={"source": asset.urls[0], "sha256_of_source": sha256_file(h5)})
    remove_cached(h5, Path(cache_dir) if cache_dir is not None else cache_root())
    return state


def read_keras_h5(path: Path) -> dict[str, tuple[Tensor, Tensor]]:
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


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise WeightsError(f"{path} does not exist") from None
    except Exception as e:  # safetensors' own error types on corrupt headers
        raise WeightsError(f"{path} is not a readable safetensors file ({e})") from None
