"""FID: the Fréchet distance against scipy, streaming statistics, the Inception network's
plumbing (random weights) and its published layout."""

from __future__ import annotations

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


def test_inception_layout_and_plumbing(frame):
    torch.manual_seed(0)
    net = FIDInceptionV3()
    state = net.state_dict()
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_7c.branch_pool.bn.running_var"].shape == (192,)
    assert state["fc.weight"].shape == (1008, 2048)
    assert not any("num_batches_tracked" in k for k in state)
    published = dict(state) | {"Conv2d_1a_3x3.bn.num_batches_tracked": torch.tensor(0)}
    net.load_state_dict(pytorch_fid_state(published), strict=True)
    for m in net.modules():  # He init keeps the input's signal through 94 random layers
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    features = InceptionFeatures(net)
    f = features([frame, 255 - frame, frame])
    assert f.shape == (3, 2048) and f.dtype == np.float64 and np.isfinite(f).all()
    assert np.array_equal(f[0], f[2]) and np.abs(f[0] - f[1]).max() > 0.1
