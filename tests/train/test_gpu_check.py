"""benchmarks/gpu_check.py in its CPU smoke mode: every check runs and the table is printed, so
the script is not dead code on the day a GPU appears (its CUDA numbers need a GPU)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_gpu_check_smoke_mode_runs_every_check(sample_dir, capsys, monkeypatch):
    monkeypatch.setenv("THEAD_SHARED", str(sample_dir.parents[1]))
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)
    spec.loader.exec_module(gpu_check)
    code = gpu_check.main(["--smoke"])
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| check")]
    assert code == 0, table
    assert [r.split("|")[1].strip() for r in rows] == ["render"] * 4 + ["train step (stage B)", "DDP train step", "thead finetune"]
    assert all(r.rstrip(" |").endswith("yes") for r in rows), table
    assert "G side: DistributedDataParallel" in table and "gloo" in table
    assert "frames/s" in table and "s/step" in table and "K=4, 2 steps" in table
