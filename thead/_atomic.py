"""Outputs that appear complete or not at all.

Write to a temporary sibling (same folder, so the rename is atomic on one file system) and
rename onto the target only when the body finished; any exception, Ctrl-C included, removes the
temporary. A target folder that cannot be written is a one-line ``OutputError``, and so is a
full disk, whether the writer raised ``OSError`` or safetensors' ``SafetensorError``.

A run killed outright (kill -9, power loss) cannot clean up: its temporaries are named
``.NAME.part.PID.XXXXXXXX`` (files keep the target's suffix), and the next atomic write into the
same folder removes those whose process is gone and that are older than this run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from thead.errors import OutputError

_RUN_STARTED = time.time()  # temporaries older than this, of dead processes, are stale
_PART = re.compile(r"^\..+\.part\.(\d+)\.[A-Za-z0-9_]{6,}(\.[^.]+)?$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def sweep_stale_parts(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of dead thead runs in ``folder`` (only names of thead's own
    pattern, only of processes that no longer exist, only older than this run)."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _PART.match(entry.name)
        if m is None or _alive(int(m.group(1))):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime >= _RUN_STARTED:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue  # not ours to fight over (permissions, raced by another sweep)
    return removed


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


def _is_write_error(e: BaseException) -> bool:
    """OSError, or a writer library's own I/O error (safetensors raises ``SafetensorError``,
    not an OSError, on a full disk)."""
    return isinstance(e, OSError) or type(e).__name__ == "SafetensorError"


def _wrap_os_error(e: BaseException, target: Path) -> OutputError:
    text = str(e)
    if getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in text or "os error 28" in text:
        return OutputError(f"disk full while writing {target}; nothing was written")
    return OutputError(f"cannot write {target}: {getattr(e, 'strerror', None) or text}")


def _normal_permissions(folder: Path) -> None:
    """Files written inside a temporary folder get the permissions of any other output
    (some writers create them 0600)."""
    mode = 0o666 & ~_umask()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to ``target``.

    ``suffix`` defaults to the target's own (so encoders that pick a format from the file
    name, like PyAV, still see ``.mp4``).
    """
    target = Path(target)
    parent = _check_parent(target)
    sweep_stale_parts(parent)
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.stem}.part.{os.getpid()}.", suffix=target.suffix if suffix is None else suffix, dir=parent
        )
    except OSError as e:  # os.access can say yes where creating fails (read-only mounts, /sys)
        raise _wrap_os_error(e, target) from e
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        if _is_write_error(e):
            raise _wrap_os_error(e, target) from e
        raise


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``target`` (which must not exist
    unless ``overwrite``)."""
    target = Path(target)
    parent = _check_parent(target)
    if target.exists() and not overwrite:
        raise OutputError(f"{target} already exists (remove it or choose another output)")
    sweep_stale_parts(parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.part.{os.getpid()}.", dir=parent))
    except OSError as e:
        raise _wrap_os_error(e, target) from e
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
    try:
        yield tmp
        _normal_permissions(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if _is_write_error(e):
            raise _wrap_os_error(e, target) from e
        raise
