"""LPIPS v0.1 AlexNet: plumbing with random weights, the maths against a direct computation,
and loading of the published state-dict layouts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from thead.errors import WeightsError
from thead.eval.lpips import LPIPS, LPIPS_SCALE, LPIPS_SHIFT, lpips_heads_state, lpips_uint8
from thead.eval.metrics import images_to_tensor
from thead.nn.backbones.alexnet import AlexNetFeatures


@pytest.fixture(scope="module")
def model() -> LPIPS:
    torch.manual_seed(0)
    m = LPIPS()
    for head in m.heads:  # published heads are non-negative
        head.weight.data = head.weight.data.abs()
    return m


def test_alexnet_features_have_torchvision_layout():
    net = AlexNetFeatures()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes == {
        "features.0.weight": (64, 3, 11, 11), "features.0.bias": (64,),
        "features.3.weight": (192, 64, 5, 5), "features.3.bias": (192,),
        "features.6.weight": (384, 192, 3, 3), "features.6.bias": (384,),
        "features.8.weight": (256, 384, 3, 3), "features.8.bias": (256,),
        "features.10.weight": (256, 256, 3, 3), "features.10.bias": (256,),
    }
    taps = net(torch.zeros(1, 3, 224, 224))
    assert [tuple(t.shape[1:]) for t in taps] == [(64, 55, 55), (192, 27, 27), (384, 13, 13), (256, 13, 13), (256, 13, 13)]


def test_identical_images_give_zero_and_different_images_do_not(model, frame):
    real = images_to_tensor([frame, frame])
    fake = images_to_tensor([frame, np.roll(frame, 7, axis=1)])
    d = lpips_uint8(model, real, fake)
    assert d.shape == (2,) and d[0].item() == 0.0 and d[1].item() > 0.0
    assert lpips_uint8(model, fake, real)[1].item() == pytest.approx(d[1].item(), rel=1e-6)  # symmetric


def test_distance_equals_direct_computation(model, frame):
    torch.manual_seed(1)
    x0 = images_to_tensor([frame]).float() / 127.5 - 1
    x1 = (x0 + 0.2 * torch.randn_like(x0)).clamp(-1, 1)
    shift = torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1)
    scale = torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1)
    with torch.no_grad():
        f0 = [f.double().numpy()[0] for f in model.net((x0 - shift) / scale)]
        f1 = [f.double().numpy()[0] for f in model.net((x1 - shift) / scale)]
        ours = model.layer_distances(x0, x1)[0].double().numpy()
    for l, (a, b) in enumerate(zip(f0, f1)):
        # per pixel: unit-normalise over channels, squared difference, weighted sum over
        # channels with the head's weights, then the mean over pixels
        a = a / (np.sqrt((a**2).sum(0, keepdims=True)) + 1e-10)
        b = b / (np.sqrt((b**2).sum(0, keepdims=True)) + 1e-10)
        w = model.heads[l].weight.detach().double().numpy().reshape(-1, 1, 1)
        direct = (w * (a - b) ** 2).sum(0).mean()
        assert ours[l] == pytest.approx(direct, rel=1e-5)
    assert model(x0, x1).item() == pytest.approx(ours.sum(), rel=1e-6)


# The published files' tensors, written out from the published structures: torchvision's
# alexnet-owt-7be5be79.pth (features: Conv 3-64 k11, Conv 64-192 k5, Conv 192-384 k3, Conv 384-256
# k3, Conv 256-256 k3 at Sequential indices 0, 3, 6, 8, 10; classifier: Dropout, Linear
# 9216-4096, ReLU, Dropout, Linear 4096-4096, ReLU, Linear 4096-1000) and LPIPS v0.1's
# weights/v0.1/alex.pth (one NetLinLayer per tap: Sequential(Dropout, Conv2d(C, 1, 1, bias=False))).
TORCHVISION_ALEXNET = {
    "features.0.weight": (64, 3, 11, 11), "features.0.bias": (64,),
    "features.3.weight": (192, 64, 5, 5), "features.3.bias": (192,),
    "features.6.weight": (384, 192, 3, 3), "features.6.bias": (384,),
    "features.8.weight": (256, 384, 3, 3), "features.8.bias": (256,),
    "features.10.weight": (256, 256, 3, 3), "features.10.bias": (256,),
    "classifier.1.weight": (4096, 9216), "classifier.1.bias": (4096,),
    "classifier.4.weight": (4096, 4096), "classifier.4.bias": (4096,),
    "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,),
}
LPIPS_V01_ALEX = {
    "lin0.model.1.weight": (1, 64, 1, 1), "lin1.model.1.weight": (1, 192, 1, 1), "lin2.model.1.weight": (1, 384, 1, 1),
    "lin3.model.1.weight": (1, 256, 1, 1), "lin4.model.1.weight": (1, 256, 1, 1),
}


def test_published_key_and_shape_lists_load_strictly():
    # Cross-check of the AlexNet list against a published number: torchvision documents
    # 61,100,840 parameters for alexnet.
    assert sum(math.prod(s) for s in TORCHVISION_ALEXNET.values()) == 61_100_840
    torch.manual_seed(0)
    alex = {k: torch.randn(s) for k, s in TORCHVISION_ALEXNET.items()}
    heads = {k: torch.rand(s) for k, s in LPIPS_V01_ALEX.items()}
    m = LPIPS().load_published(alex, heads)
    # Every feature tensor sits where torchvision's index puts it; the classifier is dropped.
    ours = {f"features.{k}": v for k, v in m.net.features.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: s for k, s in TORCHVISION_ALEXNET.items() if k.startswith("features.")}
    for k, v in ours.items():
        assert torch.equal(v, alex[k]), k
    for l in range(5):  # tap l is weighted by lin{l}
        assert torch.equal(m.heads[l].weight, heads[f"lin{l}.model.1.weight"]), l
    del heads["lin4.model.1.weight"]
    with pytest.raises(WeightsError, match="lin4"):
        lpips_heads_state(heads)
    heads["lin4.model.1.weight"] = torch.rand(1, 256, 1, 1)
    with pytest.raises(RuntimeError, match="features.0.bias"):  # strict: a missing backbone tensor
        LPIPS().load_published({k: v for k, v in alex.items() if k != "features.0.bias"}, heads)
    with pytest.raises(RuntimeError, match="size mismatch"):  # strict: heads in the wrong order
        LPIPS().load_published(alex, heads | {"lin2.model.1.weight": heads["lin3.model.1.weight"]})


def test_pretrained_offline_is_a_clear_unavailable(tmp_path, monkeypatch):
    from thead.eval.weights import WeightsUnavailable

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsUnavailable, match="alexnet-owt-7be5be79.pth"):
        LPIPS.pretrained(cache_dir=tmp_path, allow_download=False)
