"""Fused CPU kernels, built from C on first use: instance norm + modulation + leaky ReLU.

Every convolution of G^l and G^s is preceded by ``act(IN(x)·g + b)`` (SPADE: g, b per pixel;
AdaIN: per channel; the encoder: neither). Eager PyTorch spends five passes over memory on it
(batch-norm statistics, normalisation, addcmul, leaky ReLU, and SPADE's shortcut product);
``instance_norm.c`` does it in two (the statistics, then one pass that writes the result), in
float32 arithmetic for float32 and bfloat16 tensors alike (one rounding to bfloat16 at the end).

``load()`` compiles ``instance_norm.c`` with the C compiler found at run time (``$CC``, else
``cc``/``gcc``/``clang``; ``-O3 -march=native -fopenmp``) into the cache root
(``thead.download.cache_root()/kernels``; about a second, once per source, compiler and CPU) and
loads it with ctypes. Without a compiler, or with ``THEAD_FUSED_KERNELS=0``, it raises
``KernelsUnavailable`` with one line saying why; the networks then run their eager path, which
gives the same results to float rounding. OpenMP resolves to the runtime torch already loaded
(same soname), so the kernels share torch's threads (``torch.get_num_threads()``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("instance_norm.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared")
ENV_SWITCH = "THEAD_FUSED_KERNELS"  # 0/false/no/off: never build or use them
_DTYPES = {torch.float32: 0, torch.bfloat16: 1}

Stats = tuple[Tensor, Tensor]  # per sample and channel: mean, 1/sqrt(var + eps) [N, C] float32


class KernelsUnavailable(RuntimeError):
    """The fused kernels cannot be built or loaded here (one line: why)."""


class InstanceNormKernels:
    """The loaded library: ``stats`` and ``modulate`` on channels-last CPU tensors (float32 or
    bfloat16), inference only. ``supports(x)`` says whether a tensor can take this path."""

    def __init__(self, library: ctypes.CDLL, path: Path):
        self.path = path
        self._stats = library.thead_in_stats
        self._stats.restype = ctypes.c_int
        self._stats.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                ctypes.c_double, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        self._modulate = library.thead_modulate
        self._modulate.restype = ctypes.c_int
        operands = [ctypes.c_void_p, ctypes.c_void_p,  # mean, rstd
                    ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,  # g and its sample, pixel strides
                    ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,  # b likewise
                    ctypes.c_float, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]  # slope, act, out, threads
        self._modulate.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, *operands]
        self._up_stats = library.thead_up_stats
        self._up_stats.restype = ctypes.c_int
        self._up_stats.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                   ctypes.c_int64, ctypes.c_double, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        self._up_modulate = library.thead_up_modulate
        self._up_modulate.restype = ctypes.c_int
        self._up_modulate.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                      ctypes.c_int64, *operands]

    def __deepcopy__(self, memo: dict) -> InstanceNormKernels:
        return self  # a loaded library: shared, never copied

    @staticmethod
    def supports(x: Tensor) -> bool:
        return (x.device.type == "cpu" and x.dtype in _DTYPES and x.dim() == 4 and x.numel() > 0
                and x.is_contiguous(memory_format=torch.channels_last) and not (torch.is_grad_enabled() and x.requires_grad))

    def stats(self, x: Tensor, eps: float, *, upsample: bool = False) -> Stats:
        """Per sample and channel mean and 1/sqrt(biased variance + eps) of ``x`` [N, C, H, W],
        or with ``upsample`` of its bilinear x2 upsampling (never written out)."""
        self._check(x)
        n, c, h, w = x.shape
        mean = torch.empty(n, c, dtype=torch.float32)
        rstd = torch.empty(n, c, dtype=torch.float32)
        if upsample:
            self._up_stats(x.data_ptr(), _DTYPES[x.dtype], n, h, w, c, eps, mean.data_ptr(), rstd.data_ptr(),
                           torch.get_num_threads())
        else:
            self._stats(x.data_ptr(), _DTYPES[x.dtype], n, h * w, c, eps, mean.data_ptr(), rstd.data_ptr(),
                        torch.get_num_threads())
        return mean, rstd

    def modulate(self, x: Tensor, stats: Stats, gamma: Tensor | None = None, beta: Tensor | None = None,
                 slope: float | None = None, *, upsample: bool = False) -> Tensor:
        """``(x - mean) · rstd · gamma + beta``, then leaky ReLU with ``slope`` (None: none), in
        ``x``'s dtype and channels-last memory; with ``upsample``, of x's bilinear x2 upsampling
        (``stats`` are then the upsampled tensor's, the output twice x's height and width).
        gamma/beta: [N or 1, C, H, W] of the output's size (a channel slice of a wider
        channels-last tensor is read in place), [N or 1, C] (per channel) or None."""
        self._check(x)
        n, c, h, w = x.shape
        mean, rstd = stats
        if any(t.shape != (n, c) or t.dtype != torch.float32 or not t.is_contiguous() for t in (mean, rstd)):
            raise ValueError(f"statistics of shape {tuple(mean.shape)} for an input of shape {tuple(x.shape)} "
                             "(want stats() of it: contiguous float32 [N, C])")
        out = torch.empty((n, c, 2 * h, 2 * w) if upsample else (n, c, h, w), dtype=x.dtype,
                          memory_format=torch.channels_last)
        g, gn, gp = self._operand(gamma, out)
        b, bn, bp = self._operand(beta, out)
        args = (mean.data_ptr(), rstd.data_ptr(), 0 if g is None else g.data_ptr(), gn, gp,
                0 if b is None else b.data_ptr(), bn, bp, 0.0 if slope is None else slope, slope is not None,
                out.data_ptr(), torch.get_num_threads())
        if upsample:
            self._up_modulate(x.data_ptr(), _DTYPES[x.dtype], n, h, w, c, *args)
        else:
            self._modulate(x.data_ptr(), _DTYPES[x.dtype], n, h * w, c, *args)
        return out

    def _check(self, x: Tensor) -> None:
        if not self.supports(x):
            raise ValueError(f"fused kernels take 4-D channels-last float32/bfloat16 CPU tensors, not {x.dtype} "
                             f"{tuple(x.shape)} with strides {x.stride()}")

    @staticmethod
    def _operand(t: Tensor | None, x: Tensor) -> tuple[Tensor | None, int, int]:
        """t in x's dtype with channel stride 1, and its sample and pixel strides (0: broadcast)."""
        if t is None:
            return None, 0, 0
        n, c, h, w = x.shape
        if t.shape[0] not in (1, n) or t.shape[1] != c or (t.dim() == 4 and tuple(t.shape[2:]) != (h, w)) \
                or t.dim() not in (2, 4):
            raise ValueError(f"modulation of shape {tuple(t.shape)} for an input of shape {tuple(x.shape)}")
        t = t.detach()
        if t.dtype != x.dtype or t.device.type != "cpu":
            t = t.to("cpu", x.dtype)
        if t.dim() == 2:
            t = t.contiguous()
            return t, (t.stride(0) if t.shape[0] > 1 else 0), 0
        # pixels must be evenly spaced: row p's channels start at p · stride(3)
        if t.stride(1) != 1 or t.stride(2) != t.stride(3) * w:
            t = t.contiguous(memory_format=torch.channels_last)
        return t, (t.stride(0) if t.shape[0] > 1 else 0), t.stride(3)


def _compiler() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and (path := shutil.which(name)):
            return path
    raise KernelsUnavailable("no C compiler found (set $CC, or install gcc)")


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load(cache: str | os.PathLike | None = None) -> InstanceNormKernels:
    """Build (once) and load the fused kernels; ``KernelsUnavailable`` with the reason when not."""
    if os.environ.get(ENV_SWITCH, "").strip().lower() in ("0", "false", "no", "off"):
        raise KernelsUnavailable(f"turned off by ${ENV_SWITCH}")
    if cache is None:
        from thead.download import cache_root

        cache = cache_root() / "kernels"
    cc = _compiler()
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, cc.encode(), " ".join(FLAGS).encode(), _cpu_flags().encode(),
                                     platform.machine().encode()])).hexdigest()[:16]
    target = Path(cache) / f"instance_norm-{key}.so"
    if not target.exists():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".instance_norm-", suffix=".so", dir=target.parent)
            os.close(fd)
        except OSError as e:
            raise KernelsUnavailable(f"cannot write to {target.parent}: {e.strerror or e}") from None
        try:
            done = subprocess.run([cc, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                first = next((ln for ln in done.stderr.splitlines() if "error" in ln), done.stderr.strip()[:200])
                raise KernelsUnavailable(f"{Path(cc).name} could not build {SOURCE.name}: {first}")
            os.replace(tmp, target)  # complete or absent: never a half-written library
        except (OSError, subprocess.SubprocessError) as e:
            raise KernelsUnavailable(f"building {SOURCE.name} failed: {e}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    try:
        return InstanceNormKernels(ctypes.CDLL(str(target)), target)
    except (OSError, AttributeError) as e:
        raise KernelsUnavailable(f"cannot load {target}: {e}") from None
