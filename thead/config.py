"""Model configuration: one frozen dataclass per network, nested in ``LSRConfig``.

The hyper-parameters are exactly the networks' constructor arguments (diffusers-style), and
``config.json`` is ``LSRConfig.to_dict()`` with sorted keys plus ``_class_name`` and
``format_version``. ``from_dict`` reads it with ``thead._schema``'s strict decoder: an unknown
or missing key, a value of the wrong type or outside its ``bounded`` range is one
``WeightsError`` naming the key (``image_generator.nf: expected an int, got "32"``); a port
whose value is exactness never guesses.

``LSRConfig()`` is the authors' default (the released checkpoint, ref §2, §8.6);
``LSRConfig.reduced()`` is the reduced width of the official parity checkpoint
(``shared/parity/README.md``: nf 4, nf_max 48, latent 64, SPADE hidden 16).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from thead._schema import bounded, check_bounds, decode, show
from thead.errors import WeightsError

LAYOUT_CLASSES = 19  # the layout's classes: CelebAMask-HQ's 19 face-parsing labels (ref §1.4)

FORMAT_VERSION = 1

# Sane limits for every value a config.json can hold, checked before any network is built
# (the release: widths 512, 6 down-samplings, 98 M parameters), declared on each field with
# ``bounded`` (checked by ``thead._schema`` when read, and by ``__post_init__`` when built in
# code). A config outside them is refused instead of allocating whatever it asks for.
MAX_PARAMETERS = 1_000_000_000  # the estimate (an upper bound) of a whole LSR's parameters


def _channels(default: int, low: int = 1) -> int:
    return bounded(default, low, 64)


def _width(default: int) -> int:
    return bounded(default, 1, 1024)


def _depth(default: int) -> int:
    return bounded(default, 1, 9)


def _latent(default: int = 512) -> int:
    return bounded(default, 1, 2048)


def _num_classes() -> int:
    return bounded(LAYOUT_CLASSES, 1, 256)


@dataclass(frozen=True)
class EncoderConfig:
    """E^s / E^l (ref §4.1): 7x7 stem, ``num_downsamples`` x (avg-pool, ResBlock), EqDense."""

    in_channels: int = _channels(6)  # RGB ‖ contour
    nf: int = _width(32)
    nf_max: int = _width(512)  # hard-coded in the release (no flag)
    num_downsamples: int = _depth(6)
    z_dim: int = _latent()

    def __post_init__(self) -> None:
        check_bounds(self, WeightsError)


@dataclass(frozen=True)
class LayoutGeneratorConfig:
    """G^l (ref §4.2): U-Net of blur-pool ResBlockDown / modulated ResBlockUp."""

    in_channels: int = _channels(3)  # the target contour drawing
    nf: int = _width(32)  # segmap_g_nf
    nf_max: int = _width(512)  # g_nf_max
    num_levels: int = _depth(5)  # G_num_upsamples
    z_dim: int = _latent()
    num_classes: int = _num_classes()
    aux_channels: int = _channels(3, low=0)  # multi-task RGB head (ref §9.3)


    def __post_init__(self) -> None:
        check_bounds(self, WeightsError)


@dataclass(frozen=True)
class ImageGeneratorConfig:
    """G^s (ref §4.3): EqDense seed at 7x7, SPADE ResBlocks, bilinear x2 upsampling."""

    nf: int = _width(32)  # g_nf
    nf_max: int = _width(512)  # g_nf_max
    num_upsamples: int = _depth(5)
    z_dim: int = _latent()
    num_classes: int = _num_classes()
    spade_hidden: int = _width(64)  # spade_proj_filters
    seed_size: int = bounded(7, 1, 64)
    out_channels: int = _channels(3)


    def __post_init__(self) -> None:
        check_bounds(self, WeightsError)


@dataclass(frozen=True)
class DiscriminatorConfig:
    """D (ref §4.4): conditional StyleGAN2-like ResNet on [image ‖ contour]."""

    in_channels: int = _channels(6)
    nf: int = _width(32)  # d_nf
    nf_max: int = _width(512)  # hard-coded in the release
    num_downsamples: int = _depth(6)

    def __post_init__(self) -> None:
        check_bounds(self, WeightsError)


@dataclass(frozen=True)
class LSRConfig:
    """The whole LSR model: E^s, E^l, G^l, G^s and D, at a fixed square resolution."""

    style_encoder: EncoderConfig = field(default_factory=EncoderConfig)
    layout_encoder: EncoderConfig = field(default_factory=EncoderConfig)
    layout_generator: LayoutGeneratorConfig = field(default_factory=LayoutGeneratorConfig)
    image_generator: ImageGeneratorConfig = field(default_factory=ImageGeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    resolution: int = bounded(224, 8, 2048)

    def __post_init__(self) -> None:
        check_bounds(self, WeightsError)
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
    def from_dict(cls, d: dict[str, Any], *, source: str = "") -> LSRConfig:
        """The config in ``d`` (keys starting with ``_`` are ignored), strictly: every key of
        every sub-config present, no unknown key, exact types (``thead._schema``), the limits.
        ``WeightsError`` names ``source`` (the file, "" to leave it to the caller) and the key."""
        if not isinstance(d, dict):
            return decode(cls, d, error=WeightsError, source=source)
        return decode(cls, {k: v for k, v in d.items() if not str(k).startswith("_")}, error=WeightsError, source=source)

    def to_json(self) -> str:
        d = {"_class_name": "LSR", "format_version": FORMAT_VERSION, **self.to_dict()}
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "") -> LSRConfig:
        """Parse ``config.json`` (its text): ``_class_name`` "LSR", this ``format_version``,
        then ``from_dict``. Errors are one line, prefixed with ``source`` when given."""
        name = source or "config.json"
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise WeightsError(f"{name} is not valid JSON: {e}") from None
        except RecursionError:
            raise WeightsError(f"{name} is nested too deeply to be a thead config") from None
        if not isinstance(d, dict):
            raise WeightsError(f"{name} must hold a JSON object, got a {type(d).__name__}")
        if d.get("_class_name") != "LSR":
            raise WeightsError(f"{name} describes {show(d.get('_class_name'))}, not an LSR model")
        if d.get("format_version") != FORMAT_VERSION:
            raise WeightsError(
                f"{name} has format_version {show(d.get('format_version'))}, this thead reads {FORMAT_VERSION}"
            )
        d.pop("format_version")
        return cls.from_dict(d, source=source)
