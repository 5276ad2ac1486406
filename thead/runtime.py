"""Where and how networks run: ``resolve_device`` (the one device choice), process-level
settings for fast CPU rendering applied explicitly (never at import), and ``CompiledOrEager``,
torch.compile with a clean fall-back.

glibc returns every freed block above its mmap threshold to the kernel, so each new activation
tensor (12.8 MB at 224 px x 64 channels) is page-faulted in again: measured here, a ReLU on such
a tensor costs 4.1 ms fresh against 0.6 ms with the threshold raised to its 32 MiB maximum and
trimming deferred. ``tune_cpu_allocator`` does that once per process (glibc only; elsewhere a
no-op), which is what the rendering pipeline and the benchmarks call.

Training allocates far larger blocks (a [4, 64, 224, 224] activation is 51 MB, above the
threshold's 32 MiB cap), so ``tune_cpu_allocator(training=True)`` also serves every block from
the heap (``M_MMAP_MAX`` 0) and keeps up to 2 GiB free at its top: measured on a CPU training
step at batch 4, 2.3 M page faults and 9-10 s of kernel time per step before, none after the
first steps (the heap settles at the step's peak and stays there).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import warnings
from typing import Callable

import torch

from thead.errors import UsageError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``: CUDA when present, else the CPU; otherwise the named device, checked (one
    line, ``UsageError``, for a CUDA device without a GPU or an unknown name)."""
    if isinstance(device, torch.device):
        device = str(device)
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device} asked, but no CUDA GPU is available")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UsageError(f"unknown device {device!r} (cpu, cuda, cuda:N)") from None


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's cap on 64-bit
_TRIM_THRESHOLD = 1024 * 1024 * 1024
_TRAINING_TRIM_THRESHOLD = -1  # never trim (glibc: -1 disables trimming)
_done: set[str] = set()


def tune_cpu_allocator(*, training: bool = False) -> bool:
    """Keep freed activation buffers in the heap for reuse; True when it took effect."""
    mode = "training" if training else "inference"
    if mode in _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    if training:
        ok = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRAINING_TRIM_THRESHOLD))
    else:
        ok = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    if ok:
        _done.add(mode)
    return ok


class CompiledOrEager:
    """``fn`` through ``torch.compile`` (inductor; on the CPU with freezing, so weights are
    constants: oneDNN prepacks them, fuses post-ops into the convolutions, and the instance
    norms, modulations and activations become single C++ loops), falling back to ``fn`` itself
    for good, with one warning, when compiling is unavailable or fails (no C++ compiler, an
    unsupported torch build). Inference only: the compiled graph takes no gradients.
    """

    def __init__(self, fn: Callable, *, freezing: bool = True):
        self.fn = fn
        self.error: str | None = None  # why it fell back, once it has
        try:
            self._compiled = torch.compile(fn, dynamic=False, options={"freezing": freezing})
        except Exception as e:  # torch without dynamo/inductor support on this platform
            self._fall_back(e)

    @property
    def compiled(self) -> bool:
        return self.error is None

    def _fall_back(self, e: Exception) -> None:
        self.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        warnings.warn(f"torch.compile unavailable, rendering eagerly ({self.error})", RuntimeWarning, stacklevel=3)

    def __call__(self, *args, **kwargs):
        if self.error is None:
            try:
                return self._compiled(*args, **kwargs)
            except Exception as e:  # a backend failure (compiler missing, lowering error)...
                out = self.fn(*args, **kwargs)  # ...or bad input, which raises here as well
                self._fall_back(e)
                return out
        return self.fn(*args, **kwargs)
