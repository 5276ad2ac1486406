"""LPIPS v0.1 with AlexNet (Zhang et al., CVPR 2018), the authors' "net-lin alex v0.1" (ref §7).

For images x0, x1 in [-1, 1]:
1. scaling layer: ``(x − shift) / scale`` with shift (−0.030, −0.088, −0.188) and scale
   (0.458, 0.448, 0.450) — ImageNet normalisation expressed for [-1, 1] inputs;
2. AlexNet relu1..relu5 features f0_l, f1_l of both images;
3. unit-normalise each feature vector over channels: ``f / (‖f‖₂ + 1e-10)``;
4. ``d_l = (f̂0_l − f̂1_l)²``, weighted by the layer's 1x1 linear head (non-negative weights,
   no bias), averaged over H, W;
5. LPIPS = Σ_l of those five numbers.

Weights: torchvision's AlexNet (``alexnet-owt-7be5be79.pth``) and the v0.1 heads (``alex.pth``,
keys ``lin{l}.model.1.weight``), through ``thead.eval.weights``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from thead.errors import WeightsError
from thead.eval import weights as published
from thead.nn.backbones.alexnet import ALEXNET_CHANNELS, AlexNetFeatures, torchvision_features_state

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10


def unit_normalize(f: Tensor) -> Tensor:
    """Channel-wise unit length, LPIPS's ``normalize_tensor``: f / (‖f‖₂ + 1e-10)."""
    return f / (f.square().sum(dim=1, keepdim=True).sqrt() + NORM_EPS)


class LPIPS(nn.Module):
    """LPIPS distance: x0, x1 [N, 3, H, W] in [-1, 1] -> [N] (0 for identical images)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = AlexNetFeatures()
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in ALEXNET_CHANNELS)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def layer_distances(self, x0: Tensor, x1: Tensor) -> Tensor:
        """The five per-layer terms, [N, 5]."""
        f0 = self.net((x0 - self.shift) / self.scale)
        f1 = self.net((x1 - self.shift) / self.scale)
        terms = [head((unit_normalize(a) - unit_normalize(b)).square()).mean(dim=(1, 2, 3))
                 for head, a, b in zip(self.heads, f0, f1)]
        return torch.stack(terms, dim=1)

    def forward(self, x0: Tensor, x1: Tensor) -> Tensor:
        return self.layer_distances(x0, x1).sum(dim=1)

    def load_published(self, alexnet_state: dict[str, Tensor], heads_state: dict[str, Tensor]) -> LPIPS:
        """torchvision AlexNet state dict + LPIPS ``alex.pth`` heads, both loaded strictly."""
        self.net.load_state_dict(torchvision_features_state(alexnet_state), strict=True)
        self.heads.load_state_dict(lpips_heads_state(heads_state), strict=True)
        return self

    @classmethod
    def pretrained(cls, *, cache_dir=None, allow_download: bool = True) -> LPIPS:
        """The published weights (``WeightsUnavailable`` when offline and not cached)."""
        alex = published.load_state(published.ALEXNET, cache_dir=cache_dir, allow_download=allow_download)
        heads = published.load_state(published.LPIPS_ALEX_HEADS, cache_dir=cache_dir, allow_download=allow_download)
        return cls().load_published(alex, heads)


def lpips_heads_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``lin{l}.model.1.weight`` (lpips' Dropout + 1x1 conv) -> ``{l}.weight`` of ``LPIPS.heads``."""
    out = {}
    for l in range(len(ALEXNET_CHANNELS)):
        key = f"lin{l}.model.1.weight"
        if key not in state:
            raise WeightsError(f"LPIPS heads file has no {key}")
        out[f"{l}.weight"] = state[key]
    return out


def lpips_uint8(model: LPIPS, real: Tensor, fake: Tensor) -> Tensor:
    """LPIPS between uint8 [N, 3, H, W] batches (as the authors: quantised frames mapped to
    [-1, 1]), float64 [N]."""
    p = next(model.net.parameters())
    x0 = real.to(p.device, p.dtype) * (2.0 / 255.0) - 1.0
    x1 = fake.to(p.device, p.dtype) * (2.0 / 255.0) - 1.0
    with torch.inference_mode():
        return model(x0, x1).double().cpu()

