"""Test-only: the parity vectors' deterministic VGG19 / VGG-Face weights, written as the
publishers' Keras ``.h5`` so that thead's real loader (``thead.assets.load_vgg19`` / ``load_vgg_face``) is what reads them.

Recipe (shared/parity/train/README.md, ``vgg_det_weights.json``): variable i of a network, in
Keras ``model.weights`` order, is drawn with ``numpy.random.default_rng(seed_base + i)``;
kernels (HWIO) ``standard_normal(S).astype(f32) * f32(sqrt(2 / prod(S[:-1])))``, biases
``uniform(-0.1, 0.1, S).astype(f32)``. sha256 over the little-endian float32 bytes of all
variables in order identifies each network.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np


def recipe_variables(spec: dict) -> list[tuple[str, str, np.ndarray]]:
    """(layer, 'kernel'|'bias', array) for every variable of one network's spec, in order."""
    out = []
    for v in spec["variables"]:
        shape = tuple(v["shape"])
        rng = np.random.default_rng(spec["seed_base"] + v["index"])
        if v["variable"] == "kernel":
            w = rng.standard_normal(shape).astype(np.float32) * np.float32(math.sqrt(2.0 / math.prod(shape[:-1])))
        else:
            w = rng.uniform(-0.1, 0.1, shape).astype(np.float32)
        out.append((v["layer"], v["variable"], w))
    return out


def sha256_of(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype="<f4").tobytes())
    return h.hexdigest()


def write_keras_h5(path: Path, layers: list[tuple[str, list[np.ndarray]]]) -> None:
    """Keras 2 ``save_weights`` layout: root attr ``layer_names``; per layer ``weight_names``
    and one dataset per weight (``<layer>/kernel:0``, ``<layer>/bias:0``)."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n, _ in layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.15.0"
        for name, weights in layers:
            g = f.create_group(name)
            names = [f"{name}/{'kernel' if i == 0 else 'bias'}:0" for i in range(len(weights))]
            g.attrs["weight_names"] = [n.encode() for n in names]
            for n, w in zip(names, weights):
                g.create_dataset(n, data=w)


def _by_layer(variables) -> dict[str, list[np.ndarray]]:
    layers: dict[str, list[np.ndarray]] = {}
    for layer, _, w in variables:
        layers.setdefault(layer, []).append(w)
    return layers


def write_vgg19_h5(spec: dict, path: Path) -> str:
    """Keras ``VGG19(include_top=False)``: input, block convs, a pool after each block."""
    layers = _by_layer(recipe_variables(spec))
    entries: list[tuple[str, list[np.ndarray]]] = [("input_1", [])]
    block = "block1"
    for name, weights in layers.items():
        if not name.startswith(block + "_"):
            entries.append((f"{block}_pool", []))
            block = name.split("_")[0]
        entries.append((name, weights))
    entries.append((f"{block}_pool", []))
    write_keras_h5(path, entries)
    return sha256_of(w for _, ws in layers.items() for w in ws)


def write_vgg_face_h5(spec: dict, path: Path) -> str:
    """The release's Sequential VGG-Face: weighted layers at their Keras list indices, the
    parameter-free ones (ZeroPadding2D, MaxPool, Flatten, Activation) between them."""
    variables = recipe_variables(spec)
    index_of = {v["layer"]: v["keras_layer_index"] for v in spec["variables"]}
    layers = _by_layer(variables)
    entries: list[tuple[str, list[np.ndarray]]] = []
    position = 0
    for name, weights in layers.items():
        while position < index_of[name]:
            entries.append((f"layer_{position}", []))
            position += 1
        entries.append((f"conv2d_{position}", weights))  # the loader matches by order, not name
        position += 1
    entries.extend([("flatten", []), ("activation", [])])
    write_keras_h5(path, entries)
    return sha256_of(w for ws in layers.values() for w in ws)


def h5_sha256(path: Path) -> str:
    """sha256 of every weight stored in a Keras ``.h5``, in the file's layer order."""
    import h5py

    def strs(values):
        return [v.decode() if isinstance(v, bytes) else str(v) for v in values]

    arrays = []
    with h5py.File(path, "r") as f:
        for name in strs(f.attrs["layer_names"]):
            for w in strs(f[name].attrs["weight_names"]):
                arrays.append(np.asarray(f[name][w]))
    return sha256_of(arrays)


def load_spec(parity_train_dir: Path) -> dict:
    return json.loads((Path(parity_train_dir) / "vgg_det_weights.json").read_text())
