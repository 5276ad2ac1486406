"""Small loss networks and configs for fast CPU training tests (reduced model, 224 px)."""

from __future__ import annotations

import torch

from thead.nn.backbones.vgg import VGG19Features, VGGFace
from thead.train import LossNetworks, TrainConfig, meta_learning

TINY_WIDTHS = (4, 8, 8, 8, 8)


def tiny_loss_networks(seed: int = 0) -> LossNetworks:
    """Random VGG19 / VGG-Face of the real architecture at a tiny width (the real weights
    cannot be downloaded here): same code path, a fraction of the cost."""
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(seed)
        return LossNetworks(VGG19Features(TINY_WIDTHS), VGGFace(TINY_WIDTHS, fc_width=16, num_classes=8))


def tiny_meta_config(**changes) -> TrainConfig:
    """Stage B with the authors' weights and optimizer, K=2, no warm-up, single-process loader."""
    base = dict(num_shots=2, batch_size=1, warmup_steps=0, num_workers=0, log_every=1, sample_every=0, checkpoint_every=1000)
    base.update(changes)
    return meta_learning(**base)
