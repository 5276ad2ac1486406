"""Checks at thead's boundaries, before any work: outputs that would destroy a user's file,
sizes read from files or options that would allocate without bound, values that are not what
their file says they are. Each failure is one ``TheadError`` line naming the file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

from thead.errors import UsageError


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


def check_range(value: float, name: str, low: float, high: float) -> float:
    """A number from an option or a file within [low, high] (and finite)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise UsageError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return value


def recorded_weights(avatar) -> str | None:
    """The weights an avatar records it was enrolled with, when they can still be found there
    (a folder that exists, or a Hub repo id); None (the default weights) otherwise."""
    spec = avatar.info.weights
    if not spec:
        return None
    if Path(spec).is_dir():
        return spec
    looks_like_repo = spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and os.sep not in spec.replace("/", "")
    return spec if looks_like_repo and not Path(spec.split("@")[0]).exists() else None
