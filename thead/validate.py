"""Checks at thead's boundaries, before any work: outputs that would destroy a user's file,
sizes read from files or options that would allocate without bound, values that are not what
their file says they are. Each failure is one ``TheadError`` line naming the file.
"""

from __future__ import annotations

import math
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from thead.errors import OutputError, TheadError, UsageError

if TYPE_CHECKING:
    from thead.avatar import Avatar

MIN_IMAGE_SIDE = 16  # images and video frames: the face detectors fail on tinier ones


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def refuse_same_file(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """An output that is one of the inputs (by inode: links and other spellings included) would
    replace the input it is read from: refused."""
    output = Path(output)
    for source in inputs:
        if source is not None and not isinstance(source, (str, os.PathLike)):
            continue  # not a file (a MotionTemplate in memory, ...)
        if source is not None and _same_file(output, Path(source)):
            raise UsageError(f"output {output} is the input {source}; choose another output name")


def refuse_existing(output: str | os.PathLike, overwrite: bool, flag: str = "--overwrite") -> None:
    """An existing output is replaced only when the user said so."""
    output = Path(output)
    if not overwrite and (output.exists() or output.is_symlink()):
        raise UsageError(f"{output} already exists (use {flag} to replace it)")


def check_new_output(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), *, overwrite: bool = False) -> None:
    """Both checks: never an input, never an existing file without ``overwrite``."""
    refuse_same_file(output, inputs)
    refuse_existing(output, overwrite)


def check_input_file(path: str | os.PathLike, what: str) -> Path:
    """An input that is a FIFO, a socket or a device would block or never end: refused (a
    missing path is left to the reader, which says so)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError:
        return path
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UsageError(f"{what} {path} is not a regular file (a pipe, socket or device cannot be read twice or seeked)")
    return path


def check_range(value: float, name: str, low: float, high: float, error: type[TheadError] = UsageError) -> float:
    """A number from an option or a file within [low, high] (and finite)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise error(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return value


def recorded_weights(avatar: Avatar) -> str | None:
    """The weights an avatar records it was enrolled with, when they can still be found there
    (a folder that exists, or a Hub repo id ``owner/name[@revision]``); None (the default
    weights) otherwise, e.g. a folder that has moved."""
    spec = avatar.info.weights
    if not spec:
        return None
    if Path(spec).is_dir():
        return spec
    looks_like_repo = spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not Path(spec).exists()
    return spec if looks_like_repo else None


MAX_ARRAY_BYTES = 256 << 20  # one array of a motion template: ~500k frames of 68 landmarks


def check_npz_sizes(npz, where: str | os.PathLike, max_bytes: int = MAX_ARRAY_BYTES, error: type[TheadError] = TheadError) -> None:
    """Every member of an opened ``.npz`` (``np.load``'s NpzFile) decompresses to at most
    ``max_bytes``, read from the zip directory before anything is inflated."""
    for info in npz.zip.infolist():
        if info.file_size > max_bytes:
            raise error(f"{where}: {info.filename} would inflate to {info.file_size / 2**20:.0f} MiB "
                             f"(at most {max_bytes >> 20} MiB); not a template thead wrote")


SAME_PERSON_DISTANCE = 0.6  # dlib's face descriptors: the same person below this distance


def people_in_shots(crops: list, landmarks: list) -> list[int]:
    """A person label per shot (0, 1, ...), grouping shots whose dlib face descriptors are
    within ``SAME_PERSON_DISTANCE`` of a group's first shot."""
    import numpy as np

    from thead.eval.idsim import DlibEmbedder

    descriptors = DlibEmbedder().embed(list(crops), list(landmarks))
    firsts: list[np.ndarray] = []
    labels = []
    for d in descriptors:
        near = [i for i, f in enumerate(firsts) if np.linalg.norm(d - f) < SAME_PERSON_DISTANCE]
        if not near:
            firsts.append(d)
        labels.append(near[0] if near else len(firsts) - 1)
    return labels


def check_one_person(shots: list, *, refuse: bool, on_note) -> None:
    """Enrolment shots of several people give an avatar that looks like none of them: a note
    naming where each person is, or (``refuse``) an error."""
    if len(shots) < 2:
        return
    labels = people_in_shots([s.crop.image for s in shots], [s.landmarks for s in shots])
    n = max(labels) + 1
    if n == 1:
        return
    where = "; ".join(f"person {p + 1}: {', '.join(Path(s.where).name for s, l in zip(shots, labels) if l == p)}" for p in range(n))
    if refuse:
        from thead.errors import AvatarError

        raise AvatarError(f"the shots show {n} different people ({where}); enroll one person at a time")
    on_note(f"the shots seem to show {n} different people ({where}); the avatar will mix them (--one-person refuses this)")


VIDEO_OUTPUT_SUFFIXES = (".mp4", ".mov", ".mkv")
IMAGE_OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg")


def check_output(output: Path, driver_kind: str) -> None:
    """Fail before any work when ``output`` cannot be written: wrong suffix for the driver, a
    folder, a missing or unwritable parent folder (probed by creating a file there, which also
    catches read-only mounts and root in /sys)."""
    is_image = driver_kind == "photo"
    allowed = IMAGE_OUTPUT_SUFFIXES if is_image else VIDEO_OUTPUT_SUFFIXES
    if output.suffix.lower() not in allowed:
        what = "a photo driver gives an image" if is_image else f"a {driver_kind} driver gives a video"
        raise UsageError(f"{what}: name the output {' or '.join(allowed)}, got {output.name}")
    if output.is_dir():
        raise UsageError(f"output {output} is a folder; give a file name")
    parent = output.parent
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{output.stem}.probe.", dir=parent)
    except OSError as e:
        raise OutputError(f"output folder {parent} is not writable ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)
