"""FID (Heusel et al., 2017) as the authors computed it (ref §7).

Real and generated frames (uint8) are resized to 299x299 with PIL bicubic (PIL's default
``resize`` filter, which the authors used), mapped to [-1, 1] and passed through Inception-v3
(``FIDInceptionV3``, the TF 2015-12-05 graph) up to pool3. With μ, Σ the mean and unbiased
covariance (÷ (n−1)) of each set's 2048-d features:

    FID = ‖μ_r − μ_g‖² + Tr(Σ_r) + Tr(Σ_g) − 2·Tr((Σ_r Σ_g)^½)

in float64. ``Tr((Σ_r Σ_g)^½)`` is computed as TF-GAN does, as Tr((√Σ_r Σ_g √Σ_r)^½): that
matrix is symmetric positive semi-definite and similar to Σ_r Σ_g, so the trace is the sum of
the square roots of its eigenvalues (those within round-off of 0 set to 0) — scipy's ``sqrtm(Σ_r Σ_g)`` trace
without its complex round-off.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from thead.eval import weights as published
from thead.nn.backbones.inception import INCEPTION_SIZE, FIDInceptionV3, pytorch_fid_state


def resize_for_inception(image: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> uint8 299x299x3, PIL bicubic."""
    if image.shape[:2] == (INCEPTION_SIZE, INCEPTION_SIZE):
        return image
    return np.asarray(Image.fromarray(image).resize((INCEPTION_SIZE, INCEPTION_SIZE), Image.BICUBIC))


class InceptionFeatures:
    """uint8 frames -> pool3 features, float64 [N, 2048]."""

    def __init__(self, model: FIDInceptionV3, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)

    @classmethod
    def pretrained(cls, *, device="cpu", cache_dir=None, allow_download: bool = True) -> InceptionFeatures:
        state = published.load_state(published.FID_INCEPTION, cache_dir=cache_dir, allow_download=allow_download)
        model = FIDInceptionV3()
        model.load_state_dict(pytorch_fid_state(state), strict=True)
        return cls(model, device)

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        batch = np.stack([resize_for_inception(im) for im in images])
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float() * (2.0 / 255.0) - 1.0
        with torch.inference_mode():
            return self.model(x).double().cpu().numpy()


class FeatureStats:
    """Streaming mean and covariance of feature vectors (float64 sums, constant memory)."""

    def __init__(self, dim: int):
        self.n = 0
        self.sum = np.zeros(dim, np.float64)
        self.outer = np.zeros((dim, dim), np.float64)

    def add(self, features: np.ndarray) -> None:
        f = np.asarray(features, np.float64)
        self.n += f.shape[0]
        self.sum += f.sum(axis=0)
        self.outer += f.T @ f

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError(f"FID needs at least 2 frames per set, got {self.n}")
        mu = self.sum / self.n
        cov = (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, cov


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((Σ1 Σ2)^½) for symmetric PSD Σ1, Σ2, via Tr((√Σ1 Σ2 √Σ1)^½).

    Float64 LAPACK through torch, so it follows ``torch.set_num_threads`` (numpy's BLAS threads
    cannot be capped without another dependency, and oversubscribed they were 4x slower here).
    """
    s1, s2 = torch.from_numpy(np.asarray(sigma1, np.float64)), torch.from_numpy(np.asarray(sigma2, np.float64))
    w, v = torch.linalg.eigh(s1)
    sqrt1 = (v * w.clamp(min=0).sqrt()) @ v.T
    m = sqrt1 @ s2 @ sqrt1
    eig = torch.linalg.eigvalsh((m + m.T) / 2)
    # Eigenvalues within round-off of 0 are 0 (few frames: Σ is rank-deficient); their square
    # roots would otherwise add ~1e-7·√λmax each.
    eig[eig < eig.max().clamp(min=0) * len(eig) * torch.finfo(torch.float64).eps] = 0.0
    return float(eig.sqrt().sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(μ1, Σ1) and N(μ2, Σ2), float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1 - mu2
    return float(d @ d + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2))


def fid_from_stats(real: FeatureStats, fake: FeatureStats) -> float:
    return frechet_distance(*real.mean_cov(), *fake.mean_cov())


def features_uint8(extractor: InceptionFeatures, images: Tensor) -> np.ndarray:
    """uint8 [N, 3, H, W] -> features [N, 2048]."""
    return extractor([im.permute(1, 2, 0).numpy() for im in images])
