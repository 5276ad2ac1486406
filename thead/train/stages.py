"""What each training stage trains and optimizes, ref §5.2-§5.3; ``trainer`` runs the loop.

- ``LayoutPretraining`` (stage A): E^l + G^l against the oracle face parsing: cross-entropy,
  VGG19 on G^l's auxiliary RGB, L2 on z^l. One optimizer, ``generator``.
- ``MetaLearning`` (stage B): E^s, G^s and E^l, G^l (the oracle-segmentation variant: E^s, G^s
  only) with D, the full objective (``thead.train.adversarial``). Optimizers ``generator`` and
  ``discriminator``, and in the learned-segmentation variant ``layout``: the release's
  separate optimizer of E^l + G^l on the cross-entropy alone.

A stage holds the networks of one step: ``generator`` (what one step runs forward, and what
DDP wraps), ``discriminator`` (or None), ``optimizers()`` (parameters by optimizer name, in the
order they are stepped), ``losses(generator, batch)`` (the forward pass and the weighted terms
by optimizer), ``backward(losses)`` (gradients into ``.grad``; returns those kept apart) and
``sample(batch)`` (the layout and image a sample grid shows). ``needs(weights)`` says which
pretrained loss networks its terms use; ``default_loss_networks`` loads them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thead.faces.parsing import NUM_CLASSES
from thead.model import LSR, layout_to_image
from thead.train import losses as L
from thead.train.adversarial import AdversarialTerms, adversarial_terms
from thead.train.config import LossWeights, TrainConfig
from thead.train.data import Batch


def _encode(encoder: nn.Module, shots_rgb: Tensor, shots_contour: Tensor) -> Tensor:
    b, k = shots_rgb.shape[:2]
    shots = torch.cat([shots_rgb, shots_contour], dim=2).flatten(0, 1)  # [B·K, 6, H, W]
    return encoder(shots.contiguous(memory_format=torch.channels_last)).view(b, k, -1).mean(dim=1)


@dataclass
class StepLosses:
    """One forward pass's weighted terms by optimizer (``"G"``, ``"D"``, ``"layout"``), and what
    their backward pass needs."""

    terms: dict[str, dict[str, Tensor]]
    adversarial: AdversarialTerms | None = None


# -- stage A ---------------------------------------------------------------------------------


class LayoutSide(nn.Module):
    """Stage A's trainable part: E^l + G^l -> (layout_logits, aux_rgb, z_layout)."""

    def __init__(self, model: LSR):
        super().__init__()
        self.layout_encoder, self.layout_generator = model.layout_encoder, model.layout_generator

    def forward(self, shots_rgb: Tensor, shots_contour: Tensor, target_contour: Tensor):
        z_layout = _encode(self.layout_encoder, shots_rgb, shots_contour)
        out = self.layout_generator(target_contour, z_layout)
        return out[:, :NUM_CLASSES], out[:, NUM_CLASSES:], z_layout


class LayoutPretraining:
    """Stage A (ref §5.2): E^l + G^l; 10·CE + 0.01·VGG19(aux RGB, I) + 1·mean(z^l²)."""

    def __init__(self, model: LSR, config: TrainConfig, nets: L.LossNetworks):
        self.weights, self.nets = config.weights, nets
        self.generator = LayoutSide(model)
        self.discriminator = None

    @staticmethod
    def needs(weights: LossWeights) -> tuple[bool, bool]:
        """(VGG19, VGG-Face): the pretrained networks the terms use."""
        return bool(weights.vgg19), False

    def optimizers(self) -> dict[str, list[nn.Parameter]]:
        return {"generator": list(self.generator.parameters())}

    def losses(self, generator: nn.Module, batch: Batch) -> StepLosses:
        """``generator``: ``self.generator`` or its DDP wrapper."""
        logits, aux, z_layout = generator(batch.shots_rgb, batch.shots_contour, batch.target_contour)
        return StepLosses({"G": L.layout_pretraining_losses(logits, aux, z_layout, batch.target_rgb, batch.target_segmap, self.weights, self.nets)})

    def backward(self, losses: StepLosses) -> dict[str, list[Tensor | None]]:
        L.total(losses.terms["G"]).backward(inputs=list(self.generator.parameters()))
        return {}

    def sample(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(layout logits [N, 19, H, W], G^l's auxiliary RGB)."""
        logits, aux, _ = self.generator(batch.shots_rgb, batch.shots_contour, batch.target_contour)
        return logits, aux


# -- stage B ---------------------------------------------------------------------------------


class SynthesisSide(nn.Module):
    """Stage B's generator side: E^s, G^s and (unless the layout is the oracle's) E^l, G^l.

    forward -> (fake [N,3,H,W], layout_logits or None, z_style, z_layout or None).
    """

    def __init__(self, model: LSR, *, oracle_layout: bool = False):
        super().__init__()
        self.style_encoder, self.image_generator = model.style_encoder, model.image_generator
        self.oracle_layout = oracle_layout
        if not oracle_layout:
            self.layout_encoder, self.layout_generator = model.layout_encoder, model.layout_generator

    def forward(self, shots_rgb: Tensor, shots_contour: Tensor, target_contour: Tensor, oracle: Tensor | None = None):
        z_style = _encode(self.style_encoder, shots_rgb, shots_contour)
        if self.oracle_layout:  # Table 2 upper bound: G^s sees the oracle parsing, one-hot
            layout = F.one_hot(oracle, NUM_CLASSES).permute(0, 3, 1, 2).to(z_style.dtype)
            return self.image_generator(layout, z_style), None, z_style, None
        z_layout = _encode(self.layout_encoder, shots_rgb, shots_contour)
        out = layout_to_image(self.layout_generator, self.image_generator, target_contour, z_layout=z_layout, z_style=z_style)
        return out.image, out.layout_logits, z_style, z_layout


class MetaLearning:
    """Stage B (ref §5.3), as the release does it — G and D from the same forward pass:

    1. z^s, z^l = mean over K shots of E^s, E^l; layout = softmax(G^l(contour_t, z^l)[:19]);
       Î = G^s(layout, z^s) (the oracle-segmentation variant: G^s on the oracle parsing).
    2. D once on [I; Î] (batch 2B) with its gradients written out (``thead.train.adversarial``):
       ∂D/∂x once, then every D parameter's gradient of D_real + D_fake + R1 + R2 in one more
       pass; G's adversarial gradient at Î is a per-example multiple of ∂D/∂Î.
    3. G's backward (its losses, plus that image gradient at Î: G's loss never goes back
       through D) into G's parameters; no gradient that is not used is computed.

    The learned-segmentation variant (Table 2) adds 10·CE on E^l + G^l, by their own optimizer.
    """

    def __init__(self, model: LSR, config: TrainConfig, nets: L.LossNetworks):
        self.weights, self.nets = config.weights, nets
        self.generator = SynthesisSide(model, oracle_layout=config.variant == "oracle_segmentation")
        self.discriminator = model.discriminator
        learned = config.variant == "learned_segmentation" and config.weights.segmentation
        self.layout = [*model.layout_encoder.parameters(), *model.layout_generator.parameters()] if learned else None

    @staticmethod
    def needs(weights: LossWeights) -> tuple[bool, bool]:
        """(VGG19, VGG-Face): the pretrained networks the terms use."""
        return bool(weights.vgg19), bool(weights.vgg_face or weights.identity)

    def optimizers(self) -> dict[str, list[nn.Parameter]]:
        """G's first, then D's (the release's order), then the layout optimizer."""
        out = {"generator": list(self.generator.parameters()), "discriminator": list(self.discriminator.parameters())}
        if self.layout is not None:
            out["layout"] = self.layout
        return out

    def losses(self, generator: nn.Module, batch: Batch) -> StepLosses:
        """``generator``: ``self.generator`` or its DDP wrapper."""
        fake, logits, z_style, z_layout = generator(batch.shots_rgb, batch.shots_contour, batch.target_contour, batch.target_segmap)
        adversarial = adversarial_terms(self.discriminator, fake, batch.target_rgb, batch.target_contour, z_style, z_layout, self.weights, self.nets)
        terms = {"G": adversarial.generator, "D": adversarial.discriminator}
        if self.layout is not None:
            terms["layout"] = {"segmentation": self.weights.segmentation * L.segmentation_ce(logits, batch.target_segmap)}
        return StepLosses(terms, adversarial)

    def backward(self, losses: StepLosses) -> dict[str, list[Tensor | None]]:
        """G's and D's gradients into ``.grad``; the layout optimizer's (its own loss on
        parameters G's optimizer also updates) kept apart and returned."""
        kept = {}
        if "layout" in losses.terms:
            kept["layout"] = list(torch.autograd.grad(L.total(losses.terms["layout"]), self.layout, retain_graph=True, allow_unused=True))
        losses.adversarial.backward(list(self.generator.parameters()), list(self.discriminator.named_parameters()))
        return kept

    def sample(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(layout logits [N, 19, H, W], or the oracle parsing one-hot; G^s's output)."""
        image, logits, _, _ = self.generator(batch.shots_rgb, batch.shots_contour, batch.target_contour, batch.target_segmap)
        if logits is None:
            logits = F.one_hot(batch.target_segmap, NUM_CLASSES).permute(0, 3, 1, 2)
        return logits, image


Stage = LayoutPretraining | MetaLearning
STAGES: dict[str, type[LayoutPretraining] | type[MetaLearning]] = {"layout": LayoutPretraining, "meta": MetaLearning}


def stage_for(config: TrainConfig, model: LSR, nets: L.LossNetworks) -> Stage:
    """The stage ``config`` trains, over ``model``'s networks."""
    return STAGES[config.stage](model, config, nets)


def default_loss_networks(
    config: TrainConfig,
    vgg19: str | os.PathLike | None = None,
    vgg_face: str | os.PathLike | None = None,
    *,
    hints: tuple[str, str] | None = None,
) -> L.LossNetworks:
    """The pretrained VGG19 / VGG-Face the stage's terms use (None for one it does not): from
    the given files, else the published ones (downloaded once). ``hints``: what to add to a
    ``DownloadError`` for each network (the CLI names its ``--vgg19`` / ``--vgg-face`` options)."""
    from thead.assets import load_vgg19, load_vgg_face
    from thead.download import DownloadError

    needs = STAGES[config.stage].needs(config.weights)
    loaded = []
    for needed, load, path, hint in zip(needs, (load_vgg19, load_vgg_face), (vgg19, vgg_face), hints or (None, None)):
        try:
            loaded.append(load(path) if needed else None)
        except DownloadError as e:  # offline or unreachable: say what avoids the download
            if hint is None:
                raise
            raise DownloadError(f"{e}, or pass {hint}") from None
    return L.LossNetworks(*loaded)
