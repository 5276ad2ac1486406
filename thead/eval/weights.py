"""The metric networks' published weights: where they come from, their pins, and a local cache.

Each file is looked for, in order, in thead's cache (``$THEAD_CACHE/metrics``, else
``~/.cache/thead/metrics``), in torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``,
where torchvision, lpips and pytorch-fid users already have these files) and, for LPIPS's heads,
in an installed ``lpips`` package (found without importing it, so torchvision is not needed).
Otherwise it is downloaded from the publisher (unless downloads are off). Every file is checked
against its sha256 pin before it is read, and ``.pth`` files are read with torch's restricted
``weights_only`` loader (tensors only, no arbitrary objects).

Pins: torch-hub file names carry the first 8 hex digits of the sha256 (``alexnet-owt-7be5be79``);
where only that prefix is published, only the prefix is pinned (marked below).
"""

from __future__ import annotations

import importlib.util
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from thead._atomic import atomic_file
from thead._hash import sha256_file
from thead.errors import WeightsError


class WeightsUnavailable(WeightsError):
    """A metric's weights are neither cached nor downloadable (offline): the metric is skipped."""


@dataclass(frozen=True)
class PublishedWeights:
    """One published weights file.

    sha256: the full hex digest, or a prefix where only that is published (torch-hub names).
    """

    name: str
    filename: str
    urls: tuple[str, ...]
    sha256: str
    package_path: tuple[str, str] | None = None  # (package, path inside it) holding a copy


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
    """``$THEAD_CACHE/metrics``, else ``$XDG_CACHE_HOME/thead/metrics`` (``~/.cache``)."""
    if env := os.environ.get("THEAD_CACHE"):
        return Path(env) / "metrics"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "thead" / "metrics"


def _candidates(spec: PublishedWeights, cache_dir: Path) -> list[Path]:
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    found = [cache_dir / spec.filename, torch_home / "hub" / "checkpoints" / spec.filename]
    if spec.package_path is not None:
        package, inner = spec.package_path
        try:
            origin = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            origin = None
        if origin is not None and origin.origin is not None:
            found.append(Path(origin.origin).parent / inner)
    return found


def check_pin(spec: PublishedWeights, path: Path) -> None:
    digest = sha256_file(path)
    if not digest.startswith(spec.sha256):
        raise WeightsError(f"{path} has sha256 {digest[:16]}..., {spec.name} must start with {spec.sha256[:16]}")


def resolve(spec: PublishedWeights, *, cache_dir: str | os.PathLike | None = None, allow_download: bool = True) -> Path:
    """A local, pin-checked copy of ``spec``: cached, found, or downloaded into the cache."""
    cache = Path(cache_dir) if cache_dir is not None else metrics_cache_dir()
    for path in _candidates(spec, cache):
        if path.is_file():
            check_pin(spec, path)
            return path
    target = cache / spec.filename
    if not allow_download:
        raise WeightsUnavailable(f"{spec.name} weights not found (put {spec.filename} at {target})")
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightsError(f"cannot create the weights cache {cache}: {e.strerror}") from None
    errors = []
    for url in spec.urls:
        try:
            with atomic_file(target) as tmp:
                _download(url, tmp)
                check_pin(spec, tmp)
            return target
        except _DownloadFailed as e:
            errors.append(str(e))
    raise WeightsUnavailable(
        f"{spec.name} weights could not be downloaded ({errors[0]}); put {spec.filename} at {target}"
    )


class _DownloadFailed(Exception):
    """Not an OSError, so ``atomic_file`` removes the partial file and lets it through as is."""


def _download(url: str, target: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=30) as r, open(target, "wb") as f:
            while block := r.read(1 << 20):
                f.write(block)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise _DownloadFailed(str(getattr(e, "reason", e))) from None


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
