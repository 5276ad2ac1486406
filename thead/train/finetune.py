"""Stage C: subject fine-tuning (ref §5.5) — personal G^l, G^s and D for one avatar.

The latents z^s, z^l are computed once from the K shots and stay constant; E^s and E^l are not
touched. G^l, G^s and D are trained on (contour_t, I_t) pairs of the avatar's own frames, batch
1, shuffled and repeated, with the stage-B objective (the latent L2 terms are constant there),
fresh Keras Adam optimizers and the release's decay (constant for the first half, then 1/t to
lr/100). The release uses every frame of the source folder as a target (paper≠code, ref §9.11);
``finetune`` trains on whatever frames it is given.

Steps as the authors intended (their flag default of −1 makes it 0 steps, ref §5.5):
K < 4 → 24, K < 8 → 60, K < 16 → 100, K < 32 → 200, else 400.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from thead.errors import TrainingError, UsageError
from thead.model import LSR, Latents, layout_to_image
from thead.progress import Progress, loss_info
from thead.train.config import META_WEIGHTS, LossWeights, OptimizerConfig, meta_learning
from thead.runtime import resolve_device, tune_cpu_allocator
from thead.train.losses import LossNetworks
from thead.train.optim import KerasAdam
from thead.train.schedule import finetune_schedule
from thead.train.adversarial import adversarial_terms
from thead.train.step import autocast, loss_values, nonfinite, step_optimizers, zero_grads
from thead.train.stages import default_loss_networks

PERSONAL_NETWORKS = ("layout_generator", "image_generator", "discriminator")
_STEPS_BY_SHOTS = ((4, 24), (8, 60), (16, 100), (32, 200))


def finetune_steps(num_shots: int) -> int:
    """The release's intended schedule: 24 / 60 / 100 / 200 / 400 steps for K < 4 / 8 / 16 / 32 / else."""
    for bound, steps in _STEPS_BY_SHOTS:
        if num_shots < bound:
            return steps
    return 400


@dataclass(frozen=True)
class FinetuneOptions:
    """Stage C settings; defaults are the release's (ref §2 fine-tuning flags, §5.5)."""

    num_shots: int = 1  # K the latents were made from; sets the step count when steps is None
    steps: int | None = None
    lr: float = 1e-3
    decay_lr: bool = True
    weights: LossWeights = META_WEIGHTS
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    seed: int = 0
    device: str | None = None  # None: CUDA when present, else CPU
    amp: bool = True  # bf16 autocast on CUDA

    @property
    def total_steps(self) -> int:
        return finetune_steps(self.num_shots) if self.steps is None else self.steps


class _PersonalGenerator(nn.Module):
    """G^l -> softmax -> G^s with the avatar's constant latents."""

    def __init__(self, layout_generator: nn.Module, image_generator: nn.Module):
        super().__init__()
        self.layout_generator, self.image_generator = layout_generator, image_generator

    def forward(self, contour: Tensor, z_style: Tensor, z_layout: Tensor) -> Tensor:
        return layout_to_image(self.layout_generator, self.image_generator, contour, z_layout=z_layout, z_style=z_style).image


def finetune(
    model: LSR,
    latents: Latents,
    frames_rgb: Tensor,
    contours: Tensor,
    options: FinetuneOptions = FinetuneOptions(),
    progress: Progress | None = None,
    *,
    loss_networks: LossNetworks | None = None,
) -> dict[str, Tensor]:
    """Fine-tune copies of G^l, G^s and D on one avatar's frames; ``model`` is left unchanged.

    frames_rgb, contours: [N, 3, H, W] in [-1, 1] (targets and their landmark drawings);
    latents: the avatar's z^s, z^l [1, z_dim]. Returns the personal state dict (keys
    ``layout_generator.*``, ``image_generator.*``, ``discriminator.*``; CPU float32), which
    ``model.load_state_dict(..., strict=False)`` puts in place.
    ``loss_networks``: default the pretrained VGG19 and VGG-Face. ``progress``: an update after
    each step (stage "finetune", the losses as its info).
    """
    # 1. Check inputs.
    if model.discriminator is None:
        raise UsageError("fine-tuning needs weights with the discriminator")
    r = model.config.resolution
    if frames_rgb.dim() != 4 or frames_rgb.shape[1:] != (3, r, r) or contours.shape != frames_rgb.shape:
        raise UsageError(f"frames and contours must both be [N, 3, {r}, {r}], got {tuple(frames_rgb.shape)} and {tuple(contours.shape)}")
    if latents.z_style.shape[0] != 1:
        raise UsageError("fine-tuning takes one avatar's latents ([1, z_dim])")
    steps = options.total_steps
    if steps < 0:
        raise UsageError("steps must be 0 or more")
    w = options.weights
    if loss_networks is None:
        loss_networks = default_loss_networks(meta_learning(weights=w))

    # 2. Personal copies on the device; latents constant.
    device = resolve_device(options.device)
    amp = options.amp and device.type == "cuda"
    if device.type == "cpu":
        tune_cpu_allocator(training=True)
    cl = torch.channels_last  # faster convolutions (see trainer.py); values unchanged
    nets = loss_networks.to(device, memory_format=cl)
    generator = _PersonalGenerator(copy.deepcopy(model.layout_generator), copy.deepcopy(model.image_generator)).to(device, torch.float32, memory_format=cl)
    discriminator = copy.deepcopy(model.discriminator).to(device, torch.float32, memory_format=cl)
    z_style = latents.z_style.detach().to(device, torch.float32)
    z_layout = latents.z_layout.detach().to(device, torch.float32)
    frames_rgb = frames_rgb.to(device, torch.float32).contiguous(memory_format=cl)
    contours = contours.to(device, torch.float32).contiguous(memory_format=cl)
    g_named = list(generator.named_parameters())
    d_named = [(f"discriminator.{n}", p) for n, p in discriminator.named_parameters()]
    g_params = [p for _, p in g_named]
    opt_cfg = OptimizerConfig(options.lr, options.optimizer.beta1, options.optimizer.beta2, options.optimizer.eps, options.optimizer.grad_clip)
    optimizers = [KerasAdam(g_named, opt_cfg), KerasAdam(d_named, opt_cfg)]  # G's first, then D's
    schedule = finetune_schedule(options.lr, steps, decay=options.decay_lr)

    # 3. Batch-1 steps over the frames, reshuffled every pass.
    rng = np.random.default_rng(options.seed)
    order: list[int] = []
    for step in range(steps):
        if not order:
            order = rng.permutation(len(frames_rgb)).tolist()
        i = order.pop(0)
        rgb, contour = frames_rgb[i : i + 1], contours[i : i + 1]
        zero_grads(optimizers)
        with autocast(amp):
            fake = generator(contour, z_style, z_layout)
            adversarial = adversarial_terms(discriminator, fake, rgb, contour, z_style, z_layout, w, nets)
        values = loss_values({"G": adversarial.generator, "D": adversarial.discriminator})
        bad = nonfinite(values)
        if bad:
            raise TrainingError(f"non-finite loss at fine-tuning step {step} ({', '.join(bad)}); nothing was saved")
        adversarial.backward(g_params, list(discriminator.named_parameters()))
        step_optimizers(optimizers, schedule(step))
        if progress is not None:
            progress.update(step + 1, steps, stage="finetune", info=loss_info(values))

    # 4. The personal weights.
    state = {k: v for k, v in generator.state_dict().items()}
    state |= {f"discriminator.{k}": v for k, v in discriminator.state_dict().items()}
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}


@dataclass(frozen=True)
class AvatarFinetune:
    """One avatar's fine-tuning, checked and ready (``prepare_avatar_finetune``): the base model
    it was enrolled with, its shots as targets with their contour drawings, its latents."""

    name: str
    model: LSR
    latents: Latents
    frames: Tensor  # [K, 3, H, W] in [-1, 1]
    contours: Tensor
    options: FinetuneOptions
    store: object  # the AvatarStore the personal weights go to

    @property
    def device(self) -> torch.device:
        """Where the steps run (``options.device``; None: CUDA when present, else the CPU)."""
        return resolve_device(self.options.device)

    def run(self, progress: Progress | None = None, *, loss_networks: LossNetworks | None = None):
        """Fine-tune and save the personal weights with the avatar; returns the path written."""
        personal = finetune(self.model, self.latents, self.frames, self.contours, self.options, progress, loss_networks=loss_networks)
        return self.store.save_finetuned(self.name, personal, self.model.weights_sha256 or "")


def prepare_avatar_finetune(name: str, options: FinetuneOptions | None = None, *, weights: str | None = None, store=None) -> AvatarFinetune:
    """Load avatar ``name`` and its base weights and check them (store writable, weights the
    avatar was enrolled with) before any step. ``weights``: default the ones the avatar was
    enrolled with; ``options``: default ``FinetuneOptions(num_shots=the avatar's K)``."""
    from thead.avatar import AvatarStore
    from thead.faces.contour import draw_contour
    from thead.faces.images import to_tensor
    from thead.renderer import load_avatar_model

    store = store if store is not None else AvatarStore()
    avatar = store.load(name)
    store.check_writable()  # a read-only store is said now, not after all the steps
    model = load_avatar_model(avatar, weights)
    options = options if options is not None else FinetuneOptions(num_shots=avatar.num_shots)
    frames = torch.stack([to_tensor(s) for s in avatar.shots])
    contours = torch.stack([to_tensor(draw_contour(lm)) for lm in avatar.landmarks])
    return AvatarFinetune(name, model, avatar.latents, frames, contours, options, store)


def finetune_avatar(
    name: str,
    options: FinetuneOptions | None = None,
    *,
    weights: str | None = None,
    store=None,
    loss_networks: LossNetworks | None = None,
    progress: Progress | None = None,
):
    """``thead finetune NAME`` as one call: ``prepare_avatar_finetune`` then ``run`` (the
    avatar's shots and their contour drawings as targets, its latents constant; the personal
    weights saved with the avatar). Returns the path written."""
    return prepare_avatar_finetune(name, options, weights=weights, store=store).run(progress, loss_networks=loss_networks)
