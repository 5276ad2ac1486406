"""Outputs that appear complete or not at all.

Write to a temporary sibling (same folder, so the rename is atomic on one file system) and
rename onto the target only when the body finished; any exception, Ctrl-C included, removes the
temporary. A target folder that cannot be written is a one-line ``OutputError``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from thead.errors import OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_parent(target: Path) -> Path:
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.exists():
        raise OutputError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {parent} is not writable")
    return parent


def _wrap_os_error(e: OSError, target: Path) -> OutputError:
    if e.errno == errno.ENOSPC:
        return OutputError(f"disk full while writing {target}; nothing was written")
    return OutputError(f"cannot write {target}: {e.strerror or e}")


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to ``target``.

    ``suffix`` defaults to the target's own (so encoders that pick a format from the file
    name, like PyAV, still see ``.mp4``).
    """
    target = Path(target)
    parent = _check_parent(target)
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.stem}.part.", suffix=target.suffix if suffix is None else suffix, dir=parent
        )
    except OSError as e:  # os.access can say yes where creating fails (read-only mounts, /sys)
        raise _wrap_os_error(e, target) from e
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        raise _wrap_os_error(e, target) from e
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``target`` (which must not exist
    unless ``overwrite``)."""
    target = Path(target)
    parent = _check_parent(target)
    if target.exists() and not overwrite:
        raise OutputError(f"{target} already exists (remove it or choose another output)")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=parent))
    except OSError as e:
        raise _wrap_os_error(e, target) from e
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _wrap_os_error(e, target) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
