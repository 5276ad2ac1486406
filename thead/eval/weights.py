"""The metric networks' published weights: where they come from, their pins, and a local cache.

Each file is looked for, in order, in thead's cache (``thead.download.cache_root()/metrics``),
in torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``,
where torchvision, lpips and pytorch-fid users already have these files) and, for LPIPS's heads,
in an installed ``lpips`` package (found without importing it, so torchvision is not needed).
Otherwise it is downloaded from the publisher through ``thead.download`` (unless downloads are
off). Every file is checked
against its sha256 pin before it is read, and ``.pth`` files are read with torch's restricted
``weights_only`` loader (tensors only, no arbitrary objects).

Pins: torch-hub file names carry the first 8 hex digits of the sha256 (``alexnet-owt-7be5be79``);
where only that prefix is published, only the prefix is pinned (marked below).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from thead.download import Asset, AssetUnavailable, cache_root, check_asset, resolve_asset
from thead.errors import WeightsError


class WeightsUnavailable(WeightsError):
    """A metric's weights are neither cached nor downloadable (offline): the metric is skipped."""


@dataclass(frozen=True)
class PublishedWeights(Asset):
    """One published metric weights file (a ``thead.download.Asset`` cached under
    ``metrics/``); ``package_path``: (package, path inside it) of an installed copy."""

    subdir: str = "metrics"
    package_path: tuple[str, str] | None = None


# torchvision's ImageNet AlexNet (LPIPS's backbone). Only the name's sha256 prefix is published.
ALEXNET = PublishedWeights(
    name="AlexNet (torchvision ImageNet)",
    filename="alexnet-owt-7be5be79.pth",
    urls=("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",),
    sha256="7be5be79",
)
# LPIPS v0.1 linear heads for AlexNet (richzhang/PerceptualSimilarity, also shipped in the lpips
# wheel); the sha256 is of the 6,009-byte file in lpips 0.1.4.
LPIPS_ALEX_HEADS = PublishedWeights(
    name="LPIPS v0.1 AlexNet heads",
    filename="lpips-v0.1-alex.pth",
    urls=("https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",),
    sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    package_path=("lpips", "weights/v0.1/alex.pth"),
)
# pytorch-fid's port of the TF Inception "2015-12-05" graph; torch-fidelity publishes the same
# file under another name (same sha256 prefix). The full digest is from a published record of
# torch-fidelity's copy; its prefix matches both names.
FID_INCEPTION = PublishedWeights(
    name="FID Inception-v3 (pt_inception-2015-12-05)",
    filename="pt_inception-2015-12-05-6726825d.pth",
    urls=(
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
    ),
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
)


def metrics_cache_dir() -> Path:
    """``thead.download.cache_root()/metrics``."""
    return cache_root() / "metrics"


def _elsewhere(spec: PublishedWeights) -> tuple[Path, ...]:
    """Copies other programs keep: torch hub's checkpoints, an installed package."""
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    found = [torch_home / "hub" / "checkpoints" / spec.filename]
    if spec.package_path is not None:
        package, inner = spec.package_path
        try:
            origin = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            origin = None
        if origin is not None and origin.origin is not None:
            found.append(Path(origin.origin).parent / inner)
    return tuple(found)


def check_pin(spec: PublishedWeights, path: Path) -> None:
    check_asset(spec, path)


def resolve(spec: PublishedWeights, *, cache_dir: str | os.PathLike | None = None, allow_download: bool = True) -> Path:
    """A local, pin-checked copy of ``spec``: cached, found, or downloaded into the cache
    (``thead.download.resolve_asset``); ``WeightsUnavailable`` when it cannot be had."""
    try:
        return resolve_asset(spec, cache_dir=cache_dir, also=_elsewhere(spec), allow_download=allow_download)
    except AssetUnavailable as e:
        raise WeightsUnavailable(str(e)) from None


def load_state(spec: PublishedWeights, **kwargs) -> dict[str, Tensor]:
    """``resolve`` then read the tensors (restricted loader; nothing but tensors is accepted)."""
    path = resolve(spec, **kwargs)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file or non-tensor content
        raise WeightsError(f"{path} is not a readable state dict ({e})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state
