"""Avatars: a person enrolled once, animated any number of times without their photos.

An avatar is one safetensors file in the avatar store, ``$THEAD_HOME/avatars/<name>.safetensors``
(``THEAD_HOME`` defaults to the platform's data folder: ``$XDG_DATA_HOME/thead`` or
``~/.local/share/thead`` on Linux, ``~/Library/Application Support/thead`` on macOS,
``%LOCALAPPDATA%\\thead`` on Windows). It holds:

- ``z_style``, ``z_layout`` float32 [1, z_dim]: z^s, z^l averaged over the K shots (ref §1.8);
- ``shots`` uint8 [K, 224, 224, 3]: the shots' crops, and ``landmarks`` float32 [K, 68, 2]
  (crop pixels): the avatar's own face shape, which relative motion moves (``thead.motion``);
- ``photo_png`` uint8 [bytes]: the first shot's source photo (or video frame) as PNG, its longer
  side at most ``MAX_PHOTO_SIDE``, and ``photo_to_crop`` float64 [3, 3]: the affine from that
  photo's pixels to the first crop's, for paste-back;
- metadata (safetensors string metadata): the sha256 of the weights that made the latents,
  creation time, source, K, landmark backend, crop scale.

Personal fine-tuned weights (``thead finetune``) live beside it in
``<name>.finetuned.safetensors`` (G^l, G^s, D tensors; metadata ``base_weights_sha256``);
``thead animate`` uses them when they were made from the same base weights.
Every file is written atomically.
"""

from __future__ import annotations

import io
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from thead._atomic import atomic_file
from thead._schema import decode, optional, stored_as
from thead.errors import AvatarError, OutputError, UsageError
from thead.model import Latents

FORMAT = "thead-avatar"
FORMAT_VERSION = 1
PERSONAL_FORMAT = FORMAT + "-finetuned"
SUFFIX = ".safetensors"
FINETUNED_SUFFIX = ".finetuned.safetensors"
MAX_PHOTO_SIDE = 2048  # photos are kept for paste-back; larger ones are downscaled to this
# Letters, digits, '-' and '_' (no dots: '<name>.finetuned' must never be another avatar's file).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def thead_home() -> Path:
    """thead's data folder: ``$THEAD_HOME``, else the platform's per-user data folder."""
    env = os.environ.get("THEAD_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "thead"


def check_name(name: str) -> str:
    """Return ``name`` when it is a valid avatar name, else raise ``UsageError``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(
            f"invalid avatar name {name!r}: use 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name


def _photo_size(text: str) -> tuple[int, int]:
    """``"WxH"`` (how avatar metadata stores the photo size) -> (W, H)."""
    parts = text.split("x")
    if len(parts) != 2 or not all(re.fullmatch(r"[0-9]+", p) for p in parts):
        raise ValueError(f'expected "WIDTHxHEIGHT", got {text!r}')
    return int(parts[0]), int(parts[1])


@dataclass(frozen=True, kw_only=True)
class AvatarInfo:
    """An avatar's metadata (what ``thead avatars list/show`` print; read without the tensors).

    weights_sha256: sha256 of the ``model.safetensors`` whose encoders made the latents ("" when
        made with an in-memory model that has no file). weights: those weights as given (a
        folder or Hub repo id; "" when not known).
    created: ISO 8601 UTC time. source: what it was enrolled from. num_shots: K.
    landmarks: the landmark backend ("dlib" or "fan"). crop_scale: ``CropOptions.scale`` used.
    photo_size: (width, height) of the stored photo; z_dim: latent size.

    In the file (``to_metadata``) every value is a string, read back strictly by
    ``thead._schema`` (``text=True``: ints and floats parsed from their decimal text,
    ``photo_size`` as ``"WxH"``): an unknown or missing key or an unparsable value is one
    ``AvatarError`` naming the file and the key. Only ``weights`` may be absent (read as "").
    """

    name: str
    weights_sha256: str
    weights: str = optional("")
    created: str
    source: str
    num_shots: int
    landmarks: str
    crop_scale: float
    photo_size: tuple[int, int] = stored_as(str, _photo_size)
    z_dim: int

    def to_metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "name": self.name,
            "weights_sha256": self.weights_sha256,
            "weights": self.weights,
            "created": self.created,
            "source": self.source,
            "num_shots": str(self.num_shots),
            "landmarks": self.landmarks,
            "crop_scale": repr(self.crop_scale),
            "photo_size": f"{self.photo_size[0]}x{self.photo_size[1]}",
            "z_dim": str(self.z_dim),
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str] | None, where: str) -> AvatarInfo:
        """The metadata of the avatar file ``where`` (its ``format`` and ``format_version``
        checked first), strictly; ``AvatarError`` of one line otherwise."""
        meta = meta or {}
        if meta.get("format") != FORMAT:
            raise AvatarError(f"{where} is not a thead avatar file")
        if meta.get("format_version") != str(FORMAT_VERSION):
            raise AvatarError(
                f"{where} has avatar format version {meta.get('format_version')}, this thead reads {FORMAT_VERSION}"
            )
        fields = {k: v for k, v in meta.items() if k not in ("format", "format_version")}
        return decode(cls, fields, error=AvatarError, source=where, text=True)

    def __post_init__(self) -> None:
        """Metadata values within what thead writes (they size what is loaded next)."""
        w, h = self.photo_size
        problems = [
            (not 1 <= self.num_shots <= 4096, f"num_shots {self.num_shots}"),
            (not 1 <= self.z_dim <= 2048, f"z_dim {self.z_dim}"),
            (not (math.isfinite(self.crop_scale) and 0.1 <= self.crop_scale <= 10), f"crop_scale {self.crop_scale}"),
            (not (1 <= w <= MAX_PHOTO_SIDE and 1 <= h <= MAX_PHOTO_SIDE), f"photo_size {w}x{h}"),
        ]
        bad = [what for wrong, what in problems if wrong]
        if bad:
            raise AvatarError(f"avatar '{self.name}' has impossible metadata: {', '.join(bad)}")


@dataclass(frozen=True, eq=False)
class Avatar:
    """An enrolled person.

    z_style, z_layout: float32 [1, z_dim] on the CPU.
    shots: uint8 [K, 224, 224, 3] RGB crops; landmarks: float32 [K, 68, 2] their landmarks (crop
        pixels).
    photo: uint8 [H, W, 3] RGB, the first shot's source (longer side <= ``MAX_PHOTO_SIDE``).
    photo_to_crop: float64 [3, 3] affine, photo pixel (x, y, 1) -> first-crop pixel.
    """

    info: AvatarInfo
    z_style: torch.Tensor
    z_layout: torch.Tensor
    shots: np.ndarray
    landmarks: np.ndarray
    photo: np.ndarray
    photo_to_crop: np.ndarray

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def num_shots(self) -> int:
        return int(self.shots.shape[0])

    @property
    def latents(self) -> Latents:
        return Latents(z_style=self.z_style, z_layout=self.z_layout)

    @property
    def weights(self) -> str:
        """The weights it was enrolled with, as given (folder or Hub repo id; "" if unknown)."""
        return self.info.weights

    @property
    def reference_landmarks(self) -> np.ndarray:
        """float32 [68, 2]: the first shot's landmarks (crop pixels), the face that relative
        motion moves; the first shot is also the photo that paste-back composites into."""
        return self.landmarks[0]

    @property
    def crop_to_photo(self) -> np.ndarray:
        return np.linalg.inv(self.photo_to_crop)


@dataclass(frozen=True)
class PersonalWeights:
    """An avatar's fine-tuned G^l, G^s (and D) tensors, and the base weights they started from."""

    state: dict[str, torch.Tensor]
    base_weights_sha256: str
    created: str


@dataclass(frozen=True)
class _PersonalMetadata:
    """The metadata of ``<name>.finetuned.safetensors`` (``created`` may be absent: "")."""

    format: Literal[PERSONAL_FORMAT]
    base_weights_sha256: str
    created: str = optional("")


def _encode_png(image: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=4)
    return np.frombuffer(buf.getvalue(), np.uint8)


def _decode_png(data: np.ndarray, where: str, size: tuple[int, int] | None = None) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data.tobytes())) as im:
            if size is not None and im.size != tuple(size):  # checked from the header, before decoding
                raise AvatarError(f"{where}: the stored photo is {im.size[0]}x{im.size[1]}, its metadata says {size[0]}x{size[1]}")
            return np.asarray(im.convert("RGB"))
    except AvatarError:
        raise
    except Exception as e:  # PIL raises several types for corrupt data
        raise AvatarError(f"{where}: the stored photo is corrupt ({e})") from None


_TENSORS = {  # name: (dtypes, shape with K for the shots and Z for z_dim)
    "z_style": ((torch.float32,), (1, "Z")),
    "z_layout": ((torch.float32,), (1, "Z")),
    "shots": ((torch.uint8,), ("K", 224, 224, 3)),
    "landmarks": ((torch.float32,), ("K", 68, 2)),
    "photo_png": ((torch.uint8,), (None,)),
    "photo_to_crop": ((torch.float64, torch.float32), (3, 3)),
}


def _check_tensors(t: dict[str, torch.Tensor], info: AvatarInfo, where: str) -> None:
    """A hand-edited or damaged avatar is refused here, naming what is wrong: missing tensors,
    dtypes, shapes (K shots of 224x224 RGB with 68 landmarks each, latents of the metadata's
    size), non-finite values, a crop transform that cannot be inverted."""
    missing = [k for k in _TENSORS if k not in t]
    if missing:
        raise AvatarError(f"{where} lacks {', '.join(missing)}")
    sizes = {"K": info.num_shots, "Z": info.z_dim}
    for name, (dtypes, shape) in _TENSORS.items():
        v = t[name]
        if v.dtype not in dtypes:
            raise AvatarError(f"{where}: {name} is {str(v.dtype).removeprefix('torch.')}, expected {str(dtypes[0]).removeprefix('torch.')}")
        want = tuple(sizes.get(d, d) if isinstance(d, str) else d for d in shape)
        if len(v.shape) != len(want) or any(w is not None and s != w for s, w in zip(v.shape, want)):
            shown = "x".join("N" if w is None else str(w) for w in want)
            raise AvatarError(f"{where}: {name} has shape {'x'.join(map(str, v.shape)) or 'scalar'}, expected {shown}")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise AvatarError(f"{where}: {name} holds NaN or infinite values")
    m = t["photo_to_crop"].double()
    if not torch.allclose(m[2], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)) or abs(float(torch.linalg.det(m[:2, :2]))) < 1e-9:
        raise AvatarError(f"{where}: photo_to_crop is not an invertible affine transform")


def limit_photo(photo: np.ndarray, photo_to_crop: np.ndarray, max_side: int = MAX_PHOTO_SIDE):
    """Downscale a photo whose longer side exceeds ``max_side`` and adjust its affine.

    Returns (photo uint8 [H', W', 3], photo_to_crop for the downscaled photo).
    """
    h, w = photo.shape[:2]
    s = max(h, w) / max_side
    if s <= 1.0:
        return photo, photo_to_crop
    nw, nh = max(1, round(w / s)), max(1, round(h / s))
    small = np.asarray(Image.fromarray(photo).resize((nw, nh), Image.Resampling.LANCZOS))
    # Small pixel x' (centre convention) covers big pixels around (x' + 0.5) * w/nw - 0.5.
    sx, sy = w / nw, h / nh
    small_to_big = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    return small, photo_to_crop @ small_to_big


def now_utc() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


class AvatarStore:
    """The avatars under ``root`` (default ``thead_home() / "avatars"``)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else thead_home() / "avatars"

    def path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}{SUFFIX}"

    def finetuned_path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}{FINETUNED_SUFFIX}"

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.glob(f"*{SUFFIX}"):
            stem = p.name[: -len(SUFFIX)]
            if not p.name.endswith(FINETUNED_SUFFIX) and _NAME.fullmatch(stem):
                out.append(stem)
        return sorted(out)

    def _missing(self, name: str) -> AvatarError:
        known = self.names()
        hint = f"known avatars: {', '.join(known)}" if known else "no avatars are enrolled yet (thead enroll PHOTO --name NAME)"
        return AvatarError(f"no avatar named '{name}' in {self.root}; {hint}")

    # -- write -----------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Fail before any work when avatars cannot be stored here (``THEAD_HOME`` a file, a
        read-only folder): created if missing, probed by creating a file in it."""
        for p in (self.root, *self.root.parents):
            if p.exists() and not p.is_dir():
                raise OutputError(f"cannot store avatars in {self.root}: {p} is a file, not a folder (check THEAD_HOME)")
            if p.exists():
                break
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".probe.", dir=self.root)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise OutputError(f"cannot store avatars in {self.root}: {e.strerror or e} (check THEAD_HOME)") from None

    def overwrite_note(self, name: str) -> str | None:
        """What replacing avatar ``name`` discards, said to the user (None when it is new)."""
        if not self.exists(name):
            return None
        try:
            info = self.info(name)
            what = f"'{name}' ({info.num_shots} shot{'s' if info.num_shots != 1 else ''}, enrolled {info.created})"
        except AvatarError:
            what = f"'{name}' (unreadable)"
        tuned = self.finetuned_path(name)
        extra = f" and its fine-tuned weights {tuned}" if tuned.is_file() else ""
        return f"replaced avatar {what}{extra}"

    def save(self, avatar: Avatar, *, overwrite: bool = False) -> Path:
        """Write the avatar atomically; an existing one is replaced only with ``overwrite``.
        Replacing an avatar removes its fine-tuned weights (they belong to the old latents)."""
        path = self.path(avatar.name)
        if path.exists() and not overwrite:
            raise AvatarError(f"an avatar named '{avatar.name}' already exists (choose another --name or use --overwrite)")
        self.root.mkdir(parents=True, exist_ok=True)
        tensors = {
            "z_style": avatar.z_style.detach().to("cpu", torch.float32).contiguous(),
            "z_layout": avatar.z_layout.detach().to("cpu", torch.float32).contiguous(),
            "shots": torch.from_numpy(np.ascontiguousarray(avatar.shots, np.uint8)),
            "landmarks": torch.from_numpy(np.ascontiguousarray(avatar.landmarks, np.float32)),
            "photo_png": torch.from_numpy(_encode_png(avatar.photo).copy()),
            "photo_to_crop": torch.from_numpy(np.ascontiguousarray(avatar.photo_to_crop, np.float64)),
        }
        with atomic_file(path) as tmp:
            save_file(tensors, str(tmp), metadata=avatar.info.to_metadata())
        if overwrite:
            self.finetuned_path(avatar.name).unlink(missing_ok=True)
        return path

    def save_finetuned(self, name: str, state: dict[str, torch.Tensor], base_weights_sha256: str | None = None) -> Path:
        """Store personal weights (``thead.train.finetune``'s state dict) for an existing avatar,
        atomically. ``base_weights_sha256``: the weights fine-tuning started from (default: the
        ones the avatar was enrolled with)."""
        if base_weights_sha256 is None:
            base_weights_sha256 = self.info(name).weights_sha256
        elif not self.exists(name):
            raise self._missing(name)
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
        meta = {"format": PERSONAL_FORMAT, "base_weights_sha256": base_weights_sha256, "created": now_utc()}
        path = self.finetuned_path(name)
        with atomic_file(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return path

    save_personal_weights = save_finetuned

    def remove(self, name: str) -> list[Path]:
        """Delete an avatar and its fine-tuned weights; returns the files removed."""
        path = self.path(name)
        if not path.is_file():
            raise self._missing(name)
        removed = []
        for p in (path, self.finetuned_path(name)):
            if p.is_file():
                p.unlink()
                removed.append(p)
        return removed

    # -- read ------------------------------------------------------------------------------
    def info(self, name: str) -> AvatarInfo:
        """The metadata only (reads the file's header, not its tensors)."""
        path = self.path(name)
        if not path.is_file():
            raise self._missing(name)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata()
        except (SafetensorError, OSError) as e:
            raise AvatarError(f"{path} is corrupt ({e}); remove it with thead avatars rm {name}") from None
        return AvatarInfo.from_metadata(meta, str(path))

    def list(self) -> list[AvatarInfo]:
        """Every readable avatar, sorted by name (unreadable files are skipped)."""
        out = []
        for name in self.names():
            try:
                out.append(self.info(name))
            except AvatarError:
                continue
        return out

    def load(self, name: str) -> Avatar:
        info = self.info(name)
        path = self.path(name)
        try:
            t = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise AvatarError(f"{path} is corrupt ({e}); remove it with thead avatars rm {name}") from None
        _check_tensors(t, info, str(path))
        photo = _decode_png(t["photo_png"].numpy(), str(path), info.photo_size)
        return Avatar(
            info=info,
            z_style=t["z_style"],
            z_layout=t["z_layout"],
            shots=t["shots"].numpy(),
            landmarks=t["landmarks"].numpy(),
            photo=photo,
            photo_to_crop=t["photo_to_crop"].numpy(),
        )

    def load_finetuned(self, name: str) -> PersonalWeights | None:
        """The avatar's personal weights, or None when it has none."""
        path = self.finetuned_path(name)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            state = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise AvatarError(f"{path} is corrupt ({e}); remove it or fine-tune again") from None
        if "base_weights_sha256" not in meta:
            raise AvatarError(f"{path} does not say which base weights it was fine-tuned from")
        info = decode(_PersonalMetadata, meta, error=AvatarError, source=str(path), text=True)
        return PersonalWeights(state=state, base_weights_sha256=info.base_weights_sha256, created=info.created)
