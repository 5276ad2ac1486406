"""The inference renderer: the one owner of a model's life from weights to frames.

    LSR.from_pretrained  -> the weights and their ``WeightsRecord`` (folder, spec, sha256), once
    check_compatible     -> the avatar's latents were made by these weights (the one check)
    choose_personal      -> its fine-tuned G^l/G^s, when they were made from these base weights
    Renderer.build       -> G^l and G^s prepared for a device and dtype (a private copy, or the
                            model itself with copy=False) and the avatar's state, once
    Renderer.render      -> contours -> RenderOutput; ``Renderer.frames`` -> uint8 frames

``thead animate``, the demo, the evaluation and the web UI all render through ``Renderer``;
fine-tuning loads its trainable base through ``load_avatar_model`` (the same weights rule and
check).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from thead.avatar import Avatar, AvatarStore, PersonalWeights
from thead.errors import AvatarError, UsageError, WeightsError
from thead.faces.images import to_uint8
from thead.model import LSR, NETWORKS, RENDER_NETWORKS, AvatarState, Latents, RenderOutput, WeightsRecord
from thead.runtime import resolve_device, tune_cpu_allocator
from thead.validate import recorded_weights

DType = Literal["fp32", "bf16", "fp16"]
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ------------------------------------------------------------------------ which weights


def check_compatible(model: LSR, avatar: Avatar) -> None:
    """Refuse an avatar whose latents came from other weights (they would mean nothing)."""
    mine, theirs = model.weights_sha256 or "", avatar.info.weights_sha256
    if mine and mine != theirs:  # an avatar without a hash is refused like one of other weights
        made_with = f"{avatar.weights} (sha256 {theirs[:12]})" if avatar.weights else f"sha256 {theirs[:12]}"
        if not theirs:
            made_with = "weights it does not record (no sha256 in the avatar)"
        raise AvatarError(
            f"avatar '{avatar.name}' was enrolled with other weights, {made_with}, these are sha256 {mine[:12]}; "
            f"pass those with --weights, or enroll it again with these (thead enroll SOURCE --name {avatar.name} --overwrite)"
        )
    z_dim = model.config.z_dim
    if avatar.z_style.shape[-1] != z_dim:
        raise AvatarError(f"avatar '{avatar.name}' has {avatar.z_style.shape[-1]}-d latents, these weights use {z_dim}")


def load_avatar_model(avatar: Avatar, weights: str | os.PathLike | None = None, *,
                      networks: tuple[str, ...] = NETWORKS) -> LSR:
    """The base weights for ``avatar``: ``weights`` when given, else the ones it records it was
    enrolled with (when they can still be found; else the default), checked compatible."""
    model = LSR.from_pretrained(weights if weights is not None else recorded_weights(avatar), networks=networks)
    check_compatible(model, avatar)
    return model


def choose_personal(weights: WeightsRecord | None, personal: PersonalWeights | None, wanted: bool = True) -> tuple[PersonalWeights | None, bool]:
    """(the personal weights to apply or None, whether some were skipped): personal weights
    apply only when wanted and made from these base weights."""
    if personal is None or not wanted:
        return None, False
    base = weights.sha256 if weights is not None else ""
    if personal.base_weights_sha256 == base:
        return personal, False
    return None, True


def apply_personal(model: LSR, personal: PersonalWeights) -> None:
    """Put an avatar's fine-tuned G^l and G^s tensors into ``model`` (strict for those two)."""
    own = {k: v for k, v in model.state_dict().items() if k.split(".", 1)[0] in RENDER_NETWORKS}
    state = {k: v for k, v in personal.state.items() if k in own}
    missing = [k for k in own if k not in state]
    if missing:
        raise WeightsError(f"the fine-tuned weights lack {len(missing)} tensors, first: {', '.join(missing[:3])}")
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise WeightsError(f"the fine-tuned weights do not fit these networks ({bad[0]} has shape {tuple(state[bad[0]].shape)})")
    model.load_state_dict(state, strict=False)


# ------------------------------------------------------------------------ the renderer


@dataclass(frozen=True, eq=False)
class Renderer:
    """G^l and G^s prepared for inference on one device and dtype, with one avatar's state.

    Make one with ``Renderer.build`` (latents), ``Renderer.for_avatar`` (an avatar, checked,
    with its personal weights) or ``Renderer.load`` (an avatar from the store).

    model: the prepared LSR (``LSR.for_inference_``; cannot be saved or trained). state: the
    avatar's per-frame-constant work. weights: the base weights' record. finetuned: personal
    weights are applied. personal_skipped: the avatar has personal weights made from other base
    weights (so the base ones render). batch: frames per call (pairs on the CPU, 8 on CUDA).
    """

    model: LSR
    state: AvatarState
    device: torch.device
    dtype: DType
    weights: WeightsRecord | None
    finetuned: bool = False
    personal_skipped: bool = False

    @property
    def batch(self) -> int:
        return 8 if self.device.type == "cuda" else self.model.cpu_chunk

    @property
    def resolution(self) -> int:
        return self.model.config.resolution

    # -- making one ------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        model: LSR,
        latents: Latents,
        *,
        device: str | torch.device | None = None,
        dtype: DType = "fp32",
        personal: PersonalWeights | None = None,
        compile: bool = False,
        copy: bool = True,
        personal_skipped: bool = False,
    ) -> Renderer:
        """Prepare ``model``'s G^l and G^s (with ``personal`` fine-tuned tensors, applied as
        given) and ``latents`` ([1, z_dim], one avatar) for rendering.

        copy=True (default): a private copy of G^l and G^s; ``model`` is left untouched.
        copy=False: ``model`` itself is prepared in place (``for_inference_``; its encoders
        stay usable for encoding, it can no longer be saved or trained)."""
        device = resolve_device(device)
        if dtype not in DTYPES:
            raise UsageError(f"unknown dtype {dtype!r} (choose fp32, bf16 or fp16)")
        if dtype == "fp16" and device.type != "cuda":
            raise UsageError("fp16 needs a CUDA GPU; on a CPU use --dtype bf16")
        if model.layout_generator is None or model.image_generator is None:
            raise UsageError("rendering needs weights with the layout and image generators")
        if model.inference_only:
            if personal is not None:
                raise UsageError("personal weights cannot be applied to a model already prepared for inference")
            render = model
        else:
            render = model
            if copy:
                render = LSR(model.config, networks=RENDER_NETWORKS)
                render.load_state_dict({k: v for k, v in model.state_dict().items() if k.split(".", 1)[0] in RENDER_NETWORKS})
                render.weights = model.weights
            if personal is not None:
                apply_personal(render, personal)
            cpu = device.type == "cpu"
            render.for_inference_(channels_last=cpu, compile=compile, dtype=DTYPES[dtype] if cpu else torch.float32)
        render = render.to(device)
        if device.type == "cpu":
            tune_cpu_allocator()
        state = _prepare(render, latents, device, dtype)
        return cls(render, state, device, dtype, model.weights, finetuned=personal is not None, personal_skipped=personal_skipped)

    @classmethod
    def for_avatar(
        cls,
        model: LSR,
        avatar: Avatar,
        *,
        personal: PersonalWeights | None = None,
        use_personal: bool = True,
        device: str | torch.device | None = None,
        dtype: DType = "fp32",
        compile: bool = False,
        copy: bool = True,
    ) -> Renderer:
        """``build`` for a stored avatar: checked against the weights (``check_compatible``),
        with its ``personal`` weights when wanted and made from these base weights."""
        check_compatible(model, avatar)
        chosen, skipped = choose_personal(model.weights, personal, use_personal)
        return cls.build(model, avatar.latents, device=device, dtype=dtype, personal=chosen, compile=compile, copy=copy,
                         personal_skipped=skipped)

    @classmethod
    def load(
        cls,
        avatar: str | Avatar,
        *,
        weights: str | os.PathLike | None = None,
        store: AvatarStore | None = None,
        finetuned: bool = True,
        device: str | torch.device | None = None,
        dtype: DType = "fp32",
        compile: bool = False,
    ) -> Renderer:
        """Avatar ``avatar`` (a name in ``store``, or one already loaded) rendered with
        ``weights`` (folder, Hub repo id; default: the ones it was enrolled with) and its
        fine-tuned weights when it has some that fit. Only G^l and G^s are loaded."""
        store = store if store is not None else AvatarStore()
        if isinstance(avatar, str):
            avatar = store.load(avatar)
        device = resolve_device(device)  # a bad --device is said before any weights load
        model = load_avatar_model(avatar, weights, networks=RENDER_NETWORKS)
        personal = store.load_finetuned(avatar.name) if finetuned else None
        return cls.for_avatar(model, avatar, personal=personal, use_personal=finetuned, device=device, dtype=dtype,
                              compile=compile, copy=False)

    def with_latents(self, latents: Latents) -> Renderer:
        """The same prepared networks for another avatar's latents."""
        return Renderer(self.model, _prepare(self.model, latents, self.device, self.dtype), self.device, self.dtype,
                        self.weights, self.finetuned, self.personal_skipped)

    # -- rendering -------------------------------------------------------------------------
    def render(self, contours: Tensor) -> RenderOutput:
        """contours [N, 3, H, W] in [-1, 1] (any device) -> RenderOutput on ``device``."""
        x = contours.to(self.device, non_blocking=True)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), _autocast(self.device, self.dtype):
            return self.model.render(x, self.state)

    def frames(self, contours: Tensor) -> np.ndarray:
        """contours [N, 3, H, W] -> the rendered frames, uint8 [N, H, W, 3] RGB (converted on
        the device, so only bytes cross to the host)."""
        with torch.inference_mode():
            return to_uint8(self.render(contours).image).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _autocast(device: torch.device, dtype: DType):
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def _prepare(model: LSR, latents: Latents, device: torch.device, dtype: DType) -> AvatarState:
    if latents.z_style.dim() != 2 or latents.z_style.shape[0] != 1:
        raise UsageError(f"a renderer takes one avatar's latents ([1, z_dim]), got {tuple(latents.z_style.shape)}")
    with torch.inference_mode(), _autocast(device, dtype):
        return model.prepare(Latents(latents.z_style.to(device), latents.z_layout.to(device)))
