"""FID: the Fréchet distance against scipy, streaming statistics, the Inception network's
plumbing (random weights) and its published layout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from thead.eval.fid import FeatureStats, InceptionFeatures, fid_from_stats, frechet_distance, resize_for_inception
from thead.nn.backbones.inception import FIDInceptionV3, pytorch_fid_state


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's sqrtm (pytorch-fid's computation)."""
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_distance_matches_scipy_on_random_features():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 48))
    b = rng.normal(0.2, 1.0, size=(300, 48)) @ rng.normal(size=(48, 48)) * 0.3
    sa, sb = FeatureStats(48), FeatureStats(48)
    for chunk in np.array_split(a, 3):  # streaming in batches = the whole set at once
        sa.add(chunk)
    sb.add(b)
    mu, cov = sa.mean_cov()
    assert np.allclose(mu, a.mean(0)) and np.allclose(cov, np.cov(a, rowvar=False))
    assert fid_from_stats(sa, sb) == pytest.approx(_scipy_fid(a, b), rel=1e-9)
    assert frechet_distance(*sa.mean_cov(), *sa.mean_cov()) == pytest.approx(0.0, abs=1e-9)


def test_identical_rank_deficient_sets_give_zero():
    # 32 frames of high-dimensional features, as one person's test frames: Σ has rank 31.
    a = np.random.default_rng(1).normal(1.0, 0.5, size=(32, 256))
    s = FeatureStats(256)
    s.add(a)
    mu, cov = s.mean_cov()
    assert abs(frechet_distance(mu, cov, mu, cov)) < 1e-9 * np.trace(cov)
    b = a + np.random.default_rng(2).normal(0, 0.05, size=a.shape)
    t = FeatureStats(256)
    t.add(b)
    assert frechet_distance(mu, cov, *t.mean_cov()) == pytest.approx(_scipy_fid(a, b), rel=1e-4)


def test_resize_is_pil_bicubic(frame):
    out = resize_for_inception(frame)
    assert out.shape == (299, 299, 3) and out.dtype == np.uint8
    assert np.array_equal(out, np.asarray(Image.fromarray(frame).resize((299, 299), Image.BICUBIC)))


# pytorch-fid's pt_inception-2015-12-05-6726825d.pth, written out from the published structure
# (pytorch-fid's fid_inception_v3: torchvision's Inception3 with aux_logits=False and 1008
# classes, its Mixed blocks swapped for FID subclasses that add no parameters). Each entry is a
# BasicConv2d (bias-free conv + BatchNorm): (name, in, out, kernel height, kernel width).
def _inception_a(cin: int, pool: int) -> list:
    return [("branch1x1", cin, 64, 1, 1), ("branch5x5_1", cin, 48, 1, 1), ("branch5x5_2", 48, 64, 5, 5),
            ("branch3x3dbl_1", cin, 64, 1, 1), ("branch3x3dbl_2", 64, 96, 3, 3), ("branch3x3dbl_3", 96, 96, 3, 3),
            ("branch_pool", cin, pool, 1, 1)]


def _inception_c(c7: int) -> list:
    return [("branch1x1", 768, 192, 1, 1),
            ("branch7x7_1", 768, c7, 1, 1), ("branch7x7_2", c7, c7, 1, 7), ("branch7x7_3", c7, 192, 7, 1),
            ("branch7x7dbl_1", 768, c7, 1, 1), ("branch7x7dbl_2", c7, c7, 7, 1), ("branch7x7dbl_3", c7, c7, 1, 7),
            ("branch7x7dbl_4", c7, c7, 7, 1), ("branch7x7dbl_5", c7, 192, 1, 7), ("branch_pool", 768, 192, 1, 1)]


def _inception_e(cin: int) -> list:
    return [("branch1x1", cin, 320, 1, 1), ("branch3x3_1", cin, 384, 1, 1), ("branch3x3_2a", 384, 384, 1, 3),
            ("branch3x3_2b", 384, 384, 3, 1), ("branch3x3dbl_1", cin, 448, 1, 1), ("branch3x3dbl_2", 448, 384, 3, 3),
            ("branch3x3dbl_3a", 384, 384, 1, 3), ("branch3x3dbl_3b", 384, 384, 3, 1), ("branch_pool", cin, 192, 1, 1)]


PT_INCEPTION_BLOCKS = {
    "": [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3), ("Conv2d_2b_3x3", 32, 64, 3, 3),
         ("Conv2d_3b_1x1", 64, 80, 1, 1), ("Conv2d_4a_3x3", 80, 192, 3, 3)],
    "Mixed_5b.": _inception_a(192, 32),
    "Mixed_5c.": _inception_a(256, 64),
    "Mixed_5d.": _inception_a(288, 64),
    "Mixed_6a.": [("branch3x3", 288, 384, 3, 3), ("branch3x3dbl_1", 288, 64, 1, 1), ("branch3x3dbl_2", 64, 96, 3, 3),
                  ("branch3x3dbl_3", 96, 96, 3, 3)],
    "Mixed_6b.": _inception_c(128),
    "Mixed_6c.": _inception_c(160),
    "Mixed_6d.": _inception_c(160),
    "Mixed_6e.": _inception_c(192),
    "Mixed_7a.": [("branch3x3_1", 768, 192, 1, 1), ("branch3x3_2", 192, 320, 3, 3), ("branch7x7x3_1", 768, 192, 1, 1),
                  ("branch7x7x3_2", 192, 192, 1, 7), ("branch7x7x3_3", 192, 192, 7, 1), ("branch7x7x3_4", 192, 192, 3, 3)],
    "Mixed_7b.": _inception_e(1280),
    "Mixed_7c.": _inception_e(2048),
}


def pt_inception_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor of the published FID Inception state dict and its shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    for block, convs in PT_INCEPTION_BLOCKS.items():
        for name, cin, cout, kh, kw in convs:
            shapes[f"{block}{name}.conv.weight"] = (cout, cin, kh, kw)
            for stat in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{block}{name}.bn.{stat}"] = (cout,)
    return shapes | {"fc.weight": (1008, 2048), "fc.bias": (1008,)}


def test_inception_loads_the_published_key_and_shape_list():
    published = pt_inception_shapes()
    # Cross-check of the list against a published number: torchvision documents 27,161,264
    # parameters for inception_v3 (1000 classes, with AuxLogits: 3,326,696 of them); the FID
    # network has no AuxLogits and 8 more classes (8 x 2049).
    learned = sum(math.prod(s) for k, s in published.items() if "running_" not in k)
    assert learned == 27_161_264 - 3_326_696 + 8 * 2049
    assert len(published) == 94 * 5 + 2  # 94 BasicConv2d + fc
    torch.manual_seed(0)
    state = {k: torch.randn(s) for k, s in published.items()}
    # Files saved by torch >= 0.4.1 also hold num_batches_tracked, which FID does not use.
    state |= {k.replace("running_var", "num_batches_tracked"): torch.tensor(0) for k in published if k.endswith("running_var")}
    net = FIDInceptionV3()
    net.load_state_dict(pytorch_fid_state(state), strict=True)
    ours = net.state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == published  # these names and shapes, nothing else
    for k, v in ours.items():
        assert torch.equal(v, state[k]), k
    for k in ("Mixed_6b.branch7x7_2.conv.weight", "Mixed_7c.branch3x3_2a.conv.weight"):  # asymmetric kernels not transposed
        wrong = dict(state) | {k: state[k].transpose(2, 3)}
        with pytest.raises(RuntimeError, match="size mismatch"):
            FIDInceptionV3().load_state_dict(pytorch_fid_state(wrong), strict=True)


def test_inception_plumbing(frame):
    torch.manual_seed(0)
    net = FIDInceptionV3()
    for m in net.modules():  # He init keeps the input's signal through 94 random layers
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    features = InceptionFeatures(net)
    f = features([frame, 255 - frame, frame])
    assert f.shape == (3, 2048) and f.dtype == np.float64 and np.isfinite(f).all()
    assert np.array_equal(f[0], f[2]) and np.abs(f[0] - f[1]).max() > 0.1
