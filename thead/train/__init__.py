"""Training LSR: layout pre-training (stage A), meta-learning (stage B), subject fine-tuning
(stage C), ref §5.

- ``config``: the stages' numbers (``layout_pretraining()``, ``meta_learning(variant)``).
- ``losses``: the paper's terms as pure functions; ``LossNetworks`` (VGG19, VGG-Face).
- ``data``: ``DatasetIndex``, ``ClipDataset``, ``ExampleSampler`` (exact resume, sharding).
- ``step``: the parts of one step shared by ``trainer`` and ``finetune``.
- ``stages``: what stages A and B train, their forward pass and loss terms
  (``LayoutPretraining``, ``MetaLearning``); which loss networks they need.
- ``trainer``: ``train(...)``, the loop: one or many processes (torchrun), checkpoints, logs.
- ``finetune``: ``finetune(model, latents, frames, contours, options)`` -> personal weights;
  ``finetune_avatar(name)`` (= ``prepare_avatar_finetune(name).run()``) for a stored avatar.
"""

from thead.train.config import LossWeights, OptimizerConfig, TrainConfig, layout_pretraining, meta_learning
from thead.train.finetune import AvatarFinetune, FinetuneOptions, finetune, finetune_avatar, finetune_steps, prepare_avatar_finetune
from thead.train.losses import LossNetworks
from thead.train.trainer import TrainResult, train

__all__ = [
    "AvatarFinetune",
    "FinetuneOptions",
    "LossNetworks",
    "LossWeights",
    "OptimizerConfig",
    "TrainConfig",
    "TrainResult",
    "finetune",
    "finetune_avatar",
    "finetune_steps",
    "layout_pretraining",
    "meta_learning",
    "prepare_avatar_finetune",
    "train",
]
