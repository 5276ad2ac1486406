"""Reports: Table 1 layout, JSON and CSV with per-person rows, Figure-6 plots, atomic files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from thead.eval.protocol import EvalResult, MetricValues, PersonResult, RunKey, RunResult
from thead.eval.report import METRICS, header, metrics_figure, render_text, write_report


def _result(with_k: bool = True) -> EvalResult:
    runs = []
    for method in ("meta", "ft"):
        for k in (1, 4, 8, 32) if with_k else (None,):
            base = 0.0 if method == "meta" else 1.0
            people = tuple(
                PersonResult(p, 32, MetricValues(psnr=17 + base + (k or 0) / 10 + i, ssim=0.6, idsim=0.88, nmke=0.04))
                for i, p in enumerate(("id00017", "id00061"))
            )
            values = MetricValues(psnr=float("inf") if k == 32 and method == "ft" else 17.5 + base, ssim=0.6,
                                  idsim=0.88, nmke=0.04, fid=45.7 - (k or 0) / 10)
            runs.append(RunResult(RunKey(method, k), 64, values, people))
    return EvalResult("fsth", "weights (sha256 abc)", tuple(runs), ("LPIPS skipped: offline",), "dlib ResNet", "dlib",
                      "eye_centers", ("psnr", "ssim", "idsim", "nmke", "fid"))


def test_table_has_the_paper_layout():
    text = render_text(_result())
    header = next(line for line in text.splitlines() if "PSNR" in line)
    cols = ["method", "K", "PSNR↑", "SSIM↑", "LPIPS↓", "ID-SIM↑", "NMKE↓", "FID↓"]
    assert [header.index(c) for c in cols] == sorted(header.index(c) for c in cols)
    row = next(line for line in text.splitlines() if line.strip("│ ").startswith("ft") and " 32 " in line)
    assert "inf" in row and "—" in row  # PSNR of identical frames; LPIPS not computed
    assert "note: LPIPS skipped: offline" in text


def test_files_are_written(tmp_path):
    files = write_report(_result(), tmp_path / "report")
    data = json.loads(files.json.read_text())
    assert [(r["method"], r["num_shots"]) for r in data["runs"]][:2] == [("meta", 1), ("meta", 4)]
    assert data["runs"][-1]["mean"]["psnr"] == "inf" and data["runs"][0]["mean"]["lpips"] is None
    assert [p["person"] for p in data["runs"][0]["people"]] == ["id00017", "id00061"]
    rows = list(csv.reader(files.csv.open()))
    assert rows[0] == ["method", "num_shots", "person", "num_frames", "psnr", "ssim", "lpips", "idsim", "nmke", "fid"]
    assert len(rows) == 1 + 8 * 3 and rows[1][:4] == ["meta", "1", "all", "64"] and rows[2][2] == "id00017"
    with Image.open(files.plot) as im:
        assert im.size == (1200, 700)
        assert np.asarray(im.convert("L")).std() > 0  # not a blank canvas
    assert files.table.read_text().startswith(" ")
    assert not [p for p in (tmp_path / "report").iterdir() if p.name.startswith(".")]  # no temporaries left


def test_runs_without_k_have_no_plot(tmp_path):
    files = write_report(_result(with_k=False), tmp_path)
    assert files.plot is None and not (tmp_path / "metrics_vs_shots.png").exists()
    assert files.csv.read_text().splitlines()[1].startswith("meta,,all,64")


def test_plot_shows_each_metric_against_k():
    result = _result()
    fig = metrics_figure(result)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == [header(name) for name in METRICS]
    for ax, name in zip(axes, METRICS):
        lines = {line.get_label(): line for line in ax.get_lines()}
        for method in ("meta", "ft"):
            expected = [(r.run.num_shots, getattr(r.values, name)) for r in result.runs if r.run.method == method]
            expected = [(k, v) for k, v in expected if v is not None and np.isfinite(v)]
            if not expected:  # LPIPS was not computed: no line, a note instead
                assert method not in lines
                continue
            line = lines[method]
            assert list(line.get_xdata()) == [k for k, _ in expected]
            assert list(line.get_ydata()) == pytest.approx([v for _, v in expected])
            assert line.get_linestyle() == ("--" if method == "meta" else "-")
        if not lines:
            assert [t.get_text() for t in ax.texts] == ["not computed"]
    assert metrics_figure(_result(with_k=False)) is None
