"""Training examples from processed clips, assembled as the release does (ref §1.5-§1.7).

Layouts read (any depth; a clip is a folder of frames, named by its last three components):
- ``thead prep`` / processed VoxCeleb2: ``<root>/[<split>/]<person>/<video>/<clip>/NNNNN_{rgb,contour,segmap_merged}.png``
- FSTH: ``<root>/{train,test}/<person>/<video>/combined/000NN_{rgb,contour,segmap_merged}.png``

1. ``DatasetIndex``: one walk of the tree lists every clip and its frame numbers; saved as one
   ``.npz`` so that a million clips load in about a second afterwards.
2. ``ExampleSampler``: the global example stream is the concatenation of per-epoch
   permutations of the clips (seeded by (seed, epoch)); global step s takes positions
   [s·G, (s+1)·G) and rank r the r-th slice of b = G / world. One process at batch G and
   G/b processes at batch b therefore see the same examples, and resuming at any step needs
   only the position (= examples consumed).
3. ``ClipDataset``: example at position p (seed (seed, p)): the first ``window`` (10) frames of
   the clip, sorted; a random permutation of them; the first K are the shots, the *last* index
   the target (5 distinct frames, ref §1.7). A frame that cannot be read makes the example fall
   back to another clip drawn from the same seed; the skipped files travel with the batch and
   are counted, never raised mid-epoch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from thead._atomic import atomic_file
from thead.faces.images import to_tensor
from thead.faces.parsing import NUM_CLASSES
from thead.errors import DatasetError

INDEX_FORMAT = "thead-train-index/1"
DEFAULT_INDEX_NAME = "thead-index.npz"
RGB, CONTOUR, SEGMAP = "_rgb.png", "_contour.png", "_segmap_merged.png"


@dataclass(frozen=True)
class Clip:
    """One clip folder: ``directory`` relative to the root (posix), sorted frame numbers."""

    directory: str
    frames: tuple[int, ...]
    has_segmaps: bool

    @property
    def ids(self) -> tuple[str, str, str]:
        """(person, video, clip): the folder's last three components, as the release reads them."""
        parts = ("", "", "", *self.directory.split("/"))
        return parts[-3], parts[-2], parts[-1]


@dataclass(frozen=True)
class IndexReport:
    """What the walk found besides usable clips."""

    clips: int
    frames: int
    folders_without_contours: int = 0
    frames_without_contour: int = 0
    badly_named_frames: int = 0


class DatasetIndex:
    """Every clip under ``root``: flat arrays (directories, frame-number offsets, segmap flags)."""

    def __init__(self, root: Path, directories: np.ndarray, offsets: np.ndarray, frames: np.ndarray, segmaps: np.ndarray):
        self.root = Path(root)
        self.directories, self.offsets, self.frames, self.segmaps = directories, offsets, frames, segmaps
        self._counts = np.diff(offsets)

    def __len__(self) -> int:
        return len(self.directories)

    def clip(self, i: int) -> Clip:
        a, b = self.offsets[i], self.offsets[i + 1]
        return Clip(self.directories[i].decode(), tuple(int(x) for x in self.frames[a:b]), bool(self.segmaps[i]))

    def num_frames(self) -> np.ndarray:
        """Frames per clip, int64 [len]."""
        return self._counts

    def subset(self, keep: np.ndarray) -> DatasetIndex:
        """The clips where ``keep`` (bool [len]) is true."""
        counts = self.num_frames()
        offsets = np.concatenate([[0], np.cumsum(counts[keep])]).astype(np.int64)
        frames = self.frames[np.repeat(keep, counts)]
        return DatasetIndex(self.root, self.directories[keep], offsets, frames, self.segmaps[keep])

    def usable(self, *, min_frames: int, need_segmaps: bool) -> DatasetIndex:
        """Clips with at least ``min_frames`` frames (the release skips shorter parts, ref §1.6)
        and, when asked, oracle segmentations; ``DatasetError`` if none is left."""
        keep = self.num_frames() >= min_frames
        if need_segmaps:
            keep &= self.segmaps
        if not keep.any():
            what = f"{min_frames}+ frames" + (" and _segmap_merged.png files" if need_segmaps else "")
            raise DatasetError(f"none of the {len(self)} clips under {self.root} has {what}")
        return self.subset(keep)

    # -- building and caching --------------------------------------------------------------
    @classmethod
    def build(cls, root: str | os.PathLike) -> tuple[DatasetIndex, IndexReport]:
        """Walk ``root`` once (sorted, so the index is the same on every machine)."""
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"data folder {root} does not exist")
        dirs, counts, frames, segs = [], [], [], []
        no_contour_dirs = no_contour = bad_names = total = 0
        for folder, subdirs, files in os.walk(root):
            subdirs.sort()
            names = set(files)
            stems = sorted(f[: -len(RGB)] for f in files if f.endswith(RGB))
            if not stems:
                continue
            good = []
            for s in stems:
                if not (s.isdigit() and len(s) == 5):
                    bad_names += 1
                elif s + CONTOUR not in names:
                    no_contour += 1
                else:
                    good.append(s)
            if not good:
                no_contour_dirs += 1
                continue
            rel = Path(folder).relative_to(root).as_posix()
            dirs.append(rel.encode())
            counts.append(len(good))
            frames.extend(int(s) for s in good)
            segs.append(all(s + SEGMAP in names for s in good))
            total += len(good)
        report = IndexReport(len(dirs), total, no_contour_dirs, no_contour, bad_names)
        if not dirs:
            hint = f" ({no_contour_dirs} folders have frames without _contour.png: run `thead prep` first)" if no_contour_dirs else ""
            raise DatasetError(f"no clips with NNNNN_rgb.png + NNNNN_contour.png under {root}{hint}")
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        index = cls(root, np.array(dirs, dtype=bytes), offsets, np.array(frames, np.int32), np.array(segs, bool))
        return index, report

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        with atomic_file(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, format=np.array(INDEX_FORMAT), directories=self.directories, offsets=self.offsets, frames=self.frames, segmaps=self.segmaps)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, root: str | os.PathLike) -> DatasetIndex:
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["format"]) != INDEX_FORMAT:
                    raise DatasetError(f"{path} is not a thead training index ({z['format']})")
                return cls(Path(root), z["directories"], z["offsets"], z["frames"], z["segmaps"])
        except (OSError, KeyError, ValueError) as e:
            raise DatasetError(f"{path} is not a readable thead training index ({e}); delete it to rebuild") from None

    @classmethod
    def load_or_build(cls, root: str | os.PathLike, index_path: str | os.PathLike | None = None, *, rebuild: bool = False) -> tuple[DatasetIndex, IndexReport | None]:
        """The saved index at ``index_path`` (default ``<root>/thead-index.npz``), else a fresh
        walk, saved there when the folder is writable. The report is None for a loaded index."""
        root = Path(root)
        path = Path(index_path) if index_path is not None else root / DEFAULT_INDEX_NAME
        if path.exists() and not rebuild:
            return cls.load(path, root), None
        index, report = cls.build(root)
        if os.access(path.parent, os.W_OK):
            index.save(path)
        return index, report


# -- examples --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """A batch of training examples; images NCHW float32 in [-1, 1].

    shots_rgb, shots_contour [B, K, 3, H, W]; target_rgb, target_contour [B, 3, H, W];
    target_segmap [B, H, W] int64 labels 0..18 (None when not loaded); skipped: files that
    could not be read while assembling this batch (their examples came from other clips).
    """

    shots_rgb: Tensor
    shots_contour: Tensor
    target_rgb: Tensor
    target_contour: Tensor
    target_segmap: Tensor | None
    skipped: tuple[str, ...] = field(default=())

    def to(self, device: torch.device | str, *, channels_last: bool = False) -> Batch:
        """On ``device``; with ``channels_last`` the NCHW images are stored NHWC (same values)."""

        def mv(t):
            if t is None:
                return None
            t = t.to(device, non_blocking=True)
            return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t

        return Batch(mv(self.shots_rgb), mv(self.shots_contour), mv(self.target_rgb), mv(self.target_contour), mv(self.target_segmap), self.skipped)

    def __len__(self) -> int:
        return self.target_rgb.shape[0]


def read_rgb(path: Path, size: int) -> Tensor:
    """A 224x224 RGB PNG -> float32 [3, H, W] in [-1, 1] via ``x·2/255 − 1`` (ref §1.1),
    bit for bit as the release's ``_read_image`` computes it (``to_tensor``)."""
    try:
        with Image.open(path) as im:
            if im.mode != "RGB" or im.size != (size, size):
                raise ValueError(f"{im.mode} {im.size[0]}x{im.size[1]}, expected RGB {size}x{size}")
            a = np.asarray(im)
    except (OSError, ValueError) as e:  # missing, truncated, not an image, wrong size
        raise ValueError(f"{path.name}: {e}") from None
    return to_tensor(a)


def read_segmap(path: Path, size: int) -> Tensor:
    """An 8-bit label PNG -> int64 [H, W] in 0..18."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P") or im.size != (size, size):
                raise ValueError(f"{im.mode} {im.size[0]}x{im.size[1]}, expected 8-bit {size}x{size}")
            a = np.asarray(im)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path.name}: {e}") from None
    if a.max(initial=0) >= NUM_CLASSES:
        raise ValueError(f"{path.name}: label {a.max()} outside 0..{NUM_CLASSES - 1}")
    return torch.from_numpy(a.astype(np.int64))


def example_rng(seed: int, position: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, position]))


class ClipDataset(Dataset):
    """Example at a global stream position: ``dataset[(clip, position)]`` (see the module doc).

    Returns a tuple (shots_rgb [K,3,H,W], shots_contour, target_rgb [3,H,W], target_contour,
    target_segmap [H,W] or None, skipped file names); ``collate`` makes a ``Batch``.
    """

    def __init__(self, index: DatasetIndex, *, num_shots: int, window: int = 10, segmaps: bool = False, seed: int = 0, resolution: int = 224, max_fallbacks: int = 32):
        self.index, self.num_shots, self.window = index, num_shots, window
        self.segmaps, self.seed, self.resolution, self.max_fallbacks = segmaps, seed, resolution, max_fallbacks

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: tuple[int, int]):
        clip_idx, position = item
        rng = example_rng(self.seed, position)
        skipped: list[str] = []
        for _ in range(self.max_fallbacks):
            perm = rng.permutation(min(self.window, int(self.index.num_frames()[clip_idx])))
            try:
                return (*self.load(clip_idx, perm[: self.num_shots], perm[-1]), tuple(skipped))
            except ValueError as e:  # read_rgb / read_segmap name the file
                skipped.append(f"{self.index.directories[clip_idx].decode()}: {e}")
                clip_idx = int(rng.integers(len(self.index)))
        raise DatasetError(f"{self.max_fallbacks} clips in a row could not be read, last: {skipped[-1]}")

    def load(self, clip_idx: int, shots: np.ndarray, target: int):
        """Clip ``clip_idx``'s frames at window positions ``shots`` and ``target`` (no fallback):
        (shots_rgb, shots_contour, target_rgb, target_contour, target_segmap or None)."""
        clip = self.index.clip(clip_idx)
        folder = self.index.root / clip.directory
        window = clip.frames[: self.window]  # the first 10 frames, sorted (ref §1.6)
        size = self.resolution

        def paths(i: int, suffix: str) -> Path:
            return folder / f"{window[i]:05d}{suffix}"

        shots_rgb = torch.stack([read_rgb(paths(i, RGB), size) for i in shots])
        shots_contour = torch.stack([read_rgb(paths(i, CONTOUR), size) for i in shots])
        target_rgb, target_contour = read_rgb(paths(target, RGB), size), read_rgb(paths(target, CONTOUR), size)
        segmap = read_segmap(paths(target, SEGMAP), size) if self.segmaps else None
        return shots_rgb, shots_contour, target_rgb, target_contour, segmap


def collate(items: list[tuple]) -> Batch:
    shots_rgb, shots_contour, target_rgb, target_contour, segmaps, skipped = zip(*items)
    return Batch(
        torch.stack(shots_rgb),
        torch.stack(shots_contour),
        torch.stack(target_rgb),
        torch.stack(target_contour),
        None if segmaps[0] is None else torch.stack(segmaps),
        tuple(s for group in skipped for s in group),
    )


class ExampleSampler(Sampler):
    """Infinite stream of (clip index, position) for one rank, from global step ``start_step``.

    Position p of the global stream is clip ``perm_e[p mod n]`` with e = p div n and perm_e a
    permutation seeded by (seed, e).
    """

    def __init__(self, num_clips: int, *, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, start_position: int = 0):
        if num_clips < 1:
            raise DatasetError("the dataset has no clips")
        self.n, self.b, self.seed = num_clips, batch_size, seed
        self.rank, self.world = rank, world_size
        self.global_batch = batch_size * world_size
        if start_position % self.global_batch:
            raise DatasetError(f"resume position {start_position} is not a multiple of the global batch {self.global_batch}")
        self.start_position = start_position
        self._perm_epoch, self._perm = -1, np.zeros(0, np.int64)

    def clip_at(self, position: int) -> int:
        epoch = position // self.n
        if epoch != self._perm_epoch:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, 0x5EED]))
            self._perm, self._perm_epoch = rng.permutation(self.n), epoch
        return int(self._perm[position % self.n])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        step_start = self.start_position
        while True:
            first = step_start + self.rank * self.b
            for p in range(first, first + self.b):
                yield self.clip_at(p), p
            step_start += self.global_batch
