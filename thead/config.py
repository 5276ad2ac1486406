"""Model configuration: one frozen dataclass per network, nested in ``LSRConfig``.

The hyper-parameters are exactly the networks' constructor arguments (diffusers-style), and
``config.json`` is ``LSRConfig.to_dict()`` with sorted keys plus ``_class_name`` and
``format_version``. ``from_dict`` raises on unknown or missing keys: a port whose value is
exactness never guesses.

``LSRConfig()`` is the authors' default (the released checkpoint, ref §2, §8.6);
``LSRConfig.reduced()`` is the reduced width of the official parity checkpoint
(``shared/parity/README.md``: nf 4, nf_max 48, latent 64, SPADE hidden 16).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from thead.errors import WeightsError

LAYOUT_CLASSES = 19  # the layout's classes: CelebAMask-HQ's 19 face-parsing labels (ref §1.4)

FORMAT_VERSION = 1

# Sane limits for every value a config.json can hold, checked before any network is built
# (the release: widths 512, 6 down-samplings, 98 M parameters). A config outside them is
# refused instead of allocating whatever it asks for.
LIMITS = {
    "in_channels": (1, 64), "out_channels": (1, 64), "aux_channels": (0, 64), "num_classes": (1, 256),
    "nf": (1, 1024), "nf_max": (1, 1024), "z_dim": (1, 2048), "spade_hidden": (1, 1024),
    "num_downsamples": (1, 9), "num_levels": (1, 9), "num_upsamples": (1, 9), "seed_size": (1, 64),
    "resolution": (8, 2048),
}
MAX_PARAMETERS = 1_000_000_000  # the estimate (an upper bound) of a whole LSR's parameters


def _check_fields(config: Any, where: str) -> None:
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name not in LIMITS:
            continue
        low, high = LIMITS[f.name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise WeightsError(f"config '{where}{f.name}' must be an integer from {low} to {high}, got {value!r}")


@dataclass(frozen=True)
class EncoderConfig:
    """E^s / E^l (ref §4.1): 7x7 stem, ``num_downsamples`` x (avg-pool, ResBlock), EqDense."""

    in_channels: int = 6  # RGB ‖ contour
    nf: int = 32
    nf_max: int = 512  # hard-coded in the release (no flag)
    num_downsamples: int = 6
    z_dim: int = 512


    def __post_init__(self) -> None:
        _check_fields(self, "")


@dataclass(frozen=True)
class LayoutGeneratorConfig:
    """G^l (ref §4.2): U-Net of blur-pool ResBlockDown / modulated ResBlockUp."""

    in_channels: int = 3  # the target contour drawing
    nf: int = 32  # segmap_g_nf
    nf_max: int = 512  # g_nf_max
    num_levels: int = 5  # G_num_upsamples
    z_dim: int = 512
    num_classes: int = LAYOUT_CLASSES
    aux_channels: int = 3  # multi-task RGB head (ref §9.3)


    def __post_init__(self) -> None:
        _check_fields(self, "")


@dataclass(frozen=True)
class ImageGeneratorConfig:
    """G^s (ref §4.3): EqDense seed at 7x7, SPADE ResBlocks, bilinear x2 upsampling."""

    nf: int = 32  # g_nf
    nf_max: int = 512  # g_nf_max
    num_upsamples: int = 5
    z_dim: int = 512
    num_classes: int = LAYOUT_CLASSES
    spade_hidden: int = 64  # spade_proj_filters
    seed_size: int = 7
    out_channels: int = 3


    def __post_init__(self) -> None:
        _check_fields(self, "")


@dataclass(frozen=True)
class DiscriminatorConfig:
    """D (ref §4.4): conditional StyleGAN2-like ResNet on [image ‖ contour]."""

    in_channels: int = 6
    nf: int = 32  # d_nf
    nf_max: int = 512  # hard-coded in the release
    num_downsamples: int = 6


    def __post_init__(self) -> None:
        _check_fields(self, "")


@dataclass(frozen=True)
class LSRConfig:
    """The whole LSR model: E^s, E^l, G^l, G^s and D, at a fixed square resolution."""

    style_encoder: EncoderConfig = field(default_factory=EncoderConfig)
    layout_encoder: EncoderConfig = field(default_factory=EncoderConfig)
    layout_generator: LayoutGeneratorConfig = field(default_factory=LayoutGeneratorConfig)
    image_generator: ImageGeneratorConfig = field(default_factory=ImageGeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    resolution: int = 224

    def __post_init__(self) -> None:
        _check_fields(self, "")
        g = self.image_generator
        if g.seed_size * 2**g.num_upsamples != self.resolution:
            raise WeightsError(
                f"image generator makes {g.seed_size * 2**g.num_upsamples}px frames, "
                f"config says resolution {self.resolution}"
            )
        if self.style_encoder.z_dim != g.z_dim or self.layout_encoder.z_dim != self.layout_generator.z_dim:
            raise WeightsError("encoder latent sizes do not match the generators' z_dim")
        for name, n in [("style_encoder", self.style_encoder.num_downsamples), ("layout_encoder", self.layout_encoder.num_downsamples),
                        ("layout_generator", self.layout_generator.num_levels), ("discriminator", self.discriminator.num_downsamples)]:
            if self.resolution >> n < 1:
                raise WeightsError(f"config '{name}' down-samples {self.resolution} px {n} times (below one pixel)")
        if self.estimated_parameters() > MAX_PARAMETERS:
            raise WeightsError(
                f"config describes a model of up to {self.estimated_parameters() / 1e9:.1f} G parameters; "
                f"thead builds at most {MAX_PARAMETERS / 1e9:g} G (the release has 0.1 G)"
            )

    def estimated_parameters(self) -> int:
        """An upper bound of the parameter count, from the widths alone (no network is built):
        every block taken at full width, ~20 W² for its 3x3 convolutions and shortcut, plus the
        dense layers. Tests check it bounds the real count."""
        def blocks(n: int, w: int) -> int:
            return n * 20 * w * w

        enc = [blocks(e.num_downsamples, e.nf_max) + e.z_dim * e.nf_max * 64 for e in (self.style_encoder, self.layout_encoder)]
        lg = self.layout_generator
        layout = blocks(2 * lg.num_levels, lg.nf_max) + lg.num_levels * 4 * lg.z_dim * lg.nf_max
        g = self.image_generator
        spade = 3 * 9 * g.spade_hidden * (g.num_classes + 2 * g.nf_max)
        image = (g.num_upsamples + 1) * (20 * g.nf_max**2 + spade + 4 * g.z_dim * g.nf_max) + g.z_dim * g.seed_size**2 * g.nf_max
        d = self.discriminator
        disc = blocks(d.num_downsamples + 1, d.nf_max) + 64 * d.nf_max
        return sum(enc) + layout + image + disc

    @classmethod
    def reduced(cls) -> LSRConfig:
        """The official parity checkpoint's widths (tiny: 1.1 M parameters)."""
        enc = EncoderConfig(nf=4, nf_max=48, z_dim=64)
        return cls(
            style_encoder=enc,
            layout_encoder=enc,
            layout_generator=LayoutGeneratorConfig(nf=4, nf_max=48, z_dim=64),
            image_generator=ImageGeneratorConfig(nf=4, nf_max=48, z_dim=64, spade_hidden=16),
            discriminator=DiscriminatorConfig(nf=4, nf_max=48),
        )

    @property
    def z_dim(self) -> int:
        return self.style_encoder.z_dim

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LSRConfig:
        d = {k: v for k, v in d.items() if not k.startswith("_")}
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                raise WeightsError(f"config is missing '{f.name}'")
            value = d.pop(f.name)
            sub = _SUBCONFIGS.get(f.name)
            kwargs[f.name] = _build(sub, value, f.name) if sub else value
        if d:
            raise WeightsError(f"config has unknown keys: {', '.join(sorted(d))}")
        return cls(**kwargs)

    def to_json(self) -> str:
        d = {"_class_name": "LSR", "format_version": FORMAT_VERSION, **self.to_dict()}
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LSRConfig:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise WeightsError(f"config.json is not valid JSON: {e}") from None
        except RecursionError:
            raise WeightsError("config.json is nested too deeply to be a thead config") from None
        if not isinstance(d, dict):
            raise WeightsError(f"config.json must hold a JSON object, got a {type(d).__name__}")
        if d.get("_class_name") != "LSR":
            raise WeightsError(f"config.json describes {d.get('_class_name')!r}, not an LSR model")
        if d.get("format_version") != FORMAT_VERSION:
            raise WeightsError(
                f"config.json has format_version {d.get('format_version')}, this thead reads {FORMAT_VERSION}"
            )
        d.pop("format_version")
        return cls.from_dict(d)


_SUBCONFIGS = {
    "style_encoder": EncoderConfig,
    "layout_encoder": EncoderConfig,
    "layout_generator": LayoutGeneratorConfig,
    "image_generator": ImageGeneratorConfig,
    "discriminator": DiscriminatorConfig,
}


def _build(cls: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise WeightsError(f"config '{where}' must be an object")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown, missing = set(value) - names, names - set(value)
    if unknown:
        raise WeightsError(f"config '{where}' has unknown keys: {', '.join(sorted(unknown))}")
    if missing:
        raise WeightsError(f"config '{where}' is missing: {', '.join(sorted(missing))}")
    try:
        return cls(**value)
    except WeightsError as e:  # name the sub-config the value is in
        raise WeightsError(str(e).replace("config '", f"config '{where}.", 1)) from None
