"""VGG19 / VGG-Face backbones: Keras .h5 conversion, preprocessing, cached download.

The real weight files cannot be downloaded here; Keras-layout files with random weights at a
reduced width (the loader reads widths from the shapes) exercise the same code.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.fake_drive import FakeDrive
from thead import assets
from thead.assets import load_vgg19, load_vgg_face
from thead.download import Asset
from thead.errors import WeightsError
from thead.nn.backbones.vgg import VGG19Features, caffe_preprocess

WIDTHS = (4, 8, 8, 8, 8)


def _write_keras_h5(path, layers: list[tuple[str, list[np.ndarray]]]) -> None:
    """Keras 2 ``save_weights`` layout: root attr layer_names; per layer weight_names + datasets."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n, _ in layers]
        for name, weights in layers:
            g = f.create_group(name)
            names = [f"{name}/{'kernel' if i == 0 else 'bias'}:0" for i in range(len(weights))]
            g.attrs["weight_names"] = [n.encode() for n in names]
            for n, w in zip(names, weights):
                g.create_dataset(n, data=w)


def _conv(rng, k, cin, cout):
    return [rng.standard_normal((k, k, cin, cout)).astype(np.float32) * 0.1, rng.standard_normal(cout).astype(np.float32)]


def keras_vgg19_h5(path, rng):
    layers = [("input_1", [])]
    cin = 3
    for b, n in enumerate((2, 2, 4, 4, 4), start=1):  # the whole notop file, block5 included
        for i in range(1, n + 1):
            layers.append((f"block{b}_conv{i}", _conv(rng, 3, cin, WIDTHS[b - 1])))
            cin = WIDTHS[b - 1]
        layers.append((f"block{b}_pool", []))
    _write_keras_h5(path, layers)
    return dict(layers)


def test_caffe_preprocessing():
    x = -torch.ones(1, 3, 2, 2)
    x[:, 0] = 1.0  # pure red
    y = caffe_preprocess(x)
    assert y[0, :, 0, 0].tolist() == pytest.approx([-103.939, -116.779, 255 - 123.68])  # BGR minus ImageNet means


def test_vgg19_from_keras_h5(tmp_path):
    layers = keras_vgg19_h5(tmp_path / "vgg19.h5", np.random.default_rng(0))
    net = load_vgg19(tmp_path / "vgg19.h5")
    assert net.widths == WIDTHS and not any(p.requires_grad for p in net.parameters())
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    feats = net(x)
    assert [f.shape[1:] for f in feats] == [(4, 32, 32), (8, 16, 16), (8, 8, 8), (8, 4, 4), (8, 2, 2)]
    k, b = layers["block1_conv1"]
    ref = F.relu(F.conv2d(caffe_preprocess(x), torch.from_numpy(k).permute(3, 2, 0, 1), torch.from_numpy(b), padding=1))
    torch.testing.assert_close(feats[0], ref)  # HWIO -> OIHW, BGR input order, ReLU included
    # thead's converted form loads back to the same network
    from safetensors.torch import save_file

    save_file(net.state_dict(), str(tmp_path / "vgg19.safetensors"))
    again = load_vgg19(tmp_path / "vgg19.safetensors")
    for a, c in zip(again(x), feats):
        assert torch.equal(a, c)


def test_vgg_face_from_keras_sequential_h5(tmp_path):
    rng = np.random.default_rng(1)
    layers, cin, n = [], 3, 0
    for b, convs in enumerate((2, 2, 3, 3, 3)):
        for _ in range(convs):
            n += 1
            layers += [(f"zero_padding2d_{n}", []), (f"conv2d_{n}", _conv(rng, 3, cin, WIDTHS[b]))]
            cin = WIDTHS[b]
        layers.append((f"max_pooling2d_{b + 1}", []))
    layers += [("conv2d_14", _conv(rng, 7, cin, 16)), ("dropout_1", []), ("conv2d_15", _conv(rng, 1, 16, 16)),
               ("dropout_2", []), ("conv2d_16", _conv(rng, 1, 16, 5)), ("flatten_1", []), ("activation_1", [])]  # fmt: skip
    _write_keras_h5(tmp_path / "vgg_face_weights.h5", layers)
    net = load_vgg_face(tmp_path / "vgg_face_weights.h5")
    x = torch.rand(2, 3, 224, 224) * 2 - 1
    out = net(x)
    assert out.logits.shape == (2, 5) and torch.equal(net.logits(x), out.logits)
    assert [f.shape[1] for f in out.features] == list(WIDTHS) and all((f >= 0).all() for f in out.features)
    k, b = dict(layers)["conv2d_16"]
    assert torch.equal(net.fc8.weight[:, :, 0, 0], torch.from_numpy(k[0, 0]).T)


def test_wrong_files_are_weights_errors(tmp_path):
    _write_keras_h5(tmp_path / "other.h5", [("dense_1", _conv(np.random.default_rng(0), 1, 3, 4))])
    with pytest.raises(WeightsError, match="block1_conv1"):
        load_vgg19(tmp_path / "other.h5")
    with pytest.raises(WeightsError, match="weighted layers"):
        load_vgg_face(tmp_path / "other.h5")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(WeightsError, match="not a readable"):
        load_vgg19(tmp_path / "junk.safetensors")


def test_pretrained_downloads_checks_md5_converts_and_caches(tmp_path, monkeypatch):
    """Through thead's one downloader, from a local web server: md5 pin, conversion, cache."""
    src = tmp_path / "published.h5"
    keras_vgg19_h5(src, np.random.default_rng(2))
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    monkeypatch.setenv("THEAD_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("THEAD_OFFLINE", raising=False)
    with FakeDrive(tmp_path) as server:
        server.add("vgg19.h5", "vgg19.h5", src.read_bytes(), large=False)
        url = server.plain_url("vgg19.h5")
        monkeypatch.setattr(assets, "VGG19_H5", Asset("VGG19", "vgg19.h5", (url,), md5="0" * 32, subdir="backbones"))
        with pytest.raises(WeightsError, match="md5"):
            load_vgg19()
        assert not any(p.is_file() for p in cache.rglob("*"))  # nothing half-written
        monkeypatch.setattr(assets, "VGG19_H5", Asset("VGG19", "vgg19.h5", (url,), md5=md5, subdir="backbones"))
        net = load_vgg19()
    assert sorted(p.name for p in (cache / "backbones").iterdir()) == ["vgg19.safetensors"]  # the .h5 is not kept
    again = load_vgg19()  # from the cache, no download (the server is gone)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))


def test_unreachable_download_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("THEAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("THEAD_OFFLINE", raising=False)
    monkeypatch.setattr(assets, "VGG_FACE_H5", Asset("VGG-Face", "vgg_face.h5", ("http://127.0.0.1:9/vgg_face_weights.h5",), subdir="backbones"))
    with pytest.raises(WeightsError, match="could not be downloaded .*put vgg_face.h5 at") as e:
        load_vgg_face()
    assert "\n" not in str(e.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline: no network call at all
    with pytest.raises(WeightsError, match="downloads are off"):
        load_vgg_face()


@pytest.mark.parametrize("kernel", [7, 1])
@pytest.mark.parametrize("channels_last", [False, True])
def test_whole_map_convolutions_run_as_dense_layers_with_the_same_values(kernel, channels_last):
    """fc6 (7x7 on 7x7), fc7 and fc8 (1x1 on 1x1) as GEMMs equal the convolutions, in either
    weight layout; a larger map still takes the convolution."""
    from thead.nn.backbones.vgg import _as_dense

    torch.manual_seed(kernel)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    conv = torch.nn.Conv2d(16, 8, kernel).to(memory_format=fmt)
    x = torch.randn(3, 16, kernel, kernel).contiguous(memory_format=fmt)
    torch.testing.assert_close(_as_dense(conv, x), conv(x), rtol=1e-5, atol=1e-5)
    big = torch.randn(2, 16, kernel + 2, kernel + 2)
    assert torch.equal(_as_dense(conv, big), conv(big))


def test_training_offline_names_the_flags_and_checks_data_first(tmp_path, monkeypatch, capsys):
    """HF_HUB_OFFLINE: no download is attempted, the error names --vgg19 / --vgg-face; a missing
    data folder is reported before any loss network is fetched."""
    from thead.cli import main
    from thead.cli.train import _loss_networks
    from thead.download import DownloadError
    from thead.train.config import layout_pretraining, meta_learning

    monkeypatch.setenv("THEAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("THEAD_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match=r"downloads are off.*--vgg19 PATH"):
        _loss_networks(layout_pretraining(), None, None)
    h5 = tmp_path / "vgg19.h5"
    keras_vgg19_h5(h5, np.random.default_rng(3))
    with pytest.raises(DownloadError, match=r"downloads are off.*--vgg-face PATH"):
        _loss_networks(meta_learning(), h5, None)  # VGG19 given, VGG-Face still needed
    assert not (tmp_path / "cache").exists() or not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(assets, "VGG19_H5", Asset("VGG19", "v.h5", ("http://127.0.0.1:9/never",), subdir="backbones"))
    assert main(["train", "layout", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "data folder" in err and "does not exist" in err and "VGG19" not in err
