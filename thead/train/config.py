"""Training configurations: the authors' numbers for each stage (ref §2, §5.2-§5.5).

``layout_pretraining()`` is stage A (``scripts/train_lsr_pretrain.sh``), ``meta_learning()``
stage B (``scripts/train_lsr_meta_learning.sh``), with the paper's Table 2 variants as
``variant``. Each dataclass is the only source of its defaults; ``TrainConfig.to_dict`` is what
a checkpoint's ``state.json`` records, and ``TrainConfig.from_dict`` reads it back with every
key required (no default is filled in).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from thead._schema import decode
from thead.errors import CheckpointError, UsageError

Stage = Literal["layout", "meta"]
# Table 2: "latent" = latent layout (the paper's model); "learned_segmentation" keeps the
# segmentation CE during meta-learning (a separate Adam on E^l + G^l minimises it, ref §5.3);
# "oracle_segmentation" feeds G^s the one-hot oracle parsing of the target (upper bound).
Variant = Literal["latent", "learned_segmentation", "oracle_segmentation"]
VARIANTS: tuple[str, ...] = ("latent", "learned_segmentation", "oracle_segmentation")


@dataclass(frozen=True)
class LossWeights:
    """Loss weights; defaults are options.py's (= the meta-learning script), ref §2.

    ``vgg_face`` weighs each of the five VGG-Face layers; ``segmentation`` is the CE weight.
    """

    gan: float = 1.0  # w_loss_gan
    vgg19: float = 0.1  # w_loss_vgg
    l1: float = 1.0  # w_loss_l1
    segmentation: float = 0.0  # w_loss_segmentation
    vgg_face: float = 0.002  # w_loss_vgg_face_recon (per layer)
    identity: float = 1.0  # w_loss_identity (VGG-Face fc8)
    z_style_l2: float = 1.0  # w_loss_z_l2
    z_layout_l2: float = 1.0  # w_loss_z_layout_l2
    r1_gamma: float = 10.0
    r2_gamma: float = 10.0


# Stage A (ref §5.2): 10·CE + 0.01·VGG19(aux RGB) + 1·mean(z^l²); no D, no G^s.
LAYOUT_WEIGHTS = LossWeights(gan=0.0, vgg19=0.01, l1=0.0, segmentation=10.0, vgg_face=0.0, identity=0.0, z_style_l2=0.0)
META_WEIGHTS = LossWeights()
# The release sets no number for the "+ learned segmentation maps" ablation (w_loss_segmentation
# > 0 with the separate layout optimizer); pre-training's 10 is used [inferred].
LEARNED_SEGMENTATION_CE = 10.0


@dataclass(frozen=True)
class OptimizerConfig:
    """Adam as in the release (Keras: eps 1e-7, added to sqrt(v) after bias correction of the
    step size), element-wise gradient clipping, ref §5.2-§5.3."""

    lr: float = 1e-3  # g_lr = d_lr
    beta1: float = 0.0
    beta2: float = 0.999
    eps: float = 1e-7
    grad_clip: float = 1.0  # grad_clip_abs_val


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Lengths are in examples (global, across processes), as the release
    counts them; steps = examples / (batch_size · world size)."""

    stage: Stage = "meta"
    variant: Variant = "latent"
    weights: LossWeights = field(default_factory=LossWeights)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    num_shots: int = 4  # K
    batch_size: int = 4  # per process (per GPU)
    window: int = 10  # num_frame_concatenations: frames per clip the examples draw from
    total_examples: int = 16_350_000  # total_k_examples · 1000
    decay_examples: int = 1_090_000  # num_lr_decay_k_examples · 1000 (the last ones)
    warmup_steps: int = 500  # lr_warmstart_steps
    decay_intervals: int = 100  # decay_num_intervals: lr falls to lr / 100
    seed: int = 0
    checkpoint_every: int = 1000  # steps
    keep_checkpoints: int = 3
    log_every: int = 10  # steps
    sample_every: int = 500  # steps
    num_workers: int = 4  # DataLoader workers per process
    amp: bool = True  # bf16 autocast, CUDA only

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise UsageError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.num_shots < 1 or self.num_shots + 1 > self.window:
            raise UsageError(f"num_shots must be 1..{self.window - 1} (K shots + 1 target from {self.window} frames)")
        if self.batch_size < 1:
            raise UsageError("batch_size must be at least 1")

    @property
    def needs_segmaps(self) -> bool:
        return self.stage == "layout" or self.variant != "latent"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "", path: str = "") -> TrainConfig:
        """The config ``to_dict`` wrote (a checkpoint's ``state.json`` ``train_config``), read
        strictly by ``thead._schema``: EVERY key must be there, including those of ``weights``
        and ``optimizer``. A missing key is refused (``CheckpointError`` naming ``source``, the
        file, and the key path under ``path``), never filled with today's default: a resumed
        run must train with the numbers it started with, and a default that changed between
        versions would silently change them. Every thead so far has written every key; a field
        added later must be declared ``thead._schema.optional(default)`` so older states still
        load with that documented value."""
        return decode(cls, d, error=CheckpointError, source=source, path=path)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def layout_pretraining(**changes: Any) -> TrainConfig:
    """Stage A: E^l + G^l against oracle parsing; 1,090,000 examples, 500-step warm-up, no decay."""
    base = TrainConfig(stage="layout", weights=LAYOUT_WEIGHTS, total_examples=1_090_000, decay_examples=0)
    return base.replace(**changes)


def meta_learning(variant: Variant = "latent", **changes: Any) -> TrainConfig:
    """Stage B: the full objective; the example counter continues from stage A, so it runs to
    16,350,000 with the 1/t decay over the last 1,090,000 (ref §5.3-§5.4)."""
    weights = META_WEIGHTS
    if variant == "learned_segmentation":
        weights = dataclasses.replace(weights, segmentation=LEARNED_SEGMENTATION_CE)
    base = TrainConfig(stage="meta", variant=variant, weights=weights)
    return base.replace(**changes)
