"""thead.runtime: the training allocator keeps freed activation memory for reuse."""

from __future__ import annotations

import subprocess
import sys

import pytest

# A training step's pattern: a few large activations alive together, all freed, again.
SCRIPT = """
import resource, sys, torch
from thead.runtime import tune_cpu_allocator
if sys.argv[1] == "training":
    assert tune_cpu_allocator(training=True)
sizes = [4 * 64 * 224 * 224, 8 * 64 * 224 * 224, 4 * 128 * 112 * 112, 4 * 64 * 224 * 224, 16 * 32 * 224 * 224]
def step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    activations = [torch.empty(n).fill_(1.0) for n in sizes]
    del activations
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(*[step() for _ in range(6)])
"""


def _faults(mode: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True, timeout=120)
    return [int(v) for v in out.stdout.split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt only")
@pytest.mark.slow
def test_training_allocator_stops_page_faulting_after_warm_up():
    # Blocks above glibc's 32 MiB mmap cap go back to the kernel when freed and are faulted in
    # anew every step (~81,500 pages here); in training mode the heap settles within a few steps.
    # The default run is the control that shows the count sees a step's activations at all.
    default, training = _faults("default"), _faults("training")
    assert training[-1] * 50 < default[-1]


def test_compiled_or_eager_falls_back_once_with_a_warning(monkeypatch):
    import torch

    from thead.runtime import CompiledOrEager

    def broken_compile(fn, **kwargs):
        def run(*a, **k):
            raise RuntimeError("C++ compile error: no compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    calls = []
    f = CompiledOrEager(lambda x: calls.append(x) or x * 2)
    with pytest.warns(RuntimeWarning, match="rendering eagerly .*no compiler"):
        assert f(torch.ones(2)).tolist() == [2.0, 2.0]
    assert not f.compiled and "no compiler" in f.error
    assert f(torch.ones(1)).tolist() == [2.0]  # eager from now on, no second warning
    assert len(calls) == 2


def test_compiled_or_eager_bad_input_raises_and_keeps_compiling(monkeypatch):
    import torch

    from thead.runtime import CompiledOrEager

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)  # "compiled" = fn itself
    f = CompiledOrEager(lambda x: x.view(3))
    with pytest.raises(RuntimeError):
        f(torch.ones(2))
    assert f.compiled and f(torch.ones(3)).shape == (3,)


def test_compiled_or_eager_without_dynamo(monkeypatch):
    import torch

    from thead.runtime import CompiledOrEager

    def no_dynamo(fn, **kwargs):
        raise RuntimeError("Dynamo is not supported on Python 3.14+")

    monkeypatch.setattr(torch, "compile", no_dynamo)
    with pytest.warns(RuntimeWarning, match="Dynamo is not supported"):
        f = CompiledOrEager(lambda x: x + 1)
    assert not f.compiled and f(torch.zeros(1)).item() == 1.0
