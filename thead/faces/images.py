"""Reading photos whatever their mode, bit depth or orientation; uint8 <-> model tensors.

Every image inside thead is ``np.ndarray`` HxWx3 uint8 RGB in display orientation (EXIF
applied). Model inputs are float CHW in [-1, 1] via ``x*2/255 - 1`` (ref §1.1).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from thead._atomic import atomic_file
from thead.errors import ImageError
from thead.validate import MIN_IMAGE_SIDE

if TYPE_CHECKING:  # torch is imported only by the tensor helpers (prep workers never need it)
    import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")


def _to_rgb8(im: Image.Image) -> np.ndarray:
    """Any PIL mode -> HxWx3 uint8 RGB (16-bit and float scaled, alpha composited on white)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im).astype(np.float64)
        # 16-bit PNGs open as "I;16" or "I" holding 0..65535; 8-bit data never needs a "I" mode.
        a = np.clip(np.round(a / 257.0), 0, 255) if a.max(initial=0) > 255 else np.clip(a, 0, 255)
        return np.repeat(a.astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if a.max(initial=0) <= 1.0:  # float images are usually in [0, 1]
            a = a * 255.0
        return np.repeat(np.clip(np.round(a), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read a photo as HxWx3 uint8 RGB, EXIF orientation applied.

    Grayscale, palette, CMYK, 16-bit and alpha images are converted (16-bit scaled to 8 bits,
    transparency composited on white). Raises ``ImageError`` (one line) when the file is
    missing, is not an image, or is truncated.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path} does not exist")
    if path.is_dir():
        raise ImageError(f"{path} is a folder, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
                rgb = _to_rgb8(im)
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ImageError(f"{path} cannot be read as an image: {e}") from None
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageError(f"{path} is an empty image")
    if min(rgb.shape[:2]) < MIN_IMAGE_SIDE:  # the face detectors fail on tinier images
        raise ImageError(f"{path} is {rgb.shape[1]}x{rgb.shape[0]} px, too small to hold a face (at least {MIN_IMAGE_SIDE} px a side)")
    return np.ascontiguousarray(rgb)


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a uint8 HxWx3 (RGB) or HxW (grayscale) array as PNG, atomically."""
    if image.dtype != np.uint8:
        raise ValueError(f"save_image needs uint8, got {image.dtype}")
    with atomic_file(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float32 3xHxW in [-1, 1] (``x*2/255 - 1``, ref §1.1).

    The release's float32 operations in its order (``x*2`` exact, then ``/255``, then ``-1``):
    multiplying by a rounded 2/255 instead is one ulp off on some levels. The arithmetic runs in
    numpy (the same IEEE float32 operations, so the same values): a torch op here would start an
    OpenMP team in the calling thread (animate's input thread), whose spinning workers take CPU
    from the rendering threads."""
    import torch

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"to_tensor needs uint8 HxWx3, got {image.dtype} {image.shape}")
    x = image.transpose(2, 0, 1).astype(np.float32, order="C")
    x *= np.float32(2)
    x /= np.float32(255)
    x -= np.float32(1)
    return torch.from_numpy(x)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Model output [..., 3, H, W] (linear, any range) -> uint8 of the same shape on the same
    device, ``round(127.5 + 127.5·x)`` clipped (ref §1.1): the one float-to-pixel conversion."""
    import torch

    return torch.round(127.5 + 127.5 * x.detach().float()).clamp_(0, 255).to(torch.uint8)


def from_tensor(x: torch.Tensor) -> np.ndarray:
    """float 3xHxW (or 1x3xHxW) in [-1, 1] -> uint8 HxWx3 (``to_uint8``)."""
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"from_tensor takes one image, got a batch of {x.shape[0]}")
        x = x[0]
    return np.ascontiguousarray(to_uint8(x).cpu().permute(1, 2, 0).numpy())
