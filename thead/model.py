"""LSR: the two-step model (ref §4.6) and its weights format.

1. ``encode``: each shot ``[rgb ‖ contour]`` -> E^s, E^l; latents averaged over the K shots.
2. ``prepare``: everything that depends only on the avatar (G^l's modulations, G^s's seed).
3. ``render``: target contour -> G^l -> softmax over the 19 layout logits -> G^s -> image.

Weights are a folder with ``config.json`` + ``model.safetensors``; loading is strict.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from thead._atomic import atomic_dir
from thead._hash import sha256_file
from thead.config import LSRConfig
from thead.errors import WeightsError
from thead.nn import Discriminator, Encoder, ImageGenerator, LayoutGenerator, onednn
from thead.runtime import CompiledOrEager

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
NETWORKS = ("style_encoder", "layout_encoder", "layout_generator", "image_generator", "discriminator")
ENCODE_NETWORKS = ("style_encoder", "layout_encoder")
RENDER_NETWORKS = ("layout_generator", "image_generator")


@dataclass(frozen=True)
class WeightsRecord:
    """Where a model's weights came from, recorded once by ``LSR.from_pretrained`` and carried
    unchanged through ``for_inference_`` and into the renderer (``thead.renderer``).

    folder: the weights folder read. spec: what was asked for (a folder, a Hub repo id, or ""
    for the default). sha256: of its ``model.safetensors``; avatars record it, and personal
    weights record the one they were fine-tuned from."""

    folder: Path
    spec: str
    sha256: str


@dataclass(frozen=True)
class Latents:
    """The avatar's latents z^s, z^l: [B, z_dim] averaged over its K shots (``LSR.encode``), or
    [B, K, z_dim] per shot (``LSR.encode_shots``)."""

    z_style: Tensor
    z_layout: Tensor

    def mean_over_shots(self) -> Latents:
        """Per-shot latents [B, K, z_dim] (from ``LSR.encode_shots``) -> their mean [B, z_dim]."""
        return Latents(z_style=self.z_style.mean(dim=1), z_layout=self.z_layout.mean(dim=1))


@dataclass(frozen=True)
class AvatarState:
    """Per-avatar work done once and reused for every frame (batch 1, broadcast over frames)."""

    latents: Latents
    layout_styles: list  # G^l decoder modulations: [(γβ0, γβ1)] per block, each [1, 2C]
    seed: Tensor  # G^s's 7x7 seed [1, C, 7, 7]


@dataclass(frozen=True)
class RenderOutput:
    """image [N, 3, H, W] linear RGB (clip to [-1, 1] to view); layout_logits [N, 19, H, W];
    aux_rgb [N, 3, H, W] (G^l's pre-training head)."""

    image: Tensor
    layout_logits: Tensor
    aux_rgb: Tensor

    @property
    def layout(self) -> Tensor:
        return self.layout_logits.softmax(dim=1)


def layout_to_image(
    layout_generator: LayoutGenerator,
    image_generator: ImageGenerator,
    contour: Tensor,
    *,
    z_layout: Tensor | None = None,
    z_style: Tensor | None = None,
    layout_styles: list | None = None,
    seed: Tensor | None = None,
) -> RenderOutput:
    """contour -> G^l -> softmax over its layout logits -> G^s -> image (ref §4.6): the one place
    this chain is written (rendering, meta-learning, fine-tuning). G^l takes ``z_layout`` or its
    precomputed ``layout_styles``; G^s takes ``z_style`` or its precomputed ``seed``."""
    c = layout_generator.num_classes
    out = layout_generator(contour, z_layout, styles=layout_styles)
    logits, aux = out[:, :c], out[:, c:]
    if out.is_contiguous(memory_format=torch.channels_last) and out.dtype == torch.float32:
        # keep G^s's layout convolutions on oneDNN's NHWC path (from NCHW each one re-laid the
        # layout out, 224²: 0.7 ms a call): in float32, softmax over the channels as the last
        # dim of the NHWC view returns channels-last memory itself (1.4 ms against 2.9 ms for
        # softmax + copy at 224²; in bf16 that kernel is the slower one: 2.4 against 0.8 ms)
        layout = logits.permute(0, 2, 3, 1).softmax(dim=-1).permute(0, 3, 1, 2)
    else:
        layout = logits.softmax(dim=1)  # NCHW memory whatever its input's
        if out.is_contiguous(memory_format=torch.channels_last):
            layout = layout.contiguous(memory_format=torch.channels_last)
    image = image_generator(layout, z_style, seed=seed)
    return RenderOutput(image=image, layout_logits=logits, aux_rgb=aux)


class LSR(nn.Module):
    """Learned Spatial Representations for few-shot talking heads (Meshry et al., ICCV 2021)."""

    def __init__(self, config: LSRConfig | None = None, *, networks: tuple[str, ...] = NETWORKS):
        """``networks`` builds a subset (e.g. ``RENDER_NETWORKS`` to animate a stored avatar,
        which needs neither the encoders nor D); the others are None."""
        super().__init__()
        self.config = config = config or LSRConfig()
        unknown = set(networks) - set(NETWORKS)
        if unknown:
            raise ValueError(f"unknown networks: {', '.join(sorted(unknown))}")
        r = config.resolution
        build = {
            "style_encoder": lambda: Encoder.from_config(config.style_encoder, r),
            "layout_encoder": lambda: Encoder.from_config(config.layout_encoder, r),
            "layout_generator": lambda: LayoutGenerator.from_config(config.layout_generator),
            "image_generator": lambda: ImageGenerator.from_config(config.image_generator),
            "discriminator": lambda: Discriminator.from_config(config.discriminator, r),
        }
        for name in NETWORKS:
            setattr(self, name, build[name]() if name in networks else None)

    # -- step 1: the shots -------------------------------------------------------------------
    def encode(self, rgb: Tensor, contour: Tensor) -> Latents:
        """rgb, contour [B, K, 3, H, W] in [-1, 1] -> latents averaged over the K shots."""
        return self.encode_shots(rgb, contour).mean_over_shots()

    def encode_shots(self, rgb: Tensor, contour: Tensor) -> Latents:
        """rgb, contour [B, K, 3, H, W] in [-1, 1] -> per-shot latents [B, K, z_dim] (E^s, E^l
        on each shot; ``encode`` is their mean over K, as the paper averages them)."""
        b, k = rgb.shape[:2]
        x = torch.cat([rgb, contour], dim=2).flatten(0, 1)
        return Latents(z_style=self.style_encoder(x).view(b, k, -1), z_layout=self.layout_encoder(x).view(b, k, -1))

    # -- step 2: per-avatar precomputation -------------------------------------------------
    def prepare(self, latents: Latents) -> AvatarState:
        """Latents of one avatar ([1, z_dim]) -> the state ``render`` reuses for every frame."""
        return AvatarState(
            latents=latents,
            layout_styles=self.layout_generator.styles(latents.z_layout),
            seed=self.image_generator.seed(latents.z_style),
        )

    # -- step 3: per frame -----------------------------------------------------------------
    def render(self, contour: Tensor, state: AvatarState) -> RenderOutput:
        """contour [N, 3, H, W] in [-1, 1] -> RenderOutput for one prepared avatar.

        On the CPU frames go through in pairs: batch-sized activations beyond glibc's 32 MiB
        mmap threshold (100 MB at 224 px x 64 channels x 8) are page-faulted in afresh on every
        layer, while two frames stay under it and still fill the small low-resolution GEMMs
        better than one (measured, 2 cores: batch 8 whole 688, frame by frame 492, in pairs
        473 ms/frame).
        """
        n, chunk = contour.shape[0], self.cpu_chunk
        step = self.compiled_render or self._render
        if contour.device.type == "cpu" and n > chunk:
            outs = [step(contour[i : i + chunk], state) for i in range(0, n, chunk)]
            return RenderOutput(*(torch.cat(t) for t in zip(*((o.image, o.layout_logits, o.aux_rgb) for o in outs))))
        return step(contour, state)

    cpu_chunk: int = 2
    compiled_render: CompiledOrEager | None = None  # set by for_inference_(compile=True)

    def _render(self, contour: Tensor, state: AvatarState) -> RenderOutput:
        return layout_to_image(self.layout_generator, self.image_generator, contour, layout_styles=state.layout_styles, seed=state.seed)

    def forward(self, contour: Tensor, latents: Latents) -> RenderOutput:
        """contour [N, 3, H, W] with per-example latents [N, z_dim] (training path)."""
        return layout_to_image(self.layout_generator, self.image_generator, contour, z_layout=latents.z_layout, z_style=latents.z_style)

    # -- inference -------------------------------------------------------------------------
    def for_inference_(self, *, channels_last: bool = True, compile: bool = False,
                       dtype: torch.dtype = torch.float32, fused_kernels: bool = True) -> LSR:
        """Prepare in place for rendering only: eval mode, no gradients, the equalized-LR
        scales baked into the weights (saves a weight-sized multiply per layer and call),
        SPADE's γ and β convolutions fused into one (with the "1 +" in its bias), IN(x) shared
        by the SPADE layers that normalise the same x, G^s's 1x1 shortcut folded into its
        SPADE's β convolution (C_out instead of C_in β channels), G^l's 1x1 shortcuts before
        their upsampling, and channels-last memory format (oneDNN's fast convolution layout on CPUs).
        With ``channels_last`` (the CPU) and no ``compile``, every convolution's weight is also
        packed once for oneDNN in ``dtype`` (the render dtype: fp32, or bf16 under autocast)
        with its ReLU or residual addition fused in (``thead.nn.onednn``), and, with
        ``fused_kernels``, every instance norm runs with its modulation and leaky ReLU as two
        passes of ``thead.kernels`` (built with the C compiler on first use; without one, a
        warning and the eager path).
        Outputs equal the reference path's to float32 rounding (tests/nn/test_parity.py).

        ``compile=True`` also runs each render step through ``torch.compile`` (inductor with
        frozen weights: norm + modulation + activation as one loop, oneDNN post-ops). The first
        call of each batch size and dtype compiles (minutes on two cores; cached on disk
        afterwards); without a working compiler it warns once and renders eagerly.

        The result cannot be saved or trained."""
        from thead.nn.layers import SPADE, EqualConv2d, EqualLinear, InstanceNorm
        from thead.nn.layout import ResBlockDown, ResBlockUp

        self.eval().requires_grad_(False)
        for m in list(self.modules()):
            if isinstance(m, (SPADE, ResBlockUp)):
                m.fuse_()  # SPADE: folds its own convs' scales, then fuses γ/β
            elif isinstance(m, InstanceNorm):
                m.narrow_nchw = True
        for m in self.modules():
            if isinstance(m, (EqualConv2d, EqualLinear)):
                m.fold_scale_()
        if self.image_generator is not None:
            for block in self.image_generator.blocks:
                if block.shortcut is not None:
                    block.shortcut.fold_beta_()  # W·β folded into the β convolution
        if channels_last:
            self.to(memory_format=torch.channels_last)
            if not compile and onednn.available() and dtype in (torch.float32, torch.bfloat16):
                for net in (self.layout_generator, self.image_generator):
                    for m in net.modules() if net is not None else ():
                        if isinstance(m, EqualConv2d) and m.weight.device.type == "cpu":
                            m.pack_(dtype)
                        elif isinstance(m, ResBlockDown) and m.conv1.weight.device.type == "cpu":
                            m.fold_blur_(dtype)  # conv1 + blur pooling as one strided 5x5 conv
                        elif isinstance(m, ResBlockUp) and m.conv0.weight.device.type == "cpu":
                            m.fold_upsample_(dtype)  # conv0 of the upsampling at the input's size
            if fused_kernels and not compile and self._cpu_render():
                from thead import kernels

                try:
                    lib = kernels.load()
                except kernels.KernelsUnavailable as e:
                    warnings.warn(f"fused CPU kernels unavailable, rendering without them ({e})", RuntimeWarning,
                                  stacklevel=2)
                else:
                    for net in (self.layout_generator, self.image_generator):
                        for m in net.modules() if net is not None else ():
                            if isinstance(m, InstanceNorm):
                                m.kernels = lib
        if compile:
            self.compiled_render = CompiledOrEager(self._render)
        self.inference_only = True
        return self

    inference_only: bool = False

    def _cpu_render(self) -> bool:
        nets = [n for n in (self.layout_generator, self.image_generator) if n is not None]
        return bool(nets) and all(p.device.type == "cpu" for n in nets for p in n.parameters())

    # -- weights ---------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike, *, overwrite: bool = True) -> Path:
        """Write ``config.json`` + ``model.safetensors`` atomically (temporary folder, rename)."""
        if self.inference_only:
            raise WeightsError("this model was prepared for inference (scales folded); save the original")
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.state_dict().items()}
        return write_weights(directory, self.config, state, overwrite=overwrite)

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo: str | os.PathLike | None = None,
        *,
        revision: str | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        networks: tuple[str, ...] = NETWORKS,
    ) -> LSR:
        """Load a local folder, or a Hub repo id (default: ``$THEAD_WEIGHTS`` or thead's repo).

        Strict: a missing or unexpected tensor, or a shape mismatch, raises ``WeightsError``.
        """
        folder = resolve_weights_folder(path_or_repo, revision=revision)
        text = _read(folder / CONFIG_NAME)
        try:  # checked (types, limits, size) before any network is built
            config = LSRConfig.from_json(text)
        except WeightsError as e:
            raise WeightsError(f"{folder / CONFIG_NAME}: {e}") from None
        model = cls(config, networks=networks)
        try:
            state = load_file(str(folder / WEIGHTS_NAME))
        except FileNotFoundError:
            raise WeightsError(f"{folder} has no {WEIGHTS_NAME}") from None
        except Exception as e:  # safetensors raises its own error types on corrupt headers
            raise WeightsError(f"{folder / WEIGHTS_NAME} is not a readable safetensors file ({e})") from None
        state = {k: v for k, v in state.items() if k.split(".", 1)[0] in networks}
        load_state_strict(model, state, source=str(folder))
        model.weights = WeightsRecord(folder=folder, spec="" if path_or_repo is None else str(path_or_repo),
                                      sha256=sha256_file(folder / WEIGHTS_NAME))
        return model.to(device=device, dtype=dtype).eval()

    weights: WeightsRecord | None = None  # set by from_pretrained; None for a model built in code

    @property
    def weights_sha256(self) -> str | None:
        """sha256 of the ``model.safetensors`` these weights were loaded from (None: built in code)."""
        return self.weights.sha256 if self.weights is not None else None


def resolve_weights_folder(spec: str | os.PathLike | None, *, revision: str | None = None) -> Path:
    """A local folder as-is; anything else goes through the Hub (``thead.hub``)."""
    if spec is not None and Path(spec).is_dir():
        return Path(spec)
    from thead import hub  # only when a download may be needed

    return hub.resolve_weights(spec, revision=revision)


def write_weights(directory: str | os.PathLike, config: LSRConfig, state: dict[str, Tensor], *, overwrite: bool = True) -> Path:
    """A weights folder (``config.json`` + ``model.safetensors``), written atomically
    (temporary folder, rename). ``state``: contiguous float32 CPU tensors."""
    directory = Path(directory)
    with atomic_dir(directory, overwrite=overwrite) as tmp:
        (tmp / CONFIG_NAME).write_text(config.to_json())
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "thead": "lsr"})
    return directory


def expected_shapes(config: LSRConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor an ``LSR(config)`` state dict holds, and its shape (built on the meta
    device: no memory, no initialisation)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in LSR(config).state_dict().items()}


def load_state_strict(module: nn.Module, state: dict[str, Tensor], *, source: str) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing:
        raise WeightsError(f"{source}: {len(missing)} tensors missing, first: {', '.join(missing[:3])}")
    if unexpected:
        raise WeightsError(f"{source}: {len(unexpected)} unexpected tensors, first: {', '.join(unexpected[:3])}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise WeightsError(f"{source}: {k} has shape {tuple(v.shape)}, the config needs {tuple(own[k].shape)}")
    module.load_state_dict(state, strict=True)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise WeightsError(f"{path.parent} has no {path.name}") from None


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
